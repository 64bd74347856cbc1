"""Names in the Flink job's graph that other components look for in Flink's REST API: the operator
reads the reading stage's metrics (autoscaler, lag) and keeps the single-subtask ticker at
parallelism 1 when it rescales the job in place."""

from __future__ import annotations

TICKS_TABLE = "obflow_ticks"
FAN_OUT_NAME = "ticks: every shard"
POLLER_NAME = "DataHub shards: poll, drop duplicates"
METRIC_GROUP = "obflow"

# vertices that must keep running one subtask whatever the job's parallelism
SINGLE_SUBTASK_MARKS = (TICKS_TABLE, FAN_OUT_NAME)


def is_single_subtask(vertex_name: str) -> bool:
    return any(mark in vertex_name for mark in SINGLE_SUBTASK_MARKS)


def is_reading_stage(vertex_name: str) -> bool:
    return vertex_name.startswith(POLLER_NAME)
