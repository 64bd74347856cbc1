"""The metric names our components really export, for checking dashboards and alert rules against.

Two sources, neither typed by hand:
- every ``obflow_*`` family the components register with prometheus_client (the modules are imported
  and the registry is asked, so a renamed metric breaks the dashboards' test at once);
- the ``flink_*`` names recorded in ``flink_metric_names.txt`` from a real job's Prometheus reporter
  by ``tests/flink/test_job.py``, which fails when one of them is no longer exported (regenerate the
  file with ``UPDATE_GOLDEN=1`` there after an intended change).
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Iterable
from pathlib import Path

FLINK_METRIC_NAMES = Path(__file__).parents[1] / "observability" / "flink_metric_names.txt"
COMPONENT_MODULES = (
    "capture_agent.agent",
    "capture_agent.db",
    "obflow.datahub.producer",
    "obflow_operator.metrics",
)
SAMPLE_SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum"),
    "summary": ("_count", "_sum"),
}
# exported by prometheus_client's default collectors in every component process (Linux)
PROCESS_METRICS = {"process_start_time_seconds", "process_resident_memory_bytes", "process_cpu_seconds_total"}
# Prometheus itself: the target scrape status
SCRAPE_METRICS = {"up"}


def component_metric_names() -> set[str]:
    from prometheus_client import REGISTRY

    for module in COMPONENT_MODULES:
        importlib.import_module(module)
    names: set[str] = set()
    for family in REGISTRY.collect():  # a labelled family has no samples until first used: go by its type
        if family.name.startswith("obflow_"):
            names.update(family.name + suffix for suffix in SAMPLE_SUFFIXES[family.type])
    return names


def flink_metric_names() -> set[str]:
    return {line.strip() for line in FLINK_METRIC_NAMES.read_text().splitlines() if line.strip()}


def exported_metric_names() -> set[str]:
    return component_metric_names() | flink_metric_names() | PROCESS_METRICS | SCRAPE_METRICS


def check_recorded_flink_metrics(scraped: Iterable[str]) -> None:
    """Called with the names a real job exported: every recorded name must still be among them."""
    flink = {name for name in scraped if name.startswith("flink_")}
    if os.environ.get("UPDATE_GOLDEN"):
        FLINK_METRIC_NAMES.write_text("".join(f"{name}\n" for name in sorted(flink)))
    missing = flink_metric_names() - flink
    assert not missing, f"no longer exported by Flink: {sorted(missing)}; if intended: UPDATE_GOLDEN=1"


PROMQL_WORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset",
    "inf", "nan",
}  # fmt: skip
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_GROUPINGS = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_SELECTORS_AND_RANGES = re.compile(r"\{[^}]*\}|\[[^\]]*\]")
_IDENTIFIER = re.compile(r"(?<![\w.])([a-zA-Z_:][\w:]*)(?!\w)\s*(\()?")


def metric_names_in(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (functions, keywords, labels and durations left out)."""
    text = _SELECTORS_AND_RANGES.sub(" ", _GROUPINGS.sub(" ", _STRINGS.sub(" ", expr)))
    names = set()
    for match in _IDENTIFIER.finditer(text):
        name, call = match.groups()
        if not call and name.lower() not in PROMQL_WORDS:
            names.add(name)
    return names
