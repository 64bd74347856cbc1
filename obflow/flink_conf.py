"""Flink settings that both the job's runner (its mini-cluster or ``flink run``) and the operator (the
cluster's configuration) write: built once here, in Flink's own keys."""

from __future__ import annotations

RESTART_MAX_DELAY_S = 120.0
RESTART_RESET_AFTER = "10 min"


def restart_strategy(attempts: int, delay_s: float) -> dict[str, str]:
    """Restarts from the latest checkpoint with a back-off from ``delay_s`` doubling (±10 %) up to 2
    minutes; the job fails for good after ``attempts`` restarts in a row, and a job that then runs 10
    minutes without failing counts afresh. Flink's fixed-delay strategy would count every restart of
    the job's life: a month's tenth lost TaskManager would fail the pipeline for good."""
    return {
        "restart-strategy.type": "exponential-delay",
        "restart-strategy.exponential-delay.initial-backoff": f"{round(delay_s * 1000)} ms",
        "restart-strategy.exponential-delay.max-backoff": f"{round(max(delay_s, RESTART_MAX_DELAY_S) * 1000)} ms",
        "restart-strategy.exponential-delay.backoff-multiplier": "2.0",
        "restart-strategy.exponential-delay.jitter-factor": "0.1",
        "restart-strategy.exponential-delay.reset-backoff-threshold": RESTART_RESET_AFTER,
        "restart-strategy.exponential-delay.attempts-before-reset-backoff": str(attempts),
    }


def checkpointing(checkpoints: str, savepoints: str, retained: int, backend: str) -> dict[str, str]:
    """Where checkpoints and savepoints go (URIs), how many completed checkpoints are kept, and the state
    backend. Checkpoints outlive a cancelled job: the operator's rollback and a restart after a cancel
    restore from them."""
    return {
        "execution.checkpointing.dir": checkpoints,
        "execution.checkpointing.savepoint-dir": savepoints,
        "execution.checkpointing.num-retained": str(retained),
        "execution.checkpointing.externalized-checkpoint-retention": "RETAIN_ON_CANCELLATION",
        "state.backend.type": backend,
    }


def prometheus_reporter(port: str) -> dict[str, str]:
    """Flink's Prometheus reporter on ``port`` (a port, or a range where several Flink processes share a
    host: each takes the next free one)."""
    return {
        "metrics.reporter.prom.factory.class": "org.apache.flink.metrics.prometheus.PrometheusReporterFactory",
        "metrics.reporter.prom.port": port,
    }
