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
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import NotFoundError

from obflow_operator.apply import ApplyResult, apply_children, patch_status
from obflow_operator.builders import BuildOptions, Owner, build_children, job_id_for, task_managers_for
from obflow_operator.changes import Change, classify, required_actions
from obflow_operator.flink_rest import FlinkRest, FlinkRestError, JobDetails, JobOverview
from obflow_operator.spec import (
    DataPipelineSpec,
    SpecError,
    parse_spec,
    secret_problems,
    secret_references,
    storage_paths,
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

SAVEPOINT_HISTORY = 10
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


def reconcile(api: DynamicClient, settings: OperatorSettings, body: Mapping[str, Any]) -> Outcome:
    """Bring the children in line with the spec (a savepoint taken on the way is written to status at
    once, before anything else can fail). Raises :class:`~obflow_operator.spec.SpecError` for an
    invalid spec and :class:`~obflow_operator.apply.ForeignObjectError` for a name clash."""
    meta = body["metadata"]
    owner = owner_of(meta)
    spec = parse_spec(dict(body["spec"]))
    outcome = Outcome(load_status(body.get("status")))
    status = outcome.status
    if status.phase is None:
        outcome.move(Phase.PENDING, "Accepted", "spec accepted")

    generation_before = status.job_generation
    if spec.suspend and status.phase not in {Phase.SUSPENDED}:
        _suspend(settings, owner, spec, outcome)
    elif status.last_reconciled_spec and status.job_state == "RUNNING":
        stop_for_job_change(settings, owner, parse_spec(json.loads(status.last_reconciled_spec)), spec, outcome)
    if status.job_generation != generation_before:  # the job was stopped: its restore point goes on record first
        patch_status(api, meta, outcome.status_patch())
    options = BuildOptions(
        restore_path=status.restore_path,
        job_id=job_id_for(owner.uid, status.job_generation),
        pdb_api_version=settings.pdb_api_version,
    )
    children = build_children(owner, spec, options)
    result = apply_children(api, children, owner.uid)

    status.observed_generation = meta.get("generation")
    status.last_reconciled_spec = json.dumps(spec.model_dump(by_alias=True, mode="json"), sort_keys=True)
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
    return outcome


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
    status.savepoints = [record, *status.savepoints][:SAVEPOINT_HISTORY]
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
    :class:`UpgradeBlockedError` and the job keeps running."""
    actions = required_actions(old, spec) & {Change.RESCALE, Change.UPGRADE}
    if not actions:
        return
    target = Phase.UPGRADING if Change.UPGRADE in actions else Phase.RESCALING
    fields = ", ".join(path for path, kinds in classify(old, spec).items() if kinds & actions)
    mode = spec.flink.upgrade_mode
    outcome.move(target, str(target), f"{fields} changed: {mode} upgrade of the running job")
    status = outcome.status
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
            checkpoint = rest.checkpoints(job.jid).latest_path if keep_state else None
            if keep_state and checkpoint is None:
                return None
            rest.cancel(job.jid)
        except FlinkRestError:
            return None
    status.restore_path = checkpoint
    status.job_state = "CANCELED"
    status.job_generation += 1
    return checkpoint


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
    if current == Phase.RUNNING and seen.jobmanagers_available == 0:
        return Phase.DEPLOYING, "no JobManager is available; waiting for one"
    return None, ""


def observe(api: DynamicClient, settings: OperatorSettings, body: Mapping[str, Any]) -> Outcome:
    meta = body["metadata"]
    owner = owner_of(meta)
    outcome = Outcome(load_status(body.get("status")))
    status = outcome.status
    if status.phase in {None, Phase.PENDING, Phase.SUSPENDED, Phase.SUSPENDING, Phase.DELETING}:
        return outcome
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
    with suppress(SpecError):  # the reconcile has said what is wrong with the spec
        check_secrets(api, owner, parse_spec(dict(body["spec"])), outcome)
    target, why = observed_phase(status.phase, seen, status.parallelism)
    if target is not None:
        outcome.move(target, "Observed", why)
    return outcome


def _available(api: DynamicClient, owner: Owner, component: str, field_name: str) -> int:
    deployments = api.resources.get(api_version="apps/v1", kind="Deployment")
    try:
        found = deployments.get(name=f"{owner.name}-{component}", namespace=owner.namespace).to_dict()
    except NotFoundError:
        return 0
    return int((found.get("status") or {}).get(field_name) or 0)


def _observation(api: DynamicClient, settings: OperatorSettings, owner: Owner) -> Observation:
    jobmanagers = _available(api, owner, "jobmanager", "availableReplicas")
    job, checkpoint_ms, details = None, None, None
    # asked even when no JobManager looks available: the answer is quick either way, and the
    # Deployment's availability lags the JobManager's own
    with settings.rest(owner.name, owner.namespace, retries=0) as rest:
        try:
            job = rest.current_job()
            if job is not None:
                checkpoint_ms = rest.checkpoints(job.jid).latest_time_ms
                details = rest.job(job.jid) if job.state == "RUNNING" else None
        except FlinkRestError as exc:
            log.debug("JobManager of %s/%s not answering: %s", owner.namespace, owner.name, exc)
    return Observation(
        jobmanagers_available=jobmanagers,
        taskmanagers_available=_available(api, owner, "taskmanager", "availableReplicas"),
        capture_ready=_available(api, owner, "capture", "readyReplicas"),
        job=job,
        checkpoint_time_ms=checkpoint_ms,
        details=details,
    )
