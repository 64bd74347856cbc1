"""The ``DataPipeline`` status and its lifecycle state machine.

Every phase and every allowed transition is named here (after lyft/flinkk8soperator's state machine);
every phase change goes through ``Outcome.move`` (obflow_operator.outcome), which asks
:func:`check_transition`; a move the table does not allow is a bug that raises rather than a status
that silently lies.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel


class Phase(StrEnum):
    PENDING = "Pending"  # accepted, nothing applied yet
    DEPLOYING = "Deploying"  # children applied, waiting for the JobManager and the job
    RUNNING = "Running"  # the job is RUNNING
    RESCALING = "Rescaling"  # a parallelism change is being rolled out (savepoint or in place)
    UPGRADING = "Upgrading"  # a job change is being rolled out
    SUSPENDING = "Suspending"  # stopping with a savepoint before scaling to zero
    SUSPENDED = "Suspended"  # scaled to zero; resumes from the savepoint
    FAILED = "Failed"  # invalid spec or the job failed for good; the message says why
    DELETING = "Deleting"  # the final savepoint is being taken


TRANSITIONS: dict[Phase, frozenset[Phase]] = {
    Phase.PENDING: frozenset({Phase.DEPLOYING, Phase.SUSPENDED, Phase.FAILED, Phase.DELETING}),
    Phase.DEPLOYING: frozenset({Phase.RUNNING, Phase.SUSPENDING, Phase.SUSPENDED, Phase.FAILED, Phase.DELETING}),
    Phase.RUNNING: frozenset(
        {Phase.DEPLOYING, Phase.RESCALING, Phase.UPGRADING, Phase.SUSPENDING, Phase.FAILED, Phase.DELETING}
    ),
    Phase.RESCALING: frozenset({Phase.DEPLOYING, Phase.RUNNING, Phase.FAILED, Phase.DELETING}),
    Phase.UPGRADING: frozenset({Phase.DEPLOYING, Phase.RUNNING, Phase.FAILED, Phase.DELETING}),
    Phase.SUSPENDING: frozenset({Phase.SUSPENDED, Phase.FAILED, Phase.DELETING}),
    Phase.SUSPENDED: frozenset({Phase.DEPLOYING, Phase.FAILED, Phase.DELETING}),
    Phase.FAILED: frozenset({Phase.PENDING, Phase.DEPLOYING, Phase.SUSPENDED, Phase.DELETING}),
    Phase.DELETING: frozenset(),
}


class IllegalTransitionError(RuntimeError):
    pass


def check_transition(current: Phase | None, target: Phase) -> None:
    """Raise :class:`IllegalTransitionError` unless ``current`` → ``target`` is in :data:`TRANSITIONS`
    (staying in a phase is always allowed; a new resource starts anywhere)."""
    if current is None or current == target:
        return
    if target not in TRANSITIONS[current]:
        raise IllegalTransitionError(f"{current} -> {target} is not a lifecycle transition")


class StatusModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class Condition(StatusModel):
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str | None = None  # never "": the API server (1.20) refuses an empty string in status as null
    last_transition_time: str


class SavepointRecord(StatusModel):
    path: str
    time: str
    reason: str = Field(description="Why it was taken: suspend, delete, upgrade, rescale, manual.")


class AutoscalerStatus(StatusModel):
    """The autoscaler's memory between decisions (times in epoch seconds)."""

    parallelism: int | None = Field(None, description="The parallelism it chose; none: the spec's.")
    spec_parallelism: int | None = Field(None, description="spec.flink.parallelism when it chose; a new one wins.")
    last_rescale_time: float | None = None
    scale_down_wanted_since: float | None = None
    highest_wanted_since: int | None = None
    last_decision: str | None = None
    load: float | None = Field(None, description="Busy ratio of the reading stage, 0..1.")


class DataPipelineStatus(StatusModel):
    """What the operator last did and observed; written only through the status subresource."""

    phase: Phase | None = None
    message: str | None = None  # never "": the API server (1.20) refuses an empty string in status as null
    observed_generation: int | None = None
    conditions: list[Condition] = Field(default_factory=list)
    job_id: str | None = None
    job_state: str | None = None
    parallelism: int | None = None
    task_managers: int | None = None
    lag: str | None = Field(None, description="How far the output is behind the source, e.g. 3s.")
    last_checkpoint: str | None = Field(None, description="Completion time of the newest checkpoint.")
    last_checkpoint_path: str | None = Field(
        None, description="Where the newest checkpoint is: the restore point when no savepoint can be taken."
    )
    last_savepoint: SavepointRecord | None = None
    savepoints: list[SavepointRecord] = Field(default_factory=list, description="Newest first.")
    restore_path: str | None = Field(None, description="Savepoint the job (re)starts from.")
    job_generation: int = Field(0, description="Starts of the job so far; each gets its own fixed job id.")
    last_reconciled_spec: str | None = Field(
        None, description="The spec last applied (with the autoscaler's parallelism), as JSON."
    )
    last_stable_spec: str | None = Field(None, description="The last applied spec whose job ran, as JSON.")
    rollout_started: float | None = Field(None, description="When the job change now rolling out began (epoch s).")
    rolled_back_spec: str | None = Field(
        None, description="A spec that was rolled back, as JSON; it is not applied again until it changes."
    )
    pods_parallelism: int | None = Field(
        None, description="The parallelism the Flink pods started with (in-place rescales leave them running)."
    )
    autoscaler: AutoscalerStatus = Field(default_factory=AutoscalerStatus)


def timestamp(epoch_seconds: float) -> str:
    return datetime.fromtimestamp(epoch_seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def now() -> str:
    return timestamp(datetime.now(UTC).timestamp())


def with_condition(
    conditions: list[Condition], type_: str, status: Literal["True", "False", "Unknown"], reason: str, message: str
) -> list[Condition]:
    """``conditions`` with ``type_`` set; its transition time changes only when its status does."""
    kept = [c for c in conditions if c.type != type_]
    old = next((c for c in conditions if c.type == type_), None)
    when = old.last_transition_time if old and old.status == status else now()
    return [*kept, Condition(type=type_, status=status, reason=reason, message=message, last_transition_time=when)]
