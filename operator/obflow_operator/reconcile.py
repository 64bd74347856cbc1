"""What the operator does for a ``DataPipeline``, apart from kopf: reconcile (spec → children, stopping a
running job at a restorable point, or rescaling it in place, first when a change needs it),
suspend/resume and the final savepoint. Handlers in :mod:`obflow_operator.handlers` call these and
write the returned status and events; observing is :mod:`obflow_operator.observe`.

Everything that must survive an operator restart lives in the resource's status (phase, restore
path, savepoints); each function can run again after a crash and converges.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from typing import Any

from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import NotFoundError

from obflow.flink_rest import TERMINAL_STATES, FlinkRest, FlinkRestError, JobOverview
from obflow_operator.apply import ApplyResult, apply_children, delete_unbuilt_children, patch_status
from obflow_operator.builders import (
    NETWORK_POLICY_API,
    BuildOptions,
    Owner,
    build_children,
    job_id_for,
    task_managers_for,
)
from obflow_operator.changes import Change, classify, required_actions
from obflow_operator.outcome import Event, OperatorSettings, Outcome, load_status, owner_of
from obflow_operator.spec import (
    DataPipelineSpec,
    SpecError,
    parse_spec,
    pipeline_name_problems,
    secret_problems,
    secret_references,
    storage_paths,
    with_parallelism,
)
from obflow_operator.status import (
    DataPipelineStatus,
    Phase,
    SavepointRecord,
    now,
    with_condition,
)

CANCEL_TIMEOUT = 120.0  # seconds for a cancelled job's tasks to end
SAVEPOINT_RETRY_PAUSE = 2.0  # seconds between tries of a patient savepoint
SAVEPOINT_RECORDS_MAX = 100  # the history past spec.flink.savepoint.retained is disposed of while a job runs
ROLLED_BACK_HELD = "the spec that was rolled back stays unapplied until it changes (see the RolledBack event)"
NO_CLAIM = (
    "no spec.storage.claimName: checkpoints, savepoints and HA metadata live in each pod's emptyDir and "
    "are lost with it; set it to a ReadWriteMany PersistentVolumeClaim for anything but a trial"
)


def invalid_spec(status: Mapping[str, Any] | None, generation: int | None, problem: str) -> Outcome:
    """The status and Event for a spec the operator refuses: Failed, with the field and the fix."""
    outcome = Outcome(load_status(status))
    outcome.status.observed_generation = generation
    outcome.status.conditions = with_condition(outcome.status.conditions, "SpecValid", "False", "InvalidSpec", problem)
    outcome.move(Phase.FAILED, "InvalidSpec", problem, warning=True)
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
    problems = pipeline_name_problems(owner.name)
    if problems:  # the API server takes names its children's Services cannot have
        raise SpecError(problems)
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
    result = apply_spec(api, settings, owner, spec, status)

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


def apply_spec(
    api: DynamicClient, settings: OperatorSettings, owner: Owner, spec: DataPipelineSpec, status: DataPipelineStatus
) -> ApplyResult:
    options = BuildOptions(
        restore_path=status.restore_path,
        job_id=job_id_for(owner.uid, status.job_generation),
        pdb_api_version=settings.pdb_api_version,
        pods_parallelism=status.pods_parallelism,
        network_policies=settings.network_policies,
    )
    children = build_children(owner, spec, options)
    result = apply_children(api, children, owner.uid)
    api_versions = {"PodDisruptionBudget": settings.pdb_api_version, "NetworkPolicy": NETWORK_POLICY_API}
    result.deleted = delete_unbuilt_children(api, children, owner, api_versions)
    return result


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
    if result.deleted:
        parts.append(f"deleted {', '.join(result.deleted)}")
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
    settings: OperatorSettings,
    owner: Owner,
    spec: DataPipelineSpec,
    status: DataPipelineStatus,
    reason: str,
    patient: bool = False,
) -> tuple[str | None, str]:
    """Stop the running job with a savepoint; returns (its path or None, what happened). ``patient``:
    within the savepoint's timeout, wait for a job that is starting or restarting to run, and try
    again after a savepoint that failed while the job kept running (the final savepoint: there is no
    later chance), or for a JobManager that answers with an error (a leader election). One that
    nobody can connect to is not waited for: deletion must not hang on a job that is gone."""
    # the final savepoint has its own bound: deletion must not hang
    section = spec.deletion if reason == "delete" else spec.flink.savepoint
    deadline = time.monotonic() + section.seconds("timeout")
    target = storage_paths(owner.name, spec)["savepoints"]
    with settings.rest(owner.name, owner.namespace) as rest:
        path, what, worth_again = _try_savepoint(rest, target, deadline)
        while path is None and patient and worth_again and time.monotonic() + SAVEPOINT_RETRY_PAUSE < deadline:
            time.sleep(SAVEPOINT_RETRY_PAUSE)
            path, what, worth_again = _try_savepoint(rest, target, deadline)
    if path is None:
        return None, what
    record = SavepointRecord(path=path, time=now(), reason=reason)
    status.last_savepoint = record
    status.savepoints = [record, *status.savepoints][:SAVEPOINT_RECORDS_MAX]
    status.restore_path = path
    status.job_state = "FINISHED"
    status.job_generation += 1  # the next start is a new job, from this savepoint
    return path, what


def _try_savepoint(rest: FlinkRest, target: str, deadline: float) -> tuple[str | None, str, bool]:
    """One try at stopping the current job with a savepoint: (its path or None, what happened, whether
    another try may succeed)."""
    try:
        job = rest.current_job()
    except FlinkRestError as exc:
        return None, f"the JobManager did not answer: {exc}", exc.reachable
    if job is None or job.state in TERMINAL_STATES:
        return None, "no running job; nothing to savepoint", False
    if job.state != "RUNNING":
        return None, f"job {job.jid} is {job.state}, not RUNNING", True
    try:
        path = rest.stop_with_savepoint(job.jid, target, max(deadline - time.monotonic(), 1.0))
    except FlinkRestError as exc:
        return None, str(exc), True
    return path, f"job {job.jid} stopped with savepoint {path}", False


def newest_checkpoint(settings: OperatorSettings, owner: Owner, status: DataPipelineStatus) -> str | None:
    """The newest retained checkpoint of the pipeline's job as its JobManager says, else as last observed."""
    with settings.rest(owner.name, owner.namespace, retries=0) as rest, suppress(FlinkRestError):
        job = rest.current_job()
        if job is not None:
            return rest.checkpoints(job.jid).latest_path or status.last_checkpoint_path
    return status.last_checkpoint_path


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
    """Before deletion: stop the job with a savepoint, bounded by ``spec.deletion.timeout`` (waiting
    for a job that is restarting to run again). Never raises for a job that is gone or a savepoint
    that fails: deletion goes on, with a Warning naming the retained checkpoint to restore from."""
    meta = body["metadata"]
    owner = owner_of(meta)
    outcome = Outcome(load_status(body.get("status")))
    outcome.move(Phase.DELETING, "Deleting", "taking the final savepoint")
    try:
        spec = parse_spec(dict(body["spec"]))
    except ValueError as exc:
        outcome.events.append(Event("Warning", "FinalSavepointSkipped", f"invalid spec, no savepoint: {exc}"))
        return outcome
    path, what = take_savepoint(settings, owner, spec, outcome.status, "delete", patient=True)
    if path:
        outcome.events.append(Event("Normal", "FinalSavepoint", what))
    else:
        checkpoints = storage_paths(owner.name, spec)["checkpoints"]
        newest = newest_checkpoint(settings, owner, outcome.status)
        restore = f"restore from retained checkpoint {newest}" if newest else "no checkpoint was seen"
        kept = f"{what}; deleting anyway: {restore} (retained checkpoints stay in {checkpoints})"
        outcome.events.append(Event("Warning", "FinalSavepointFailed", kept))
    outcome.status.message = what
    return outcome


def needs_final_savepoint(spec: Mapping[str, Any], status: Mapping[str, Any]) -> bool:
    """Whether deletion waits for a final savepoint: only while a job is live (running, starting or
    restarting) and the spec asks for it, so a pipeline whose job (or operator) is gone is never held
    by a finalizer it cannot clear."""
    deletion = (spec or {}).get("deletion") or {}
    job_state = (status or {}).get("jobState")
    return bool(deletion.get("savepoint", True)) and job_state is not None and job_state not in TERMINAL_STATES
