"""Lifecycle pieces of the reconciler that need no API server: savepoint retention against the
stand-in JobManager (tests/operator/fake_jobmanager.py, a documented mock), the autoscaler's
parallelism over the spec's, and what an observation means for the phase."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from obflow_operator.builders import Owner
from obflow_operator.flink_rest import JobOverview
from obflow_operator.observe import Observation, dispose_old_savepoints, observed_phase
from obflow_operator.reconcile import OperatorSettings, Outcome, desired_spec, take_savepoint
from obflow_operator.spec import parse_spec
from obflow_operator.status import AutoscalerStatus, DataPipelineStatus, Phase, SavepointRecord
from tests.operator.fake_jobmanager import JOB_ID, FakeJobManager
from tests.operator.test_spec_and_crd import MINIMAL, spec_of

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
