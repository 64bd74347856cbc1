"""The Flink job on a real PyFlink mini-cluster (Java 17), reading from the DataHub emulator."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import orjson
import pytest

from obflow.config import ObflowConfig
from obflow.datahub.client import make_client
from obflow.deadletter import DeadLetter, DeadLetterQueue
from obflow.net import free_port
from obflow_dev.emulator import DataHubEmulator
from obflow_dev.sample import change_stream
from tests.support.datahub import ACCESS_KEY
from tests.support.exported import check_recorded_flink_metrics
from tests.support.job import (
    emulator,
    job_config,
    output_rows,
    scrape,
    send,
    wait_for_rows,
)
from tests.support.waiting import wait_for

__all__ = ["emulator"]  # the fixture, imported for this module's tests

pytestmark = pytest.mark.slow


def run_job(
    config_path: Path, tmp_path: Path, env: dict[str, str] | None = None, args: list[str] | None = None
) -> subprocess.Popen[bytes]:
    full_env = {
        **os.environ,
        "OBFLOW_DATAHUB__ACCESS_KEY": ACCESS_KEY,
        "FLINK_LOG_DIR": str(tmp_path / "flink-log"),  # Flink's own log, per test
        **(env or {}),
    }
    log = (tmp_path / "job.log").open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "obflow.cli", "job", "run", "--config", str(config_path), *(args or [])],
        stdout=log, stderr=log, env=full_env, start_new_session=True,
    )  # fmt: skip


def run_until_stopped_with_savepoint(config: ObflowConfig, path: Path, tmp_path: Path, rows: int) -> str:
    """Run the job until ``rows`` rows are committed, stop it with a savepoint, and return the savepoint."""
    proc = run_job(path, tmp_path)
    try:
        wait_for_rows(config, rows, proc)
    finally:
        stop(proc)
    assert proc.returncode == 0
    savepoint = (tmp_path / "sp-out" / "LATEST").read_text()
    assert savepoint
    return savepoint


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the runner alone (as Kubernetes sends it): it stops the job with a savepoint."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # the gateway JVM, if it outlived the runner


def test_exactly_once_in_row_order_despite_replays_and_a_failure_R2_1_R2_3_R4_1_R4_2_R9_2_R9_3_R9_4(
    emulator: DataHubEmulator, tmp_path: Path
) -> None:
    config, path = job_config(tmp_path, emulator.endpoint, backend="rocksdb")  # restored from RocksDB state
    events = change_stream(3000, rows=400)
    send(config, events)
    send(config, events[:500])  # a capture replay: same changes, same event ids
    proc = run_job(path, tmp_path, {"OBFLOW_FAULT": f"records:fail:{tmp_path / 'failed'}:1500"})
    try:
        rows = wait_for_rows(config, 3000, proc)
        assert list((tmp_path / "ck-out").glob("*/chk-*")), "checkpoints in checkpoint.dir (R4.2)"
    finally:
        stop(proc)
    assert (tmp_path / "failed").exists(), "the injected task failure happened"
    ids = [str(row["_event_id"]) for row in rows]
    assert len(ids) == len(set(ids)) == 3000
    assert set(ids) == {e.event_id for e in events}
    assert_per_row_commit_order(config)
    log = (tmp_path / "job.log").read_text()
    recovered = re.search(r"job is RESTARTING.*\n(?:.*\n)*?.*job is RUNNING", log)
    assert recovered, "the runner saw the job restart and run again (R4.1)"
    flink_log = "\n".join(f.read_text(errors="replace") for f in (tmp_path / "flink-log").glob("*.log"))
    assert "EmbeddedRocksDBStateBackend" in flink_log  # the configured state backend (R4.2)


def assert_per_row_commit_order(config: ObflowConfig) -> None:
    """Within every output file, each row's changes appear in commit order (R2.3, R9.4)."""
    for file in Path(config.output.path).rglob("*.jsonl"):
        if file.name.startswith("."):
            continue
        by_row: dict[int, list[int]] = {}
        for line in file.read_bytes().splitlines():
            row = orjson.loads(line)
            by_row.setdefault(row["ID"], []).append(int(row["_position"]))
        assert all(positions == sorted(positions) for positions in by_row.values()), file


