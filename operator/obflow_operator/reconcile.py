"""What the operator does for a ``DataPipeline``, apart from kopf: reconcile (spec → children, stopping a
running job at a restorable point first when a change needs it), observe (children and job → status),
suspend/resume and the final savepoint. Handlers in
:mod:`obflow_operator.handlers` call these and write the returned status and events.

Everything that must survive an operator restart lives in the resource's status (phase, restore
path, savepoints); each function can run again after a crash and converges.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from typing import Any

from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import NotFoundError

from obflow_operator import metrics
from obflow_operator.apply import ApplyResult, apply_children, patch_status
from obflow_operator.autoscaler import AutoscalerState, Sample, SampleHistory, decide, limits_for
from obflow_operator.builders import BuildOptions, Owner, build_children, job_id_for, task_managers_for
from obflow_operator.changes import Change, classify, required_actions
from obflow_operator.flink_rest import (
    TERMINAL_STATES,
    FlinkRest,
    FlinkRestError,
    JobDetails,
    JobOverview,
    VertexMetrics,
)
from obflow_operator.spec import (
    DataPipelineSpec,
    SpecError,
    parse_spec,
    secret_problems,
    secret_references,
    storage_paths,
    with_parallelism,
)
from obflow_operator.status import (
    DataPipelineStatus,
    Phase,
    SavepointRecord,
    check_transition,
    now,
    timestamp,
    with_condition,
)

log = logging.getLogger("obflow.operator")

CANCEL_TIMEOUT = 120.0  # seconds for a cancelled job's tasks to end
SAVEPOINT_RECORDS_MAX = 100  # the history past spec.flink.savepoint.retained is disposed of while a job runs
ROLLED_BACK_HELD = "the spec that was rolled back stays unapplied until it changes (see the RolledBack event)"
NO_CLAIM = (
    "no spec.storage.claimName: checkpoints, savepoints and HA metadata live in each pod's emptyDir and "
    "are lost with it; set it to a ReadWriteMany PersistentVolumeClaim for anything but a trial"
)


@dataclass(frozen=True)
class OperatorSettings:
    # where the operator reaches a pipeline's JobManager REST API; in the cluster, its Service
    rest_url_template: str = "http://{name}-jobmanager.{namespace}.svc:8081"
    pdb_api_version: str = "policy/v1"
    rest_timeout: float = 10.0
    observe_interval: float = 10.0  # seconds between the observer's rounds

    def rest(self, name: str, namespace: str, retries: int = 2) -> FlinkRest:
        url = self.rest_url_template.format(name=name, namespace=namespace)
        return FlinkRest(url, timeout=self.rest_timeout, retries=retries)


@dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass
class Outcome:
    """A status to write (camelCase, for the status subresource) and events to post."""

    status: DataPipelineStatus
    events: list[Event] = field(default_factory=list)
    acted: bool = False  # it records something done (a job stopped, children applied): write it, whatever changed

    def move(self, target: Phase, reason: str, message: str) -> None:
        """Go to ``target`` (checked against the lifecycle table), with an Event when the phase changes."""
        current = self.status.phase
        check_transition(current, target)
        if current != target:
            self.events.append(Event("Normal", reason, f"{current or 'New'} -> {target}: {message}"))
        self.status.phase = target
        self.status.message = message

    def status_patch(self) -> dict[str, Any]:
        return self.status.model_dump(by_alias=True, mode="json")


def owner_of(meta: Mapping[str, Any]) -> Owner:
    return Owner(name=meta["name"], namespace=meta["namespace"], uid=meta["uid"])


def load_status(status: Mapping[str, Any] | None) -> DataPipelineStatus:
    return DataPipelineStatus.model_validate(dict(status or {}))


def invalid_spec(status: Mapping[str, Any] | None, generation: int | None, problem: str) -> Outcome:
    """The status and Event for a spec the operator refuses: Failed, with the field and the fix."""
    outcome = Outcome(load_status(status))
    outcome.status.observed_generation = generation
    outcome.status.conditions = with_condition(outcome.status.conditions, "SpecValid", "False", "InvalidSpec", problem)
    check_transition(outcome.status.phase, Phase.FAILED)
    outcome.status.phase = Phase.FAILED
    outcome.status.message = problem
    outcome.events.append(Event("Warning", "InvalidSpec", problem))
    return outcome


def desired_spec(spec: DataPipelineSpec, status: DataPipelineStatus) -> DataPipelineSpec:
    """``spec`` at the autoscaler's parallelism while it has one for the spec's parallelism (a parallelism
    the user sets afterwards wins)."""
    chosen = status.autoscaler
    if not spec.autoscaler.enabled or chosen.parallelism is None or chosen.spec_parallelism != spec.flink.parallelism:
        return spec
    return with_parallelism(spec, chosen.parallelism)


def spec_json(spec: DataPipelineSpec) -> str:
    return json.dumps(spec.model_dump(by_alias=True, mode="json"), sort_keys=True)


def reconcile(api: DynamicClient, settings: OperatorSettings, body: Mapping[str, Any]) -> Outcome:
    """Bring the children in line with the spec (a savepoint taken on the way is written to status at
    once, before anything else can fail). Raises :class:`~obflow_operator.spec.SpecError` for an
    invalid spec and :class:`~obflow_operator.apply.ForeignObjectError` for a name clash."""
    meta = body["metadata"]
    owner = owner_of(meta)
    outcome = Outcome(load_status(body.get("status")))
    status = outcome.status
    spec = desired_spec(parse_spec(dict(body["spec"])), status)
    if status.phase is None:
        outcome.move(Phase.PENDING, "Accepted", "spec accepted")
    held_back = status.rolled_back_spec == spec_json(spec) and status.last_stable_spec is not None
    if held_back:  # the spec that was rolled back: keep the stable one until the user changes it
        spec = parse_spec(json.loads(str(status.last_stable_spec)))

    generation_before = status.job_generation
    if spec.suspend and status.phase not in {Phase.SUSPENDED}:
        _suspend(settings, owner, spec, outcome)
    elif status.last_reconciled_spec and status.job_state == "RUNNING":
        stop_for_job_change(settings, owner, parse_spec(json.loads(status.last_reconciled_spec)), spec, outcome)
    stopped = status.job_generation != generation_before
    if stopped:  # the job was stopped: its restore point goes on record first
        patch_status(api, meta, outcome.status_patch())
    if stopped or status.job_state != "RUNNING" or status.pods_parallelism is None:
        status.pods_parallelism = spec.flink.parallelism  # the Flink pods start (again) at it
    result = _apply(api, settings, owner, spec, status)

    status.observed_generation = meta.get("generation")
    status.last_reconciled_spec = spec_json(spec)
    status.conditions = with_condition(status.conditions, "SpecValid", "True", "Valid", "the spec is valid")
    status.conditions = with_condition(
        status.conditions, "ChildrenApplied", "True", "Applied", _describe(result) or "every child up to date"
    )
    if spec.storage.claim_name:
        status.conditions = with_condition(
            status.conditions, "DurableStorage", "True", "Claim", f"state on claim {spec.storage.claim_name}"
        )
    else:
        status.conditions = with_condition(status.conditions, "DurableStorage", "False", "EmptyDir", NO_CLAIM)
    if result.changed:
        outcome.events.append(Event("Normal", "Applied", _describe(result)))
    check_secrets(api, owner, spec, outcome)
    if spec.suspend:
        outcome.move(Phase.SUSPENDED, "Suspended", "scaled to zero; set spec.suspend: false to resume")
        status.task_managers = 0
        return outcome
    status.parallelism = spec.flink.parallelism
    status.task_managers = task_managers_for(spec)
    if status.phase in {Phase.PENDING, Phase.FAILED, Phase.SUSPENDED}:
        restored = f" from {status.restore_path}" if status.restore_path else ""
        outcome.move(Phase.DEPLOYING, "Deploying", f"children applied; waiting for the job to run{restored}")
    elif status.phase == Phase.RUNNING and _touches_flink(result):
        outcome.move(Phase.DEPLOYING, "Redeploying", "Flink children changed; waiting for the job to run again")
    if held_back:
        status.message = f"{status.message or status.phase}; {ROLLED_BACK_HELD}"
    return outcome


def _apply(
    api: DynamicClient, settings: OperatorSettings, owner: Owner, spec: DataPipelineSpec, status: DataPipelineStatus
) -> ApplyResult:
    options = BuildOptions(
        restore_path=status.restore_path,
        job_id=job_id_for(owner.uid, status.job_generation),
        pdb_api_version=settings.pdb_api_version,
        pods_parallelism=status.pods_parallelism,
    )
    return apply_children(api, build_children(owner, spec, options), owner.uid)


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


def _describe(result: ApplyResult) -> str:
    parts = []
    if result.created:
        parts.append(f"created {', '.join(result.created)}")
    if result.updated:
        parts.append(f"updated {', '.join(result.updated)}")
    return "; ".join(parts)


def _touches_flink(result: ApplyResult) -> bool:
    flink = ("-jobmanager", "-taskmanager")
    return any(key.startswith("Deployment/") and key.endswith(flink) for key in result.changed)


@contextmanager
def _running_job(settings: OperatorSettings, owner: Owner) -> Iterator[tuple[FlinkRest, JobOverview] | None]:
    """The pipeline's REST client and its RUNNING job, or None when no job runs or none answers."""
    with settings.rest(owner.name, owner.namespace) as rest:
        try:
            job = rest.current_job()
        except FlinkRestError:
            job = None
        yield (rest, job) if job is not None and job.state == "RUNNING" else None


