"""What the operator does for a ``DataPipeline``, apart from kopf: reconcile (spec → children, stopping a
running job at a restorable point, or rescaling it in place, first when a change needs it),
suspend/resume, the final savepoint, and what an observation calls for (:func:`follow_up`: a rollback,
savepoint disposal, an autoscaler rescale). Handlers in :mod:`obflow_operator.handlers` and the observer
call these and write the returned status and events; observing itself is :mod:`obflow_operator.observe`
(read only), and the calls to the job's JobManager are :mod:`obflow_operator.actions`.

Everything that must survive an operator restart lives in the resource's status (phase, restore
path, savepoints); each function can run again after a crash and converges.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import replace
from typing import Any

from kubernetes.dynamic import DynamicClient

from obflow.flink_rest import TERMINAL_STATES, FlinkRestError, VertexMetrics
from obflow_operator import metrics
from obflow_operator.actions import (
    cancel_at_latest_checkpoint,
    dispose_old_savepoints,
    end_job_at_newest_restore_point,
    newest_checkpoint,
    rescale_in_place,
    take_savepoint,
)
from obflow_operator.apply import ApplyResult, apply_children, delete_unbuilt_children, patch_status
from obflow_operator.autoscaler import AutoscalerState, Sample, SampleHistory, decide, desired_spec, limits_for
from obflow_operator.builders import (
    NETWORK_POLICY_API,
    BuildOptions,
    Owner,
    build_children,
    job_id_for,
    task_managers_for,
)
from obflow_operator.changes import Change, classify, required_actions
from obflow_operator.observe import Observation, Observed, check_secrets
from obflow_operator.outcome import Event, OperatorSettings, Outcome, load_status, owner_of
from obflow_operator.spec import DataPipelineSpec, SpecError, storage_paths, with_parallelism
from obflow_operator.status import (
    DataPipelineStatus,
    Phase,
    with_condition,
)
from obflow_operator.validation import parse_spec, pipeline_name_problems

ROLLED_BACK_HELD = "the spec that was rolled back stays unapplied until it changes (see the RolledBack event)"
WINDOW = "stabilization_window"  # the autoscaler's; samples are kept for two of them
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


def spec_json(spec: DataPipelineSpec) -> str:
    return json.dumps(spec.model_dump(by_alias=True, mode="json"), sort_keys=True)


def is_stored_spec(stored: str | None, spec: DataPipelineSpec) -> bool:
    """Whether ``stored``, a spec kept in status as JSON (perhaps by an older operator whose model had fewer
    fields), is ``spec``: compared as models, so a field added since, at its default, does not tell them apart."""
    if stored is None:
        return False
    try:
        return parse_spec(json.loads(stored)) == spec
    except (SpecError, ValueError):  # a spec this operator would refuse is not the one it is given
        return False


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
    held_back = is_stored_spec(status.rolled_back_spec, spec) and status.last_stable_spec is not None
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
        problem = rescale_in_place(settings, owner, spec.flink.parallelism)
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
    checkpoint = cancel_at_latest_checkpoint(settings, owner, status, keep_state=mode != "stateless")
    if checkpoint is None and mode != "stateless":
        raise UpgradeBlockedError(
            f"{fields} not rolled out: no savepoint and no retained checkpoint to restart from, and the job "
            "keeps running; wait for a checkpoint, or set flink.upgradeMode: stateless to start empty"
        )
    restored = f"restarting from checkpoint {checkpoint}" if checkpoint else "restarting with empty state (stateless)"
    outcome.events.append(Event("Normal", "JobStopped", restored))


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
    rolled_back = decision.action != "none" and is_stored_spec(
        status.rolled_back_spec, with_parallelism(spec, decision.target)
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
    restore = end_job_at_newest_restore_point(settings, owner, stable, status)
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


def follow_up(
    api: DynamicClient,
    settings: OperatorSettings,
    body: Mapping[str, Any],
    observed: Observed,
    history: SampleHistory | None = None,
    clock: float | None = None,
) -> Outcome:
    """What an observation calls for: a rollout that overran ``flink.rolloutTimeout`` is rolled back; a
    running job's savepoints past the retained ones are disposed of and, given a sample ``history``, the
    autoscaler decides (a rescale is :func:`reconcile` of the spec at its parallelism)."""
    outcome, seen, spec = observed.outcome, observed.seen, observed.spec
    if seen is None or spec is None:
        return outcome
    status = outcome.status
    owner = owner_of(body["metadata"])
    clock = time.time() if clock is None else clock
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