def test_stop_with_savepoint_and_restart_at_parallelism_10_exactly_once_R2_2_R2_6_R6_3(
    emulator: DataHubEmulator, tmp_path: Path
) -> None:
    config, path = job_config(tmp_path, emulator.endpoint, parallelism=2)
    events = change_stream(3000, rows=500)
    send(config, events[:1500])
    savepoint = run_until_stopped_with_savepoint(config, path, tmp_path, 1500)
    # more changes (and a replay of old ones) arrive while the job is down
    send(config, events[1500:])
    send(config, events[1000:1200])
    proc = run_job(path, tmp_path, {"OBFLOW_FLINK__PARALLELISM": "10"}, ["--from-savepoint", savepoint])
    try:
        rows = wait_for_rows(config, 3000, proc)
    finally:
        stop(proc)
    ids = [str(row["_event_id"]) for row in rows]
    assert len(ids) == len(set(ids)) == 3000
    log = (tmp_path / "job.log").read_text()
    assert "parallelism=2 restored_from=None" in log
    assert f"parallelism=10 restored_from={savepoint}" in log
    shards = {int(m[1]) for f in Path(config.output.path).rglob("*.jsonl") if (m := re.search(r"-s(\d+)-", f.name))}
    assert shards == {0, 1, 2, 3}, f"files of shards {shards}"


def crashed(proc: subprocess.Popen[bytes], marker: Path, timeout: float = 240) -> None:
    """Waits until the job process, told to crash at a point (obflow.faults), has died there."""
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        stop(proc)
        raise AssertionError(
            f"the job did not crash within {timeout:.0f}s (marker {marker}: {marker.exists()})"
        ) from None
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # what is left of its process group
    assert marker.exists() and proc.returncode != 0, f"exit {proc.returncode}, marker {marker.exists()}"


@pytest.mark.parametrize("point", ["file.written", "file.renamed"])
def test_the_job_killed_in_each_window_of_a_commit_loses_and_doubles_nothing_R4_1_R9_2(
    emulator: DataHubEmulator, tmp_path: Path, point: str
) -> None:
    """The whole job process dies (exit 137, as after a SIGKILL) right after a file was written and
    before its rename, or after the rename before the shard's positions move past it; started again,
    the job restores from its latest checkpoint and every change is in the files once."""
    config, path = job_config(tmp_path, emulator.endpoint, max_size="32KB")
    events = change_stream(6000, rows=500)
    send(config, events)
    marker = tmp_path / "crashed"
    # a file rolls after the fetch that filled it: each shard's 1,500 changes come in two fetches
    crashed(run_job(path, tmp_path, {"OBFLOW_FAULT": f"{point}:crash:{marker}:2"}), marker)
    assert output_rows(config), "files were committed before the crash"
    proc = run_job(path, tmp_path)
    try:
        rows = wait_for_rows(config, 6000, proc)
    finally:
        stop(proc)
    ids = [str(row["_event_id"]) for row in rows]
    assert len(ids) == len(set(ids)) == 6000
    assert "restored_from=" in (tmp_path / "job.log").read_text().split("job.started")[-1]


def test_a_crash_right_after_a_savepoint_rescale_loses_and_doubles_nothing_R6_3_R9_2(
    emulator: DataHubEmulator, tmp_path: Path
) -> None:
    """Stopped with a savepoint at parallelism 2, restored at 3 (the shards move to other subtasks), and
    killed there in the middle of a commit; started again, every change is in the files once."""
    config, path = job_config(tmp_path, emulator.endpoint, parallelism=2, max_size="32KB")
    events = change_stream(6000, rows=500)
    send(config, events[:1000])
    savepoint = run_until_stopped_with_savepoint(config, path, tmp_path, 1000)
    send(config, events[1000:])
    marker = tmp_path / "crashed"
    env = {"OBFLOW_FLINK__PARALLELISM": "3", "OBFLOW_FAULT": f"file.renamed:crash:{marker}:2"}
    crashed(run_job(path, tmp_path, env, ["--from-savepoint", savepoint]), marker)
    proc = run_job(path, tmp_path, {"OBFLOW_FLINK__PARALLELISM": "3"})
    try:
        rows = wait_for_rows(config, 6000, proc)
    finally:
        stop(proc)
    ids = [str(row["_event_id"]) for row in rows]
    assert len(ids) == len(set(ids)) == 6000