def take_savepoint(
    settings: OperatorSettings, owner: Owner, spec: DataPipelineSpec, status: DataPipelineStatus, reason: str
) -> tuple[str | None, str]:
    """Stop the running job with a savepoint; returns (its path or None, what happened)."""
    with _running_job(settings, owner) as found:
        if found is None:
            return None, "no running job; nothing to savepoint"
        rest, job = found
        try:
            target = storage_paths(owner.name, spec)["savepoints"]
            path = rest.stop_with_savepoint(job.jid, target, spec.deletion.seconds("timeout"))
        except FlinkRestError as exc:
            return None, str(exc)
    record = SavepointRecord(path=path, time=now(), reason=reason)
    status.last_savepoint = record
    status.savepoints = [record, *status.savepoints][:SAVEPOINT_RECORDS_MAX]
    status.restore_path = path
    status.job_state = "FINISHED"
    status.job_generation += 1  # the next start is a new job, from this savepoint
    return path, f"job {job.jid} stopped with savepoint {path}"


class UpgradeBlockedError(RuntimeError):
    """A job change cannot be rolled out without losing state; the job keeps running unchanged."""


def stop_for_job_change(
    settings: OperatorSettings, owner: Owner, old: DataPipelineSpec, spec: DataPipelineSpec, outcome: Outcome
) -> None:
    """Before a rescale or upgrade reaches a running job, stop the job at a point it restarts from,
    per ``flink.upgradeMode``: a savepoint (falling back to the newest retained checkpoint when the
    savepoint fails), the newest retained checkpoint, or nothing (stateless). Never into empty state
    unless the spec says stateless: without a savepoint or a checkpoint this raises
    :class:`UpgradeBlockedError` and the job keeps running.

    A parallelism change alone, with ``flink.inPlaceRescale`` on before and after, rescales the running
    job in place instead (the Flink pods keep running)."""
    actions = required_actions(old, spec) & {Change.RESCALE, Change.UPGRADE}
    if not actions:
        return
    target = Phase.UPGRADING if Change.UPGRADE in actions else Phase.RESCALING
    fields = ", ".join(path for path, kinds in classify(old, spec).items() if kinds & actions)
    status = outcome.status
    status.rollout_started = time.time()
    in_place = old.flink.in_place_rescale and spec.flink.in_place_rescale and target == Phase.RESCALING
    if in_place and old.flink.parallelism != spec.flink.parallelism:
        outcome.move(target, str(target), f"{fields} changed: rescaling the running job in place")
        problem = _rescale_in_place(settings, owner, spec.flink.parallelism)
        if problem is None:
            outcome.events.append(
                Event("Normal", "RescaleInPlace", f"{old.flink.parallelism} -> {spec.flink.parallelism}")
            )
            return
        outcome.events.append(Event("Warning", "RescaleInPlaceFailed", f"{problem}; stopping the job instead"))
    mode = spec.flink.upgrade_mode
    outcome.move(target, str(target), f"{fields} changed: {mode} upgrade of the running job")
    if mode == "savepoint":
        path, what = take_savepoint(
            settings, owner, spec, status, "rescale" if target == Phase.RESCALING else "upgrade"
        )
        if path:
            outcome.events.append(Event("Normal", "Savepoint", what))
            return
        outcome.events.append(Event("Warning", "SavepointFailed", f"{what}; falling back to the latest checkpoint"))
    checkpoint = _cancel_at_latest_checkpoint(settings, owner, status, keep_state=mode != "stateless")
    if checkpoint is None and mode != "stateless":
        raise UpgradeBlockedError(
            f"{fields} not rolled out: no savepoint and no retained checkpoint to restart from, and the job "
            "keeps running; wait for a checkpoint, or set flink.upgradeMode: stateless to start empty"
        )
    restored = f"restarting from checkpoint {checkpoint}" if checkpoint else "restarting with empty state (stateless)"
    outcome.events.append(Event("Normal", "JobStopped", restored))


