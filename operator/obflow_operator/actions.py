"""What the operator does to a pipeline's job through its JobManager's REST API: stop it with a savepoint,
cancel it at its newest retained checkpoint, rescale it in place, end it at its newest restore point, and
dispose of savepoints past the retained ones. The reconciler (obflow_operator.reconcile) drives them;
each records what it did in the status it is given.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress

from obflow.flink_rest import TERMINAL_STATES, FlinkRest, FlinkRestError, JobOverview
from obflow_operator.builders import Owner
from obflow_operator.outcome import Event, OperatorSettings, Outcome
from obflow_operator.spec import DataPipelineSpec, storage_paths
from obflow_operator.status import DataPipelineStatus, SavepointRecord, now

CANCEL_TIMEOUT = 120.0  # seconds for a cancelled job's tasks to end
SAVEPOINT_RETRY_PAUSE = 2.0  # seconds between tries of a patient savepoint
SAVEPOINT_RECORDS_MAX = 100  # the history past spec.flink.savepoint.retained is disposed of while a job runs


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


def rescale_in_place(settings: OperatorSettings, owner: Owner, parallelism: int) -> str | None:
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


def cancel_at_latest_checkpoint(
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


def end_job_at_newest_restore_point(
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