def test_json_parquet_and_csv_hold_identical_rows_with_timestamp_and_partition_in_names_R3_1_R3_2_R3_3_R3_6(
    emulator: DataHubEmulator, tmp_path: Path
) -> None:
    events = change_stream(1200, rows=200)
    by_format = {}
    for fmt in ("json", "parquet", "csv"):
        config, path = job_config(tmp_path, emulator.endpoint, fmt=fmt, out=f"out-{fmt}")
        if fmt == "json":
            send(config, events)
        proc = run_job(path, tmp_path)
        try:
            by_format[fmt] = sorted(wait_for_rows(config, 1200, proc), key=lambda r: str(r["_event_id"]))
        finally:
            stop(proc)
        root = Path(config.output.path)
        files = [f.relative_to(root / "TRADE.ORDERS") for f in (root / "TRADE.ORDERS").rglob("*") if f.is_file()]
        suffix = {"json": "jsonl", "parquet": "parquet", "csv": "csv"}[fmt]
        name = rf"2026-11-26/09/TRADE\.ORDERS-20261126T09\d{{7}}Z-s[0-3]-\d{{12}}\.{suffix}"
        assert files and all(re.fullmatch(name, str(f)) for f in files), files
    assert len(by_format["json"]) == 1200
    assert by_format["json"] == by_format["parquet"] == by_format["csv"]


def test_files_roll_at_the_size_and_span_limits_R3_4_R3_5(emulator: DataHubEmulator, tmp_path: Path) -> None:
    config, path = job_config(tmp_path, emulator.endpoint, parallelism=1, max_size="64KB", max_span="3s")
    events = change_stream(1600, rows=1600)
    payload_bytes = max(len(e.to_json()) + 1 for e in events)
    proc = run_job(path, tmp_path)
    try:
        wait_for(lambda: "job is RUNNING" in (tmp_path / "job.log").read_text(), 90, "the job to run")
        for start in range(0, 1200, 100):  # a slow trickle: parts fill up to the size limit
            send(config, events[start : start + 100])
            time.sleep(0.3)
        wait_for_rows(config, 1200, proc)
        before_pause = set(Path(config.output.path).rglob("*.jsonl"))
        time.sleep(4)  # longer than max_span, with nothing arriving
        send(config, events[1200:])
        wait_for_rows(config, 1600, proc)
    finally:
        stop(proc)
    files = list(Path(config.output.path).rglob("*.jsonl"))
    sizes = [f.stat().st_size for f in before_pause]
    # a file rolls once it has reached max_size, so each holds at most max_size plus what one poll
    # brings (a trickle of 100 changes) plus one flushed buffer (max_size / 8)
    slack = 100 * payload_bytes + 64 * 1024 // 8
    assert len(sizes) >= 2 and len(sizes) >= sum(sizes) // (64 * 1024 + slack)
    assert all(size < 64 * 1024 + slack for size in sizes), sizes
    # the changes after the pause are in files of their own: the open part rolled at max_span
    later = {e.event_id for e in events[1200:]}
    for file in files:
        ids = {orjson.loads(line)["_event_id"] for line in file.read_bytes().splitlines()}
        assert ids <= later or not ids & later, f"{file} mixes changes from before and after the pause"