def _rescale_in_place(settings: OperatorSettings, owner: Owner, parallelism: int) -> str | None:
    """Ask the adaptive scheduler to run the job at ``parallelism``; None, or what went wrong."""
    with _running_job(settings, owner) as found:
        if found is None:
            return "no running job answered"
        rest, job = found
        try:
            rest.rescale_in_place(job.jid, parallelism)
        except FlinkRestError as exc:
            return str(exc)
    return None


def _cancel_at_latest_checkpoint(
    settings: OperatorSettings, owner: Owner, status: DataPipelineStatus, keep_state: bool
) -> str | None:
    """Cancel the running job, recording its newest retained checkpoint as the restore point; with
    ``keep_state`` and no checkpoint, leave the job alone and return None."""
    with _running_job(settings, owner) as found:
        if found is None:
            return None
        rest, job = found
        try:
            if keep_state and rest.checkpoints(job.jid).latest_path is None:
                return None
            checkpoint = rest.cancel_and_wait(job.jid, CANCEL_TIMEOUT)
        except FlinkRestError:
            return None
    status.restore_path = checkpoint if keep_state else None
    status.job_state = "CANCELED"
    status.job_generation += 1
    return status.restore_path


def _suspend(settings: OperatorSettings, owner: Owner, spec: DataPipelineSpec, outcome: Outcome) -> None:
    if outcome.status.phase in {Phase.RUNNING, Phase.DEPLOYING}:
        outcome.move(Phase.SUSPENDING, "Suspending", "stopping the job with a savepoint")
    path, what = take_savepoint(settings, owner, spec, outcome.status, "suspend")
    if path:
        outcome.events.append(Event("Normal", "Savepoint", what))
    elif outcome.status.job_state == "RUNNING":
        # scaling to zero without a savepoint keeps the HA metadata: the job resumes from its latest
        # checkpoint, so nothing is lost, only the savepoint's exact cut
        outcome.events.append(
            Event("Warning", "SavepointFailed", f"{what}; suspending anyway, resume restores the latest checkpoint")
        )


