"""The operator's own Prometheus metrics (``obflow operator run --metrics-port``)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RECONCILES = Counter("obflow_operator_reconciles", "Reconciles of DataPipelines, by result", ["result"])
RECONCILE_SECONDS = Histogram(
    "obflow_operator_reconcile_seconds",
    "Time to reconcile a DataPipeline",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
ERRORS = Counter("obflow_operator_errors", "Reconcile and observe errors, by kind", ["kind"])
PIPELINES = Gauge("obflow_operator_pipelines", "DataPipelines by phase", ["phase"])

_phases: dict[str, str] = {}


def record_phase(key: str, phase: str | None) -> None:
    """Remember ``key``'s phase (None: it is gone) and refresh the pipelines-by-phase gauge."""
    if phase is None:
        _phases.pop(key, None)
    else:
        _phases[key] = phase
    counts: dict[str, int] = {}
    for value in _phases.values():
        counts[value] = counts.get(value, 0) + 1
    for label in {*counts, *(s.labels.get("phase", "") for m in PIPELINES.collect() for s in m.samples)}:
        PIPELINES.labels(phase=label).set(counts.get(label, 0))