def test_bad_records_and_failed_writes_go_to_the_dead_letter_queue_while_good_ones_flow_R2_7_R3_7_R3_8(
    emulator: DataHubEmulator, tmp_path: Path
) -> None:
    from datahub.models import TupleRecord

    from obflow.datahub.client import change_topic_schema

    config, path = job_config(tmp_path, emulator.endpoint)
    good = change_stream(600, rows=600)
    send(config, good[:250])
    send(config, change_stream(3, rows=3, table="NOT_CAPTURED"))
    client = make_client(config.datahub)
    broken = []
    for i, payload in enumerate(["{not json", good[0].to_json().decode().replace('"AMOUNT":"', '"AMOUNT":"x')]):
        values = good[0].to_datahub_values()
        values[0], values[-1] = f"{i:032x}", payload
        record = TupleRecord(schema=change_topic_schema(), values=values)
        record.shard_id = "1"
        broken.append(record)
    assert client.put_records(config.datahub.project, config.datahub.topic, broken).failed_record_count == 0
    send(config, good[250:500])
    # the table's output folder cannot be created: every write of ORDERS fails (a real OSError)
    output = Path(config.output.path)
    output.mkdir(parents=True)
    (output / "TRADE.ORDERS").write_text("in the way")
    proc = run_job(path, tmp_path)
    try:
        wait_for(lambda: len(list(DeadLetterQueue(config).read())) >= 505, 120, "505 dead letters")
        assert proc.poll() is None, "the job keeps running"
        (output / "TRADE.ORDERS").unlink()
        send(config, good[500:])
        rows = wait_for_rows(config, 100, proc)
    finally:
        stop(proc)
    letters = list(DeadLetterQueue(config).read())
    by_stage: dict[str, list[DeadLetter]] = {}
    for letter in letters:
        by_stage.setdefault(letter.stage, []).append(letter)
    assert [d.error for d in by_stage["route"]] == [
        "table TRADE.NOT_CAPTURED is not in source.tables, and its changes do not carry its columns"
    ] * 3
    assert by_stage["decode"][0].payload == "{not json"
    assert by_stage["map"][0].error.startswith("column AMOUNT (NUMBER(12,2)) of after:")
    # every good change of the blocked period is in the queue with its original payload (R3.8) ...
    assert sorted(d.event_id for d in by_stage["write"]) == sorted(e.event_id for e in good[:500])
    assert all(d.payload and d.time and "failed 4 times" in d.error for d in by_stage["write"])
    # ... and the job kept going: later changes are in files (R3.7: retried, then moved on)
    assert sorted(str(r["_event_id"]) for r in rows) == sorted(e.event_id for e in good[500:])
    flink_log = "\n".join(f.read_text(errors="replace") for f in (tmp_path / "flink-log").glob("*.log"))
    assert "(attempt 4 of 4)" in flink_log  # the TaskManager's log: the shards' workers run there


def test_the_dead_letter_queue_is_readable_with_one_command_R2_7(emulator: DataHubEmulator, tmp_path: Path) -> None:
    from tests.support.repo import run_cli

    config, path = job_config(tmp_path, emulator.endpoint)
    DeadLetterQueue(config).send([DeadLetter("{bad", "payload is not JSON", "decode", "TRADE.ORDERS", "e1")])
    result = run_cli("dlq", "read", "--config", str(path), env={"OBFLOW_DATAHUB__ACCESS_KEY": ACCESS_KEY})
    assert result.returncode == 0, result.stderr
    (line,) = result.stdout.splitlines()
    assert DeadLetter.from_json(line).error == "payload is not JSON"
    assert "1 dead letters" in result.stderr


def test_failed_checkpoints_are_tolerated_and_processing_continues_R2_5(
    emulator: DataHubEmulator, tmp_path: Path
) -> None:
    config, path = job_config(tmp_path, emulator.endpoint)
    events = change_stream(2000, rows=300)
    send(config, events[:1000])
    proc = run_job(path, tmp_path)
    try:
        wait_for_rows(config, 1000, proc)
        (job_dir,) = [d for d in (tmp_path / "ck-out").iterdir() if d.is_dir()]
        # root ignores permissions, so make the job's checkpoint directory a plain file for a while:
        # every checkpoint in that window fails to write
        job_dir.rename(tmp_path / "ck-away")
        job_dir.write_text("not a directory")
        send(config, events[1000:1500])
        time.sleep(5)
        assert proc.poll() is None, "the job kept running through failed checkpoints"
        job_dir.unlink()
        (tmp_path / "ck-away").rename(job_dir)
        send(config, events[1500:])
        rows = wait_for_rows(config, 2000, proc)
    finally:
        stop(proc)
    ids = [str(row["_event_id"]) for row in rows]
    assert len(ids) == len(set(ids)) == 2000
    flink_log = "\n".join(f.read_text(errors="replace") for f in (tmp_path / "flink-log").glob("*.log"))
    assert "Failed to trigger or complete checkpoint" in flink_log  # the failure is logged
    assert "to RESTARTING" not in flink_log  # processing continued: the job was never restarted