def final_savepoint(settings: OperatorSettings, body: Mapping[str, Any]) -> Outcome:
    """Before deletion: stop the job with a savepoint, bounded by ``spec.deletion.timeout``. Never
    raises for a job that is gone or a savepoint that fails: deletion must not hang."""
    meta = body["metadata"]
    owner = owner_of(meta)
    outcome = Outcome(load_status(body.get("status")))
    outcome.move(Phase.DELETING, "Deleting", "taking the final savepoint")
    try:
        spec = parse_spec(dict(body["spec"]))
    except ValueError as exc:
        outcome.events.append(Event("Warning", "FinalSavepointSkipped", f"invalid spec, no savepoint: {exc}"))
        return outcome
    path, what = take_savepoint(settings, owner, spec, outcome.status, "delete")
    if path:
        outcome.events.append(Event("Normal", "FinalSavepoint", what))
    else:
        checkpoints = storage_paths(owner.name, spec)["checkpoints"]
        kept = f"{what}; deleting anyway, retained checkpoints stay in {checkpoints}"
        outcome.events.append(Event("Warning", "FinalSavepointFailed", kept))
    outcome.status.message = what
    return outcome


def needs_final_savepoint(spec: Mapping[str, Any], status: Mapping[str, Any]) -> bool:
    """Whether deletion waits for a final savepoint: only while a job runs and the spec asks for it, so
    a pipeline whose job (or operator) is gone is never held by a finalizer it cannot clear."""
    deletion = (spec or {}).get("deletion") or {}
    return bool(deletion.get("savepoint", True)) and (status or {}).get("jobState") == "RUNNING"


# --- observing ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Observation:
    jobmanagers_available: int
    taskmanagers_available: int
    capture_ready: int
    job: JobOverview | None
    checkpoint_time_ms: int | None = None
    details: JobDetails | None = None  # vertices, when the job runs
    reading: VertexMetrics | None = None  # the reading stage's metrics, when the job runs


