"""The operator's Flink REST client against a real standalone Flink cluster (JobManager and TaskManager
processes from the PyFlink wheel, adaptive scheduler) running the real job on DataHub-emulator input:
savepoint while running, per-vertex metrics, checkpoint statistics, in-place rescale, stop with a
savepoint, and a restore at another parallelism, with every change in the output exactly once — also
when the TaskManager is killed in the middle of the in-place rescale.

A TaskManager that dies is restarted, as the kubelet would: PyFlink's thread mode has been seen to
crash the TaskManager JVM natively (SIGSEGV in pthread_mutex_lock) while tasks are cancelled and
redeployed by an in-place rescale. Exactly-once must hold through that too; the count is printed."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from obflow.config import ObflowConfig
from obflow.flink_rest import FlinkRest, FlinkRestError, JobOverview, VertexMetrics
from obflow_dev.emulator import DataHubEmulator
from obflow_dev.sample import change_stream
from obflow_dev.supervise import stop_process_group
from obflow_operator.builders import Owner
from obflow_operator.outcome import OperatorSettings, Outcome
from obflow_operator.reconcile import stop_for_job_change
from obflow_operator.status import DataPipelineStatus, Phase
from obflow_operator.validation import parse_spec
from tests.support.datahub import ACCESS_KEY
from tests.support.job import emulator, job_config, send, wait_for_rows
from tests.support.pipelines import MINIMAL, spec_of
from tests.support.standalone import StandaloneFlink
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow
__all__ = ["emulator"]  # the fixture, imported for this module's tests

RUNNER_ENV = {"OBFLOW_DATAHUB__ACCESS_KEY": ACCESS_KEY}
OWNER = Owner(name="trade", namespace="data", uid="u-1")


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[StandaloneFlink]:
    flink = StandaloneFlink(tmp_path / "flink", slots=4, adaptive=True, extra_env=RUNNER_ENV).start()
    yield flink
    flink.stop()


def running_job(rest: FlinkRest, parallelism: int, timeout: float = 120) -> JobOverview:
    found: list[JobOverview] = []

    def ready() -> bool:
        try:
            job = rest.current_job()
        except FlinkRestError:
            return False
        if job is None or not rest.job(job.jid).all_running(parallelism):
            return False
        found[:] = [job]
        return True

    def vertices() -> str:
        job = rest.current_job()
        if job is None:
            return "no job"
        details = rest.job(job.jid)
        states = ", ".join(f"{v.name[:30]} {v.status} at {v.parallelism}" for v in details.vertices)
        taskmanagers = httpx.get(f"{rest.base_url}/taskmanagers", timeout=5).json()["taskmanagers"]
        slots = [f"{tm['id']} {tm['freeSlots']}/{tm['slotsNumber']} free" for tm in taskmanagers]
        return f"job {job.jid} {details.state}: {states}; TaskManagers: {', '.join(slots) or 'none'}"

    wait_for(ready, timeout, f"every vertex RUNNING at parallelism {parallelism}", interval=0.5, seen=vertices)
    return found[0]


def assert_restored_exactly_once(
    cluster: StandaloneFlink, config: ObflowConfig, path: Path, restore: str, parallelism: int, changes: int
) -> None:
    """Submit the job from ``restore`` at ``parallelism``; every one of ``changes`` lands once."""
    env = {**RUNNER_ENV, "OBFLOW_FLINK__PARALLELISM": str(parallelism)}
    runner = cluster.submit(path, path.parent / "runner-restored.log", env, restore)
    try:
        running_job(FlinkRest(cluster.url), parallelism)
        rows = wait_for_rows(config, changes, runner)
    finally:
        stop_process_group(runner, timeout=60)
    ids = [str(row["_event_id"]) for row in rows]
    assert len(ids) == len(set(ids)) == changes


def _read(rest: FlinkRest, job_id: str, readings: list[VertexMetrics]) -> bool:
    found = rest.reading_stage_metrics(rest.job(job_id))
    readings[:] = [found] if found is not None and found.records_in_per_second > 0 else []
    return bool(readings)


def test_savepoint_metrics_in_place_rescale_stop_and_restore_exactly_once_R6_3_R6_6(
    emulator: DataHubEmulator, tmp_path: Path, cluster: StandaloneFlink
) -> None:
    config, path = job_config(tmp_path, emulator.endpoint, parallelism=2)
    savepoints = Path(config.checkpoint.savepoint_dir).resolve().as_uri()
    events = change_stream(3000, rows=500)
    send(config, events[:1000])
    rest = FlinkRest(cluster.url)
    runner = cluster.submit(path, tmp_path / "runner.log", RUNNER_ENV)
    try:
        job = running_job(rest, 2)
        wait_for(lambda: rest.checkpoints(job.jid).completed >= 1, 60, "a completed checkpoint")
        summary = rest.checkpoints(job.jid)
        assert summary.latest_time_ms and summary.latest_path and summary.latest_duration_ms is not None

        # a savepoint while the job keeps running
        savepoint = rest.trigger_savepoint(job.jid, savepoints, timeout=60)
        assert (Path(savepoint.removeprefix("file:")) / "_metadata").is_file()
        assert rest.job(job.jid).state == "RUNNING"
        # a savepoint past the retained ones is disposed of through the JobManager
        rest.dispose_savepoint(savepoint, timeout=60)
        assert not Path(savepoint.removeprefix("file:")).exists()

        # the reading stage's figures as the autoscaler samples them (Flink fetches them lazily)
        readings: list[VertexMetrics] = []
        wait_for(lambda: _read(rest, job.jid, readings), 60, "the reading stage's first metrics")
        metrics = readings[0]
        # busy time of this light load often measures 0 ms/s in a round: the read rate proves real values
        assert metrics.parallelism == 2 and 0.0 <= metrics.busy_ratio <= 1.0
        assert metrics.records_in_per_second > 0.0 and metrics.lag_seconds >= 0.0

        # in place, through the adaptive scheduler: 2 -> 4 while changes keep arriving (R6.6); the
        # ticker keeps its one subtask
        send(config, events[1000:2000])
        rescale_started = time.monotonic()
        rest.rescale_in_place(job.jid, 4)
        time.sleep(2)  # the tasks are being redeployed at 4 when their TaskManager dies
        cluster.kill_taskmanager()
        running_job(rest, 4, timeout=300)
        in_place_seconds = time.monotonic() - rescale_started
        assert {v.parallelism for v in rest.job(job.jid).vertices if "ticks" in v.name} == {1}
        assert rest.current_job() is not None and rest.current_job().jid == job.jid  # type: ignore[union-attr]

        # stop with a savepoint; the runner ends with the job
        stopped_at = rest.stop_with_savepoint(job.jid, savepoints, timeout=60)
        assert runner.wait(60) == 0
    finally:
        stop_process_group(runner, timeout=60)

    # more changes and a replay arrive while no job runs; restore from the savepoint at 3 on new
    # TaskManagers, as a redeploy gives new pods
    cluster.replace_taskmanagers()
    send(config, events[2000:])
    send(config, events[1500:1700])
    assert_restored_exactly_once(cluster, config, path, stopped_at, parallelism=3, changes=3000)
    print(
        f"in-place rescale 2 -> 4, its TaskManager killed on the way: {in_place_seconds:.1f}s until every vertex "
        "ran at 4; "
        f"TaskManager crashes restarted: {cluster.taskmanager_restarts}"
    )


def test_a_savepoint_that_cannot_be_taken_fails_with_flinks_reason(cluster: StandaloneFlink) -> None:
    rest = FlinkRest(cluster.url, retries=0)
    with pytest.raises(FlinkRestError, match=r"failed: .*FlinkJobNotFoundException: Could not find Flink job"):
        rest.trigger_savepoint("00000000000000000000000000000000", "file:///tmp/none", timeout=5)


def test_a_failed_savepoint_falls_back_to_the_newest_checkpoint_and_nothing_is_lost_R6_3(
    emulator: DataHubEmulator, tmp_path: Path, cluster: StandaloneFlink
) -> None:
    """The reconciler's own rescale step against the real cluster: the savepoint cannot be written
    (its directory is under /proc), so the job is cancelled at its newest retained checkpoint and
    restarts from it at the new parallelism; every change still lands exactly once."""
    config, path = job_config(tmp_path, emulator.endpoint, parallelism=2)
    events = change_stream(2000, rows=400)
    send(config, events[:1000])
    rest = FlinkRest(cluster.url)
    runner = cluster.submit(path, tmp_path / "runner.log", RUNNER_ENV)
    unwritable = {"savepointDir": "file:///proc/obflow-savepoints"}
    old = parse_spec(spec_of(MINIMAL, storage=unwritable, flink__parallelism=2))
    new = parse_spec(spec_of(MINIMAL, storage=unwritable, flink__parallelism=3))
    outcome = Outcome(DataPipelineStatus(phase=Phase.RUNNING, job_state="RUNNING"))
    try:
        job = running_job(rest, 2)
        wait_for(lambda: rest.checkpoints(job.jid).completed >= 1, 60, "a completed checkpoint")
        stop_for_job_change(OperatorSettings(rest_url_template=cluster.url), OWNER, old, new, outcome)
        runner.wait(60)
    finally:
        stop_process_group(runner, timeout=60)
    status = outcome.status
    assert [e.reason for e in outcome.events] == ["Rescaling", "SavepointFailed", "JobStopped"]
    assert status.phase == Phase.RESCALING and status.job_generation == 1 and status.job_state == "CANCELED"
    assert status.restore_path and "/chk-" in status.restore_path  # the newest retained checkpoint
    assert rest.current_job().state == "CANCELED"  # type: ignore[union-attr]

    cluster.replace_taskmanagers()  # the redeploy's new pods
    send(config, events[1000:])
    assert_restored_exactly_once(cluster, config, path, status.restore_path, parallelism=3, changes=2000)