def test_the_jobs_metrics_reach_prometheus_R7_1_R7_2_R7_3(emulator: DataHubEmulator, tmp_path: Path) -> None:
    config, path = job_config(tmp_path, emulator.endpoint)
    flink_port, runner_port = free_port(), free_port()
    env = {"OBFLOW_FLINK__METRICS_PORT": str(flink_port), "OBFLOW_OUTPUT__METRICS_PORT": str(runner_port)}
    events = change_stream(2000, rows=2000, commit_ts_ms=int(time.time() * 1000))
    proc = run_job(path, tmp_path, env)
    try:
        wait_for(lambda: "job is RUNNING" in (tmp_path / "job.log").read_text(), 90, "the job to run")
        assert httpx.get(f"http://127.0.0.1:{runner_port}/readyz", timeout=5).text == "RUNNING\n"
        send(config, events)
        send(config, events[:200])  # replays
        send(config, change_stream(3, rows=3, table="NOT_CAPTURED"))
        wait_for_rows(config, 2000, proc)
        time.sleep(6)  # Flink updates meters every 5 s
        flink = scrape(flink_port)
    finally:
        stop(proc)
    prefix = "flink_taskmanager_job_task_operator_obflow_"

    def total(name: str) -> float:
        return sum(value for _, value in flink[prefix + name])

    assert total("records_in") > 0  # per second, over the last minute (R7.2)
    assert total("duplicates_dropped") == 200
    stages: dict[str, float] = {}
    for labels, value in flink[prefix + "stage_dead_letters"]:  # one series per subtask
        stages[labels["stage"]] = stages.get(labels["stage"], 0.0) + value
    assert stages == {"route": 3}
    owned: dict[str, set[str]] = {}
    for labels, _ in flink[prefix + "shard_lag_ms"]:
        owned.setdefault(labels["subtask_index"], set()).add(labels["shard"])
    assert owned == {"0": {"0", "2"}, "1": {"1", "3"}}  # 4 shards over 2 subtasks: 2 and 2
    watermarks = [v for labels, v in flink["flink_taskmanager_job_task_operator_currentOutputWatermark"]
                  if labels["operator_name"].startswith("event_time")]  # fmt: skip
    assert watermarks and min(watermarks) >= events[0].source.commit_ts_ms - 10_000  # event time advances
    assert "flink_jobmanager_job_lastCheckpointDuration" in flink
    # commit in the database -> row in a committed output file (R7.3), as a histogram
    count, latency_ms = total("end_to_end_latency_seconds_count"), total("end_to_end_latency_seconds_sum_ms")
    assert count == 2000 and 0 < latency_ms / count < 60_000
    buckets: dict[str, float] = {}
    for labels, value in flink[prefix + "end_to_end_latency_seconds_le_bucket"]:
        buckets[labels["le"]] = buckets.get(labels["le"], 0.0) + value
    assert buckets["Inf"] == 2000 and buckets["60"] == 2000 and buckets["1"] <= buckets["5"], sorted(buckets)
    # Flink's reporter writes label values with letters, digits, ":" and "_" only
    assert {labels["table"] for labels, _ in flink[prefix + "table_output_rows"]} == {"TRADE_ORDERS"}
    assert total("table_output_rows") == 2000 and total("table_output_files") >= 4
    assert total("output_last_commit_timestamp_seconds") > time.time() - 120
    check_recorded_flink_metrics(flink)  # what the dashboards and alert rules may use


def test_runs_with_128_parallel_tasks_exactly_once_R6_5(emulator: DataHubEmulator, tmp_path: Path) -> None:
    """128 subtasks in one mini-cluster TaskManager (thread mode), one shard each to read."""
    config, path = job_config(tmp_path, emulator.endpoint, parallelism=128, shards=128, poll_interval="1s")
    events = change_stream(4000, rows=4000)
    send(config, events)
    proc = run_job(path, tmp_path)
    try:
        rows = wait_for_rows(config, 4000, proc, timeout=300)
    finally:
        stop(proc)
    assert "parallelism=128" in (tmp_path / "job.log").read_text()
    ids = [str(row["_event_id"]) for row in rows]
    assert len(ids) == len(set(ids)) == 4000
    shards = {int(m[1]) for f in Path(config.output.path).rglob("*.jsonl") if (m := re.search(r"-s(\d+)-", f.name))}
    assert len(shards) >= 100, f"only shards {sorted(shards)} have files"  # 4000 changes over 128 shards