def observed_phase(
    current: Phase | None, seen: Observation, parallelism: int | None = None
) -> tuple[Phase | None, str]:
    """The phase the observation implies for a pipeline in ``current`` (pure; None: leave it). After a
    rescale or upgrade the job counts as running again only when every vertex runs at ``parallelism``."""
    state = seen.job.state if seen.job else None
    jid = seen.job.jid if seen.job else ""
    if current == Phase.DEPLOYING and state == "RUNNING":
        return Phase.RUNNING, f"job {jid} is RUNNING"
    if current in {Phase.RESCALING, Phase.UPGRADING} and state == "RUNNING":
        if seen.details is not None and seen.details.all_running(parallelism):
            return Phase.RUNNING, f"job {jid} is RUNNING, every vertex at parallelism {parallelism}"
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
    status.job_id = seen.job.jid if seen.job else status.job_id
    status.job_state = seen.job.state if seen.job else None
    if seen.checkpoint_time_ms:
        status.last_checkpoint = timestamp(seen.checkpoint_time_ms / 1000)
    status.conditions = with_condition(
        status.conditions,
        "CaptureReady",
        "True" if seen.capture_ready else "False",
        "Ready" if seen.capture_ready else "NotReady",
        f"{seen.capture_ready} capture agent(s) ready",
    )
    status.conditions = with_condition(
        status.conditions,
        "JobRunning",
        "True" if status.job_state == "RUNNING" else "False",
        status.job_state or "NoJob",
        f"{seen.jobmanagers_available} JobManager(s) available, job {status.job_state or 'not found'}",
    )
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


WINDOW = "stabilization_window"


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
        decision = replace(decision, action="none", target=spec.flink.parallelism, state=state)
        decision = replace(decision, reason=f"{decision.reason}; not applied: rolled back there before")
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
    _apply(api, settings, owner, stable, status)
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
    disposed, failed = [], []
    with settings.rest(owner.name, owner.namespace, retries=1) as rest:
        for record in older:
            try:
                if spec.flink.savepoint.dispose:
                    rest.dispose_savepoint(record.path, timeout=60)
                disposed.append(record.path)
            except FlinkRestError as exc:
                failed.append(f"{record.path} ({exc})")
    outcome.acted = True
    gone = set(disposed) | {f.split(" (")[0] for f in failed}
    status.savepoints = [r for r in status.savepoints if r.path not in gone]
    verb = "disposed of" if spec.flink.savepoint.dispose else "forgot (flink.savepoint.dispose: false)"
    if disposed:
        outcome.events.append(
            Event(
                "Normal",
                "SavepointsDisposed",
                f"{verb} {len(disposed)} beyond the {retained} retained: " + ", ".join(disposed),
            )
        )
    if failed:  # said once: the record leaves the history either way
        outcome.events.append(Event("Warning", "SavepointDisposalFailed", "delete these by hand: " + "; ".join(failed)))


def _available(api: DynamicClient, owner: Owner, component: str, field_name: str) -> int:
    deployments = api.resources.get(api_version="apps/v1", kind="Deployment")
    try:
        found = deployments.get(name=f"{owner.name}-{component}", namespace=owner.namespace).to_dict()
    except NotFoundError:
        return 0
    return int((found.get("status") or {}).get(field_name) or 0)


def _observation(api: DynamicClient, settings: OperatorSettings, owner: Owner) -> Observation:
    jobmanagers = _available(api, owner, "jobmanager", "availableReplicas")
    job, checkpoint_ms, details, reading = None, None, None, None
    # asked even when no JobManager looks available: the answer is quick either way, and the
    # Deployment's availability lags the JobManager's own
    with settings.rest(owner.name, owner.namespace, retries=0) as rest:
        try:
            job = rest.current_job()
            if job is not None:
                checkpoint_ms = rest.checkpoints(job.jid).latest_time_ms
            if job is not None and job.state == "RUNNING":
                details = rest.job(job.jid)
                reading = rest.reading_stage_metrics(job.jid)
        except FlinkRestError as exc:
            log.debug("JobManager of %s/%s not answering: %s", owner.namespace, owner.name, exc)
    return Observation(
        jobmanagers_available=jobmanagers,
        taskmanagers_available=_available(api, owner, "taskmanager", "availableReplicas"),
        capture_ready=_available(api, owner, "capture", "readyReplicas"),
        job=job,
        checkpoint_time_ms=checkpoint_ms,
        details=details,
        reading=reading,
    )
