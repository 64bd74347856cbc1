"""Every spec field classified once: what a change to it asks the operator to do.

After the Flink Kubernetes Operator's ``@SpecDiff``: one table decides whether a change is nothing for
the running job, a rescale, a job upgrade (through a savepoint) or a rolling update of the capture
agent. The table is keyed by camelCase field paths; the most specific entry wins, and a test proves
that every field of the spec model resolves to exactly one entry and that no entry is unused.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from obflow_operator.spec import DataPipelineSpec


class Change(StrEnum):
    OPERATOR_ONLY = "operator-only"  # read by the operator alone (autoscaler, alerts, deletion)
    JOBMANAGERS = "jobmanagers"  # JobManager count: the standby set changes, the job does not
    RESCALE = "rescale"  # the job's parallelism or the TaskManagers' bounds
    UPGRADE = "upgrade"  # the job or the Flink cluster reads it: savepoint → redeploy → restore
    CAPTURE = "capture"  # the capture agent reads it: a rolling update (Recreate) of the agent
    SUSPEND = "suspend"


J, C = Change.UPGRADE, Change.CAPTURE

CLASSIFICATION: dict[str, frozenset[Change]] = {
    "source": frozenset({C}),
    "source.engine": frozenset({C, J}),  # the job reads engine, mode, database and tables to map rows
    "source.mode": frozenset({C, J}),
    "source.database": frozenset({C, J}),
    "source.tables": frozenset({C, J}),  # the capture alone when only tables without columns change (below)
    "capture": frozenset({C}),
    "datahub": frozenset({C, J}),
    "flink": frozenset({J}),
    "flink.parallelism": frozenset({Change.RESCALE}),
    "flink.taskManager.minReplicas": frozenset({Change.RESCALE}),
    "flink.taskManager.maxReplicas": frozenset({Change.RESCALE}),
    "flink.jobManager.replicas": frozenset({Change.JOBMANAGERS}),
    "flink.rolloutTimeout": frozenset({Change.OPERATOR_ONLY}),
    "flink.savepoint": frozenset({Change.OPERATOR_ONLY}),
    "storage": frozenset({C, J}),
    "output": frozenset({J}),
    "autoscaler": frozenset({Change.OPERATOR_ONLY}),
    "alerts": frozenset({Change.OPERATOR_ONLY}),
    "deletion": frozenset({Change.OPERATOR_ONLY}),
    "podTemplate": frozenset({C, J}),
    "imagePullPolicy": frozenset({C, J}),
    "logLevel": frozenset({C, J}),
    "suspend": frozenset({Change.SUSPEND}),
}


def entry_for(path: str) -> str:
    """The most specific table entry covering ``path`` (``flink.checkpoint.interval`` → ``flink``)."""
    parts = path.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in CLASSIFICATION:
            return candidate
    raise KeyError(f"spec field {path} is not classified in obflow_operator.changes.CLASSIFICATION")


def changed_fields(old: DataPipelineSpec, new: DataPipelineSpec) -> list[str]:
    """Dotted camelCase paths of every value that differs (a list counts as one value; a free-form map's
    keys extend the path, which the table's prefixes cover)."""
    return sorted(_diff(old.model_dump(by_alias=True, mode="json"), new.model_dump(by_alias=True, mode="json")))


def _diff(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        paths: list[str] = []
        for key in old.keys() | new.keys():
            paths += _diff(old.get(key), new.get(key), f"{prefix}{key}.")
        return paths
    return [] if old == new else [prefix.rstrip(".")]


def classify(old: DataPipelineSpec, new: DataPipelineSpec) -> dict[str, frozenset[Change]]:
    """What each changed field asks for."""
    classified = {path: CLASSIFICATION[entry_for(path)] for path in changed_fields(old, new)}
    if "source.tables" in classified and _typed_tables(old) == _typed_tables(new):
        # the job reads only the tables with configured columns and follows the others' shape from their
        # changes (flink_job.mapping): a table without columns added or removed restarts the capture alone
        classified["source.tables"] = frozenset({C})
    return classified


def _typed_tables(spec: DataPipelineSpec) -> list[dict[str, Any]]:
    return [table.model_dump(mode="json") for table in spec.source.tables if table.columns]


def required_actions(old: DataPipelineSpec, new: DataPipelineSpec) -> frozenset[Change]:
    """Everything the change asks for; empty: nothing changed."""
    actions: set[Change] = set()
    for kinds in classify(old, new).values():
        actions |= kinds
    return frozenset(actions)
