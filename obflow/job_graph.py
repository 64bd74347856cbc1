"""Names in the Flink job's graph that other components look for in Flink's REST API: the operator
reads the reading stage's metrics (autoscaler, lag) and keeps the single-subtask ticker at
parallelism 1 when it rescales the job in place."""

from __future__ import annotations

TICKS_TABLE = "obflow_ticks"
TICKS_TO_READERS = f"{TICKS_TABLE}: to every reader"
POLLER_NAME = "DataHub shards: read, drop copies, write files"
METRIC_GROUP = "obflow"

# vertices that must keep running one subtask whatever the job's parallelism
SINGLE_SUBTASK_MARKS = (TICKS_TABLE,)


def is_single_subtask(vertex_name: str) -> bool:
    return any(mark in vertex_name for mark in SINGLE_SUBTASK_MARKS)


def is_reading_stage(vertex_name: str) -> bool:
    # Flink names a vertex after its chained operators; a custom partitioner puts its own before ours
    return POLLER_NAME in vertex_name
