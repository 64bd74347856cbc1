"""The operator's own Prometheus metrics (``obflow operator run --metrics-port``)."""

from __future__ import annotations

import collections

from prometheus_client import Counter, Gauge, Histogram

RECONCILES = Counter("obflow_operator_reconciles", "Reconciles of DataPipelines, by result", ["result"])
RECONCILE_SECONDS = Histogram(
    "obflow_operator_reconcile_seconds",
    "Time to reconcile a DataPipeline",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
ERRORS = Counter("obflow_operator_errors", "Reconcile and observe errors, by kind", ["kind"])
AUTOSCALER_RESCALES = Counter("obflow_operator_autoscaler_rescales", "Autoscaler rescales, by direction", ["direction"])
LOAD = Gauge("obflow_operator_pipeline_load", "Busy ratio of a pipeline's reading stage, 0..1", ["pipeline"])
HIGH_LOAD = Gauge(
    "obflow_operator_pipeline_high_load", "1 while a pipeline's load is above its spec.alerts.load (R5.6)", ["pipeline"]
)
PIPELINES = Gauge("obflow_operator_pipelines", "DataPipelines by phase", ["phase"])
PIPELINE_PHASE = Gauge(
    "obflow_operator_pipeline_phase", "1 for the phase a pipeline is in (one series each)", ["pipeline", "phase"]
)

_phases: dict[str, str] = {}  # pipeline -> its phase
_exported: set[str] = set()  # every phase the gauge has a series for; an emptied one goes to 0


def record_phase(key: str, phase: str | None) -> None:
    """Remember ``key``'s phase (None: it is gone) and refresh the phase gauges."""
    previous = _phases.pop(key, None)
    if previous is not None and previous != phase:
        PIPELINE_PHASE.remove(key, previous)
    if phase is not None:
        _phases[key] = phase
        PIPELINE_PHASE.labels(pipeline=key, phase=phase).set(1)
    counts = collections.Counter(_phases.values())
    _exported.update(counts)
    for label in _exported:
        PIPELINES.labels(phase=label).set(counts[label])


def record_load(key: str, busy_ratio: float, high: bool) -> None:
    LOAD.labels(pipeline=key).set(busy_ratio)
    HIGH_LOAD.labels(pipeline=key).set(1 if high else 0)
