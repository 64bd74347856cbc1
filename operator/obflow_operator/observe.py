"""Observing a ``DataPipeline``: what its Deployments, its job and its Secrets look like, as status and
Events. It only reads the cluster and the JobManager; what an observation calls for (a rollback, savepoint
disposal, an autoscaler rescale) is :func:`obflow_operator.reconcile.follow_up`'s.
:mod:`obflow_operator.observer` runs both every round.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import NotFoundError

from obflow.flink_rest import (
    CheckpointSummary,
    FlinkRestError,
    JobDetails,
    JobOverview,
    VertexMetrics,
)
from obflow_operator import metrics
from obflow_operator.autoscaler import desired_spec
from obflow_operator.builders import Owner
from obflow_operator.outcome import Event, OperatorSettings, Outcome, load_status, owner_of
from obflow_operator.spec import DataPipelineSpec, SpecError
from obflow_operator.status import Condition, DataPipelineStatus, Phase, timestamp, with_condition
from obflow_operator.validation import parse_spec, secret_problems, secret_references

log = logging.getLogger("obflow.operator")


@dataclass(frozen=True)
class Observation:
    jobmanagers_available: int
    taskmanagers_available: int
    capture_ready: int
    job: JobOverview | None
    checkpoint: CheckpointSummary | None = None
    details: JobDetails | None = None  # vertices, when the job runs
    reading: VertexMetrics | None = None  # the reading stage's metrics, when the job runs
    unanswered: FlinkRestError | None = None  # why the job overview was not answered, when it was not

    def job_state_known(self) -> bool:
        """Whether this observation says what the job's state is. A JobManager that was reached but did
        not answer (a 5xx during a leader election, a timeout) says nothing: the last state seen stands,
        so one failed call neither forgets a running job (and the final-savepoint finalizer with it)
        nor lets a spec change skip stopping the job at a restorable point. Where nothing accepts the
        connection, no JobManager runs, and so no job."""
        return self.unanswered is None or not self.unanswered.reachable


def observed_phase(
    current: Phase | None, seen: Observation, parallelism: int | None = None
) -> tuple[Phase | None, str]:
    """The phase the observation implies for a pipeline in ``current`` (pure; None: leave it). After a
    rescale or upgrade the job counts as running again only when every vertex runs at ``parallelism``
    and the reading stage reports its processing metrics."""
    state = seen.job.state if seen.job else None
    jid = seen.job.jid if seen.job else ""
    if current == Phase.DEPLOYING and state == "RUNNING":
        return Phase.RUNNING, f"job {jid} is RUNNING"
    if current in {Phase.RESCALING, Phase.UPGRADING} and state == "RUNNING":
        if seen.details is not None and seen.details.all_running(parallelism) and seen.reading is not None:
            return Phase.RUNNING, f"job {jid} is RUNNING, every vertex at parallelism {parallelism}, processing"
        return None, ""
    if current == Phase.RUNNING and state == "FAILED":
        return Phase.FAILED, "the job FAILED; its exceptions are in the JobManager log"
    if current == Phase.RUNNING and seen.jobmanagers_available == 0 and seen.job is None:
        return Phase.DEPLOYING, "no JobManager is available; waiting for one"
    return None, ""


@dataclass
class Observed:
    """An observation's status and Events, what was seen (None: the phase has nothing to observe) and the
    spec as it applies now (None: invalid)."""

    outcome: Outcome
    seen: Observation | None = None
    spec: DataPipelineSpec | None = None


def observe(api: DynamicClient, settings: OperatorSettings, body: Mapping[str, Any]) -> Observed:
    """What the children and the job look like now, as status and Events (a phase the job's state
    implies, e.g. Deploying → Running)."""
    meta = body["metadata"]
    owner = owner_of(meta)
    outcome = Outcome(load_status(body.get("status")))
    status = outcome.status
    if status.phase in {None, Phase.PENDING, Phase.SUSPENDED, Phase.SUSPENDING, Phase.DELETING}:
        return Observed(outcome)
    seen = _observation(api, settings, owner)
    status.task_managers = seen.taskmanagers_available
    if seen.job_state_known():
        status.job_id = seen.job.jid if seen.job else status.job_id
        status.job_state = seen.job.state if seen.job else None
    if seen.checkpoint is not None and seen.checkpoint.latest_time_ms:
        status.last_checkpoint = timestamp(seen.checkpoint.latest_time_ms / 1000)
        status.last_checkpoint_path = seen.checkpoint.latest_path or status.last_checkpoint_path
    status.conditions = with_condition(
        status.conditions,
        "CaptureReady",
        "True" if seen.capture_ready else "False",
        "Ready" if seen.capture_ready else "NotReady",
        f"{seen.capture_ready} capture agent(s) ready",
    )
    status.conditions = _job_running(status, seen)
    try:
        spec = desired_spec(parse_spec(dict(body["spec"])), status)
    except SpecError:  # the reconcile has said what is wrong with the spec
        spec = None
    if spec is not None:
        check_secrets(api, owner, spec, outcome)
        if seen.reading is not None:
            _record_load(owner, spec, seen.reading, outcome)
    target, why = observed_phase(status.phase, seen, status.parallelism)
    if target is not None:
        outcome.move(target, "Observed", why)
        if target == Phase.RUNNING:  # what runs now is what a failed rollout returns to
            status.last_stable_spec = status.last_reconciled_spec
            status.rollout_started = None
    return Observed(outcome, seen, spec)


def _job_running(status: DataPipelineStatus, seen: Observation) -> list[Condition]:
    available = f"{seen.jobmanagers_available} JobManager(s) available"
    if not seen.job_state_known():
        message = f"{available} but not answering ({seen.unanswered}); job last seen {status.job_state or 'not found'}"
        return with_condition(status.conditions, "JobRunning", "Unknown", "JobManagerNotAnswering", message)
    return with_condition(
        status.conditions,
        "JobRunning",
        "True" if status.job_state == "RUNNING" else "False",
        status.job_state or "NoJob",
        f"{available}, job {status.job_state or 'not found'}",
    )


def _record_load(owner: Owner, spec: DataPipelineSpec, reading: VertexMetrics, outcome: Outcome) -> None:
    """Lag and load from the reading stage's metrics; load above ``alerts.load`` is a condition, an
    Event when it begins, and the metric alerting uses (R5.6)."""
    status = outcome.status
    status.lag = _duration(reading.lag_seconds)
    status.autoscaler.load = round(reading.busy_ratio, 3)
    high = reading.busy_ratio > spec.alerts.load
    metrics.record_load(f"{owner.namespace}/{owner.name}", reading.busy_ratio, high)
    was_high = any(c.type == "HighLoad" and c.status == "True" for c in status.conditions)
    remedy = "the autoscaler scales out" if spec.autoscaler.enabled else "raise spec.flink.parallelism"
    message = (
        f"reading stage {reading.busy_ratio:.0%} busy at parallelism {reading.parallelism}, "
        f"{'above' if high else 'within'} alerts.load {spec.alerts.load:.0%}"
    )
    if high:
        message += f": scale-out is due ({remedy})"
        if not was_high:
            outcome.events.append(Event("Warning", "HighLoad", message))
    reason = "AboveThreshold" if high else "BelowThreshold"
    status.conditions = with_condition(status.conditions, "HighLoad", "True" if high else "False", reason, message)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.0f}h"


def _available(api: DynamicClient, owner: Owner, component: str, field_name: str) -> int:
    deployments = api.resources.get(api_version="apps/v1", kind="Deployment")
    try:
        found = deployments.get(name=f"{owner.name}-{component}", namespace=owner.namespace).to_dict()
    except NotFoundError:
        return 0
    return int((found.get("status") or {}).get(field_name) or 0)


def _observation(api: DynamicClient, settings: OperatorSettings, owner: Owner) -> Observation:
    jobmanagers = _available(api, owner, "jobmanager", "availableReplicas")
    job, checkpoint, details, reading, unanswered = None, None, None, None, None
    # asked even when no JobManager looks available: the answer is quick either way, and the
    # Deployment's availability lags the JobManager's own
    with settings.rest(owner.name, owner.namespace, retries=0) as rest:
        try:
            job = rest.current_job()
        except FlinkRestError as exc:
            unanswered = exc
        try:
            if job is not None:
                checkpoint = rest.checkpoints(job.jid)
            if job is not None and job.state == "RUNNING":
                details = rest.job(job.jid)
                reading = rest.reading_stage_metrics(details)
        except FlinkRestError as exc:  # the job's state is known; its details wait for the next round
            log.debug("JobManager of %s/%s: %s", owner.namespace, owner.name, exc)
    return Observation(
        jobmanagers_available=jobmanagers,
        taskmanagers_available=_available(api, owner, "taskmanager", "availableReplicas"),
        capture_ready=_available(api, owner, "capture", "readyReplicas"),
        job=job,
        checkpoint=checkpoint,
        details=details,
        reading=reading,
        unanswered=unanswered,
    )


def check_secrets(api: DynamicClient, owner: Owner, spec: DataPipelineSpec, outcome: Outcome) -> None:
    """Say plainly when a referenced Secret or key is missing (the pods would only wait for it)."""
    refs = secret_references(spec)
    secrets = api.resources.get(api_version="v1", kind="Secret")
    found: dict[str, set[str] | None] = {}
    for name in {ref.name for ref in refs.values()}:
        try:
            found[name] = set(secrets.get(name=name, namespace=owner.namespace).to_dict().get("data") or {})
        except NotFoundError:
            found[name] = None
    problems = secret_problems(refs, owner.namespace, found)
    before = next((c for c in outcome.status.conditions if c.type == "CredentialsFound"), None)
    was_missing = before is not None and before.status == "False"
    if problems:
        message = "; ".join(problems)
        outcome.status.conditions = with_condition(
            outcome.status.conditions, "CredentialsFound", "False", "SecretMissing", message
        )
        if not (was_missing and before and before.message == message):  # said once, not every round
            outcome.events.append(Event("Warning", "SecretMissing", message))
    else:
        outcome.status.conditions = with_condition(
            outcome.status.conditions, "CredentialsFound", "True", "Found", "every referenced Secret key exists"
        )
        if was_missing:
            outcome.events.append(Event("Normal", "SecretFound", "every referenced Secret key exists now"))
