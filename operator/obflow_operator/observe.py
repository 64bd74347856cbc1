"""Observing a ``DataPipeline``: what its Deployments and job look like, as status and Events; and what
follows from it: a rollout that overran ``flink.rolloutTimeout`` is rolled back, savepoints past the
retained ones are disposed of, and the autoscaler decides (its rescale goes through
:func:`~obflow_operator.reconcile.reconcile`). :mod:`obflow_operator.observer` runs it every round.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass, replace
from typing import Any

from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import NotFoundError

from obflow.flink_rest import (
    TERMINAL_STATES,
    CheckpointSummary,
    FlinkRestError,
    JobDetails,
    JobOverview,
    VertexMetrics,
)
from obflow_operator import metrics
from obflow_operator.autoscaler import AutoscalerState, Sample, SampleHistory, decide, limits_for
from obflow_operator.builders import Owner, task_managers_for
from obflow_operator.outcome import Event, OperatorSettings, Outcome, load_status, owner_of
from obflow_operator.reconcile import (
    CANCEL_TIMEOUT,
    UpgradeBlockedError,
    apply_spec,
    check_secrets,
    desired_spec,
    reconcile,
    spec_json,
    take_savepoint,
)
from obflow_operator.spec import DataPipelineSpec, SpecError, parse_spec, with_parallelism
from obflow_operator.status import Condition, DataPipelineStatus, Phase, timestamp, with_condition

log = logging.getLogger("obflow.operator")

WINDOW = "stabilization_window"  # the autoscaler's; samples are kept for two of them


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


def observe(
    api: DynamicClient,
    settings: OperatorSettings,
    body: Mapping[str, Any],
    history: SampleHistory | None = None,
    clock: float | None = None,
) -> Outcome:
    """What the children and the job look like now, as status and Events; on the way it rolls back a
    rollout that overran ``flink.rolloutTimeout``, disposes of savepoints past the retained ones and,
    given a sample ``history``, lets the autoscaler decide (a rescale goes through :func:`reconcile`)."""
    meta = body["metadata"]
    owner = owner_of(meta)
    outcome = Outcome(load_status(body.get("status")))
    status = outcome.status
    if status.phase in {None, Phase.PENDING, Phase.SUSPENDED, Phase.SUSPENDING, Phase.DELETING}:
        return outcome
    clock = time.time() if clock is None else clock
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
    if spec is None:
        return outcome
    overran = status.rollout_started is not None and clock - status.rollout_started > spec.flink.seconds(
        "rollout_timeout"
    )
    if status.phase in {Phase.RESCALING, Phase.UPGRADING} and overran:
        roll_back(api, settings, owner, spec, seen, outcome)
    elif status.phase == Phase.RUNNING:
        dispose_old_savepoints(settings, owner, spec, outcome)
        if history is not None and seen.reading is not None:
            samples = history.add(owner.uid, sample_of(seen.reading, clock), 2 * spec.autoscaler.seconds(WINDOW))
            if spec.autoscaler.enabled:
                return autoscale(api, settings, body, spec, samples, outcome, clock)
    return outcome


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


def autoscale(
    api: DynamicClient,
    settings: OperatorSettings,
    body: Mapping[str, Any],
    spec: DataPipelineSpec,
    samples: list[Sample],
    outcome: Outcome,
    clock: float,
) -> Outcome:
    """One autoscaler decision; a rescale is the reconcile of the spec at the chosen parallelism."""
    status = outcome.status
    memory = status.autoscaler
    state = AutoscalerState(memory.last_rescale_time, memory.scale_down_wanted_since, memory.highest_wanted_since)
    decision = decide(samples, spec.autoscaler, limits_for(spec), state, clock)
    rolled_back = decision.action != "none" and status.rolled_back_spec == spec_json(
        with_parallelism(spec, decision.target)
    )
    if rolled_back:
        reason = f"{decision.reason}; not applied: rolled back there before"
        decision = replace(decision, action="none", target=spec.flink.parallelism, state=state, reason=reason)
    numbers = ", ".join(f"{key}={value:g}" for key, value in decision.numbers.items())
    waiting_began = decision.state.scale_down_wanted_since is not None and state.scale_down_wanted_since is None
    if decision.action != "none" or waiting_began:
        outcome.events.append(Event("Normal", "Autoscaler", f"{decision.reason} [{numbers}]"))
    memory.last_decision = decision.reason
    memory.last_rescale_time = decision.state.last_rescale_time
    memory.scale_down_wanted_since = decision.state.scale_down_wanted_since
    memory.highest_wanted_since = decision.state.highest_wanted_since
    if decision.action == "none":
        return outcome
    metrics.AUTOSCALER_RESCALES.labels(direction=decision.action).inc()
    memory.parallelism = decision.target
    memory.spec_parallelism = parse_spec(dict(body["spec"])).flink.parallelism
    try:
        rescaled = reconcile(api, settings, {**body, "status": outcome.status_patch()})
    except UpgradeBlockedError as exc:
        outcome.events.append(Event("Warning", "UpgradeBlocked", str(exc)))
        memory.parallelism, memory.last_rescale_time = None, clock  # try again after a full window
        return outcome
    rescaled.events[:0] = outcome.events
    rescaled.acted = True
    return rescaled


def sample_of(reading: VertexMetrics, clock: float) -> Sample:
    return Sample(
        clock,
        reading.parallelism,
        reading.records_in_per_second,
        reading.busy_ratio,
        reading.backpressured_ratio,
        reading.lag_seconds,
    )


def roll_back(
    api: DynamicClient,
    settings: OperatorSettings,
    owner: Owner,
    spec: DataPipelineSpec,
    seen: Observation,
    outcome: Outcome,
) -> None:
    """A rescale or upgrade that did not run within ``flink.rolloutTimeout``: end the new job at its
    newest restore point, redeploy the last stable spec from there, say why, and leave the failed spec
    unapplied until it changes."""
    status = outcome.status
    if status.last_stable_spec is None:
        return
    stable = parse_spec(json.loads(status.last_stable_spec))
    why = _why_not_running(settings, owner, seen, status.parallelism)
    failed = status.last_reconciled_spec
    restore = _end_job_at_newest_restore_point(settings, owner, stable, status)
    status.pods_parallelism = stable.flink.parallelism
    apply_spec(api, settings, owner, stable, status)
    timeout = spec.flink.rollout_timeout
    outcome.move(Phase.DEPLOYING, "RolledBack", f"rolled back to the last stable spec: {why}")
    message = (
        f"the change did not run within flink.rolloutTimeout ({timeout}): {why}; redeployed the last stable "
        f"spec (parallelism {stable.flink.parallelism}), {restore}. The failed spec stays unapplied until it "
        "changes: fix it and apply it again"
    )
    outcome.events.append(Event("Warning", "RolledBack", message))
    status.conditions = with_condition(status.conditions, "RolloutSucceeded", "False", "RolledBack", message)
    status.rolled_back_spec = failed
    status.last_reconciled_spec = status.last_stable_spec
    status.rollout_started = None
    status.parallelism = stable.flink.parallelism
    status.task_managers = task_managers_for(stable)
    if status.autoscaler.parallelism is not None:  # an autoscaler rescale that failed: back to the stable one
        status.autoscaler.parallelism = stable.flink.parallelism
        status.autoscaler.last_rescale_time = time.time()
    metrics.ERRORS.labels(kind="rollback").inc()
    outcome.acted = True


def _why_not_running(settings: OperatorSettings, owner: Owner, seen: Observation, parallelism: int | None) -> str:
    if seen.job is None:
        return "no job found on the JobManager"
    if seen.details is not None and seen.job.state == "RUNNING":
        lagging = [f"{v.name[:40]} {v.status} at {v.parallelism}" for v in seen.details.vertices]
        why = f"job {seen.job.jid} RUNNING but not every vertex RUNNING at {parallelism} ({'; '.join(lagging)})"
    else:
        why = f"job {seen.job.jid} is {seen.job.state}"
    with settings.rest(owner.name, owner.namespace, retries=0) as rest, suppress(FlinkRestError):
        exceptions = rest.exceptions(seen.job.jid, limit=1)
        if exceptions:
            why += f"; newest exception: {exceptions[0][:200]}"
    return why


def _end_job_at_newest_restore_point(
    settings: OperatorSettings, owner: Owner, spec: DataPipelineSpec, status: DataPipelineStatus
) -> str:
    """Stop the job with a savepoint if it runs; otherwise cancel it (whatever its state) and take its
    newest retained checkpoint; with neither, keep the restore point the rollout started from."""
    path, _ = take_savepoint(settings, owner, spec, status, "rollback")
    if path:
        return f"restoring from savepoint {path}"
    with settings.rest(owner.name, owner.namespace, retries=0) as rest, suppress(FlinkRestError):
        job = rest.current_job()
        if job is not None and job.state in TERMINAL_STATES:
            status.restore_path = rest.checkpoints(job.jid).latest_path or status.restore_path
        elif job is not None:
            status.restore_path = rest.cancel_and_wait(job.jid, CANCEL_TIMEOUT) or status.restore_path
    status.job_state = None
    status.job_generation += 1
    return f"restoring from {status.restore_path or 'empty state (no savepoint or checkpoint was ever taken)'}"


def dispose_old_savepoints(settings: OperatorSettings, owner: Owner, spec: DataPipelineSpec, outcome: Outcome) -> None:
    """Keep ``flink.savepoint.retained`` savepoints; older ones the operator took are disposed of through
    the JobManager (never the one the job restores from) and leave the history."""
    status = outcome.status
    retained = spec.flink.savepoint.retained
    older = [r for r in status.savepoints[retained:] if r.path != status.restore_path]
    if not older:
        return
    disposed: list[str] = []
    failed: dict[str, str] = {}
    with settings.rest(owner.name, owner.namespace, retries=1) as rest:
        for record in older:
            try:
                if spec.flink.savepoint.dispose:
                    rest.dispose_savepoint(record.path, timeout=60)
                disposed.append(record.path)
            except FlinkRestError as exc:
                failed[record.path] = str(exc)
    outcome.acted = True
    status.savepoints = [r for r in status.savepoints if r.path not in {*disposed, *failed}]
    verb = "disposed of" if spec.flink.savepoint.dispose else "forgot (flink.savepoint.dispose: false)"
    if disposed:
        message = f"{verb} {len(disposed)} beyond the {retained} retained: {', '.join(disposed)}"
        outcome.events.append(Event("Normal", "SavepointsDisposed", message))
    if failed:  # said once: the record leaves the history either way
        by_hand = "; ".join(f"{path} ({why})" for path, why in failed.items())
        outcome.events.append(Event("Warning", "SavepointDisposalFailed", f"delete these by hand: {by_hand}"))


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
