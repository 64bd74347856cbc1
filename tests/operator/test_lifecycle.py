"""Lifecycle pieces of the reconciler that need no API server: savepoint retention against the
stand-in JobManager (tests/support/fake_jobmanager.py, a documented mock), the autoscaler's
parallelism over the spec's, and what an observation means for the phase."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import pytest

from obflow.flink_rest import FlinkRestError, JobOverview
from obflow_operator.actions import dispose_old_savepoints, take_savepoint
from obflow_operator.autoscaler import desired_spec
from obflow_operator.builders import Owner
from obflow_operator.observe import Observation, observed_phase
from obflow_operator.outcome import OperatorSettings, Outcome
from obflow_operator.reconcile import final_savepoint, is_stored_spec, needs_final_savepoint, spec_json
from obflow_operator.status import AutoscalerStatus, DataPipelineStatus, Phase, SavepointRecord
from obflow_operator.validation import parse_spec
from tests.support.fake_jobmanager import JOB_ID, FakeJobManager
from tests.support.pipelines import MINIMAL, spec_of

OWNER = Owner(name="trade", namespace="data", uid="u-1")


@pytest.fixture
def fake() -> Iterator[FakeJobManager]:
    jobmanager = FakeJobManager()
    yield jobmanager
    jobmanager.close()


def history(count: int) -> list[SavepointRecord]:
    """Newest first, as status keeps them."""
    return [SavepointRecord(path=f"file:///sp/savepoint-{i}", time="t", reason="rescale") for i in range(count, 0, -1)]


def test_savepoints_past_the_retained_are_disposed_of_but_never_the_restore_point(fake: FakeJobManager) -> None:
    spec = parse_spec(spec_of(MINIMAL, flink__savepoint={"retained": 2}))
    status = DataPipelineStatus(savepoints=history(5), restore_path="file:///sp/savepoint-1")
    outcome = Outcome(status)
    dispose_old_savepoints(OperatorSettings(rest_url_template=fake.url), OWNER, spec, outcome)
    assert fake.disposed == ["file:///sp/savepoint-3", "file:///sp/savepoint-2"]
    assert [r.path for r in status.savepoints] == [
        "file:///sp/savepoint-5",
        "file:///sp/savepoint-4",
        "file:///sp/savepoint-1",  # the job restores from it: kept
    ]
    assert [e.reason for e in outcome.events] == ["SavepointsDisposed"] and outcome.acted

    again = Outcome(status)
    dispose_old_savepoints(OperatorSettings(rest_url_template=fake.url), OWNER, spec, again)
    assert again.events == [] and len(fake.disposed) == 2  # nothing more to do


def test_without_dispose_older_savepoints_only_leave_the_history(fake: FakeJobManager) -> None:
    spec = parse_spec(spec_of(MINIMAL, flink__savepoint={"retained": 1, "dispose": False}))
    status = DataPipelineStatus(savepoints=history(3))
    outcome = Outcome(status)
    dispose_old_savepoints(OperatorSettings(rest_url_template=fake.url), OWNER, spec, outcome)
    assert fake.disposed == [] and [r.path for r in status.savepoints] == ["file:///sp/savepoint-3"]
    assert "forgot (flink.savepoint.dispose: false) 2" in outcome.events[0].message


def test_the_autoscalers_parallelism_holds_until_the_user_sets_another() -> None:
    spec = parse_spec(spec_of(MINIMAL, autoscaler={"enabled": True}, flink__parallelism=2))
    chosen = DataPipelineStatus(autoscaler=AutoscalerStatus(parallelism=5, spec_parallelism=2))
    assert desired_spec(spec, chosen).flink.parallelism == 5
    user_changed = parse_spec(spec_of(MINIMAL, autoscaler={"enabled": True}, flink__parallelism=3))
    assert desired_spec(user_changed, chosen).flink.parallelism == 3
    disabled = parse_spec(spec_of(MINIMAL, flink__parallelism=2))
    assert desired_spec(disabled, chosen).flink.parallelism == 2


def test_a_job_that_answers_keeps_the_pipeline_running_while_the_deployment_catches_up() -> None:
    job = JobOverview(jid=JOB_ID, name="obflow", state="RUNNING", **{"start-time": 1})
    answering = Observation(jobmanagers_available=0, taskmanagers_available=1, capture_ready=1, job=job)
    assert observed_phase(Phase.RUNNING, answering) == (None, "")
    silent = Observation(jobmanagers_available=0, taskmanagers_available=1, capture_ready=1, job=None)
    assert observed_phase(Phase.RUNNING, silent)[0] == Phase.DEPLOYING


def test_savepoints_are_bounded_by_their_timeout_and_the_final_one_by_the_deletion_timeout(
    fake: FakeJobManager,
) -> None:
    fake.savepoint_seconds = 2.5  # a slow savepoint
    settings = OperatorSettings(rest_url_template=fake.url)
    spec = parse_spec(spec_of(MINIMAL, flink__savepoint={"timeout": "1s"}, deletion={"timeout": "30s"}))
    path, what = take_savepoint(settings, OWNER, spec, DataPipelineStatus(), "rescale")
    assert path is None and what.endswith("not complete after 1s")
    fake.state = "RUNNING"  # a failed stop-with-savepoint leaves the job running
    path, what = take_savepoint(settings, OWNER, spec, DataPipelineStatus(), "delete")
    assert path is not None and what.startswith(f"job {JOB_ID} stopped with savepoint")


def test_the_final_savepoint_waits_for_a_restarting_job_and_a_jobmanager_in_an_election(
    fake: FakeJobManager,
) -> None:
    """Deletion's one chance at a savepoint is not lost to a job that is restarting, nor to a JobManager
    answering 503 for a few seconds; other savepoints (a rescale's) fall back at once instead."""
    settings = OperatorSettings(rest_url_template=fake.url)
    spec = parse_spec(spec_of(MINIMAL, deletion={"timeout": "60s"}))
    fake.restarting_until = time.monotonic() + 4
    path, what = take_savepoint(settings, OWNER, spec, DataPipelineStatus(), "rescale")
    assert path is None and what == f"job {JOB_ID} is RESTARTING, not RUNNING"

    started = time.monotonic()
    path, what = take_savepoint(settings, OWNER, spec, DataPipelineStatus(), "delete", patient=True)
    assert path is not None and time.monotonic() - started >= 3, what
    assert len(fake.stop_requests) == 1

    fake.state, fake.overview_error = "RUNNING", 503
    threading.Timer(4, lambda: setattr(fake, "overview_error", None)).start()
    path, what = take_savepoint(settings, OWNER, spec, DataPipelineStatus(), "delete", patient=True)
    assert path is not None, what
    assert len(fake.stop_requests) == 2


def test_the_final_savepoint_gives_up_at_once_when_no_jobmanager_is_there_and_names_the_checkpoint(
    fake: FakeJobManager,
) -> None:
    settings = OperatorSettings(rest_url_template=fake.url)
    body = {
        "metadata": {"name": OWNER.name, "namespace": OWNER.namespace, "uid": OWNER.uid},
        "spec": spec_of(MINIMAL, deletion={"timeout": "5m"}),
        "status": {"phase": "Running", "jobState": "RUNNING", "lastCheckpointPath": "file:///c/chk-6"},
    }
    fake.close()  # nothing listens any more
    started = time.monotonic()
    outcome = final_savepoint(settings, body)
    assert time.monotonic() - started < 10
    (warning,) = [e for e in outcome.events if e.type == "Warning"]
    assert warning.reason == "FinalSavepointFailed"
    assert "restore from retained checkpoint file:///c/chk-6" in warning.message
    assert "retained checkpoints stay in file:///data/trade/checkpoints" in warning.message


def test_a_jobmanager_that_does_not_answer_leaves_the_job_state_as_last_seen() -> None:
    """One failed REST call must not forget a running job: with it would go the final-savepoint
    finalizer, and a spec change would skip stopping the job at a restorable point."""
    running = DataPipelineStatus(phase=Phase.RUNNING, job_state="RUNNING")
    silent = Observation(2, 1, 1, job=None, unanswered=FlinkRestError("GET /jobs/overview: 503", reachable=True))
    assert not silent.job_state_known()
    assert needs_final_savepoint({}, running.model_dump(by_alias=True))
    gone = Observation(2, 1, 1, job=None, unanswered=FlinkRestError("connection refused", reachable=False))
    assert gone.job_state_known()  # nothing listens: no JobManager, so no job
    answered = Observation(2, 1, 1, job=None)
    assert answered.job_state_known()
    for state, held in (("RESTARTING", True), ("INITIALIZING", True), ("FINISHED", False), (None, False)):
        assert needs_final_savepoint({}, {"jobState": state}) is held, state
    assert not needs_final_savepoint({"deletion": {"savepoint": False}}, {"jobState": "RUNNING"})


def test_a_rolled_back_spec_stays_recognised_across_an_operator_upgrade_that_adds_fields() -> None:
    """status.rolledBackSpec is JSON an older operator wrote, without the fields added since: it is still
    the spec it was, and a different one is not."""
    spec = parse_spec(spec_of(MINIMAL, flink__parallelism=4))
    stored = json.loads(spec_json(spec))
    del stored["source"]["heartbeatInterval"], stored["datahub"]["retry"], stored["flink"]["checkpoint"]
    older_operators = json.dumps(stored)
    assert older_operators != spec_json(spec)
    assert is_stored_spec(older_operators, spec)
    assert not is_stored_spec(older_operators, parse_spec(spec_of(MINIMAL, flink__parallelism=2)))
    assert not is_stored_spec(None, spec)
    assert not is_stored_spec("not json", spec)
    assert not is_stored_spec('{"source": 1}', spec)
