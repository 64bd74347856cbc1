"""The Flink job on a real PyFlink mini-cluster (Java 17), reading from the DataHub emulator."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest
import yaml

from flink_job.convert import SCHEMA, rows_of
from obflow.config import ObflowConfig
from obflow.datahub.client import ensure_change_topic, make_client
from obflow.datahub.emulator import DataHubEmulator
from obflow.datahub.producer import Producer
from obflow.events import ChangeEvent
from obflow.sample import change_stream
from tests.datahub.conftest import ACCESS_ID, ACCESS_KEY

pytestmark = pytest.mark.slow


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[DataHubEmulator]:
    emu = DataHubEmulator(str(tmp_path / "datahub"), access_id=ACCESS_ID, access_key=ACCESS_KEY).start()
    yield emu
    emu.stop()


def job_config(
    tmp_path: Path, endpoint: str, parallelism: int = 2, fmt: str = "json", out: str = "out"
) -> tuple[ObflowConfig, Path]:
    data: dict[str, Any] = {
        "source": {"database": "TRADE", "tables": ["ORDERS"]},
        "datahub": {"endpoint": endpoint, "access_id": ACCESS_ID, "shards": 4},
        "capture": {"poll_interval": "100ms"},
        "flink": {"parallelism": parallelism, "restart_delay": "1s"},
        "checkpoint": {"interval": "1s", "dir": str(tmp_path / "ck"), "savepoint_dir": str(tmp_path / "sp")},
        "output": {
            "format": fmt,
            "path": str(tmp_path / out),
            "rolling": {"max_span": "2s", "check_interval": "500ms"},
        },
    }
    path = tmp_path / f"job-{out}.yaml"
    path.write_text(yaml.safe_dump(data))
    # the file holds no secret: the job reads the key from OBFLOW_DATAHUB__ACCESS_KEY (see run_job)
    return ObflowConfig(**{**data, "datahub": {**data["datahub"], "access_key": ACCESS_KEY}}), path


def send(config: ObflowConfig, events: list[ChangeEvent]) -> None:
    client = make_client(config.datahub)
    ensure_change_topic(client, config.datahub)
    producer = Producer(client, config.datahub.project, config.datahub.topic, config.datahub.retry)
    producer.send(events)
    producer.close()


def committed_lines(output: Path) -> list[dict[str, object]]:
    """Envelopes in finished files only (in-progress and pending files start with a dot)."""
    lines = []
    for file in sorted(output.rglob("*.jsonl")):
        if not file.name.startswith(".") and "_dead_letter" not in file.parts:
            lines += [orjson.loads(line) for line in file.read_bytes().splitlines() if line]
    return lines


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


def wait_for_lines(
    output: Path, count: int, proc: subprocess.Popen[bytes], timeout: float = 180
) -> list[dict[str, object]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the job process exited"
        lines = committed_lines(output)
        if len(lines) >= count:
            time.sleep(3)  # a few more checkpoints: anything extra would show now
            return committed_lines(output)
        time.sleep(0.5)
    raise AssertionError(f"only {len(committed_lines(output))} of {count} lines committed within {timeout}s")


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


def test_every_change_is_committed_exactly_once_despite_replays_and_a_task_failure_R2_1_R4_1_R9_2_R9_3(
    emulator: DataHubEmulator, tmp_path: Path
) -> None:
    config, path = job_config(tmp_path, emulator.endpoint)
    events = change_stream(3000, rows=400)
    send(config, events)
    send(config, events[:500])  # a capture replay: same changes, same event ids
    proc = run_job(path, tmp_path, {"OBFLOW_FLINK_FAIL_ONCE": f"{tmp_path / 'failed'}:1500"})
    try:
        lines = wait_for_lines(tmp_path / "out", 3000, proc)
    finally:
        stop(proc)
    assert (tmp_path / "failed").exists(), "the injected task failure happened"
    ids = [str(line["event_id"]) for line in lines]
    assert len(ids) == len(set(ids)) == 3000
    assert set(ids) == {e.event_id for e in events}
    # per row, the committed order is the commit order (one shard, one subtask, in sequence)
    by_row: dict[str, list[int]] = {}
    for file in sorted((tmp_path / "out").rglob("*.jsonl")):
        for line in file.read_bytes().splitlines():
            event = orjson.loads(line)
            by_row.setdefault(orjson.dumps(event["key"]).decode(), []).append(int(event["source"]["position"]))
    assert all(positions == sorted(positions) for positions in by_row.values())


def test_stop_with_savepoint_and_restart_at_parallelism_10_exactly_once_R2_2_R2_6_R6_3(
    emulator: DataHubEmulator, tmp_path: Path
) -> None:
    config, path = job_config(tmp_path, emulator.endpoint, parallelism=2)
    events = change_stream(3000, rows=500)
    send(config, events[:1500])
    proc = run_job(path, tmp_path)
    try:
        wait_for_lines(tmp_path / "out", 1500, proc)
    finally:
        stop(proc)
    assert proc.returncode == 0
    savepoint = (tmp_path / "sp" / "LATEST").read_text()
    assert savepoint
    # more changes (and a replay of old ones) arrive while the job is down
    send(config, events[1500:])
    send(config, events[1000:1200])
    proc = run_job(path, tmp_path, {"OBFLOW_FLINK__PARALLELISM": "10"}, ["--from-savepoint", savepoint])
    try:
        lines = wait_for_lines(tmp_path / "out", 3000, proc)
    finally:
        stop(proc)
    ids = [str(line["event_id"]) for line in lines]
    assert len(ids) == len(set(ids)) == 3000
    log = (tmp_path / "job.log").read_text()
    assert "parallelism=2 restored_from=None" in log
    assert f"parallelism=10 restored_from={savepoint}" in log


def committed_rows(output: Path) -> list[dict[str, object]]:
    """Rows of every finished output file, whatever its format, as plain dicts."""
    rows: list[dict[str, object]] = []
    for file in sorted(output.rglob("*")):
        if file.name.startswith(".") or not file.is_file():
            continue
        if file.suffix == ".jsonl":
            rows += rows_of(file.read_bytes().splitlines()).to_pylist()
        elif file.suffix == ".parquet":
            rows += pq.read_table(file).to_pylist()
        elif file.suffix == ".csv":
            options = pa_csv.ConvertOptions(column_types=SCHEMA, strings_can_be_null=True)
            rows += pa_csv.read_csv(file, convert_options=options).to_pylist()
    return rows


def test_json_parquet_and_csv_hold_identical_rows_R3_1_R3_2_R3_3(emulator: DataHubEmulator, tmp_path: Path) -> None:
    events = change_stream(1200, rows=200)
    by_format = {}
    for fmt in ("json", "parquet", "csv"):
        config, path = job_config(tmp_path, emulator.endpoint, fmt=fmt, out=f"out-{fmt}")
        if fmt == "json":
            send(config, events)
        proc = run_job(path, tmp_path)
        try:
            deadline = time.monotonic() + 120
            while len(committed_rows(tmp_path / f"out-{fmt}")) < 1200 and time.monotonic() < deadline:
                time.sleep(0.5)
        finally:
            stop(proc)
        files = [f for f in (tmp_path / f"out-{fmt}").rglob("*") if f.is_file() and not f.name.startswith(".")]
        suffix = {"json": ".jsonl", "parquet": ".parquet", "csv": ".csv"}[fmt]
        assert files and all(f.suffix == suffix for f in files), files
        by_format[fmt] = sorted(committed_rows(tmp_path / f"out-{fmt}"), key=lambda r: str(r["event_id"]))
    assert len(by_format["json"]) == 1200
    assert by_format["json"] == by_format["parquet"] == by_format["csv"]


def test_records_that_fail_processing_go_to_the_dead_letter_queue_with_reasons_R2_7(
    emulator: DataHubEmulator, tmp_path: Path
) -> None:
    from datahub.models import TupleRecord

    from obflow.datahub.client import change_topic_schema

    config, path = job_config(tmp_path, emulator.endpoint)
    good = change_stream(500, rows=100)
    send(config, good[:250])
    stranger = change_stream(3, rows=3, table="NOT_CAPTURED")
    send(config, stranger)
    client = make_client(config.datahub)
    schema = change_topic_schema()
    broken = []
    for i, payload in enumerate(["{not json", '{"source": {}, "event_id": "other", "op": "c"}']):
        values = good[0].to_datahub_values()
        values[0], values[-1] = f"{i:032x}", payload
        record = TupleRecord(schema=schema, values=values)
        record.shard_id = "1"
        broken.append(record)
    assert client.put_records(config.datahub.project, config.datahub.topic, broken).failed_record_count == 0
    send(config, good[250:])
    proc = run_job(path, tmp_path)
    try:
        lines = wait_for_lines(tmp_path / "out", 500, proc)
        deadline = time.monotonic() + 30
        while len(dead := committed_dead_letters(tmp_path / "out")) < 5 and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        stop(proc)
    assert sorted(str(line["event_id"]) for line in lines) == sorted(e.event_id for e in good)
    reasons = sorted(str(d["error"]).split(":")[0] for d in dead)
    assert reasons == [
        "payload event_id 'other' differs from the record's '00000000000000000000000000000001'",
        "payload is not JSON",
        *["table TRADE.NOT_CAPTURED is not in source.tables"] * 3,
    ]
    assert {d["stage"] for d in dead} == {"decode", "route"}
    assert all(d["time"] and d["payload"] for d in dead)


def committed_dead_letters(output: Path) -> list[dict[str, object]]:
    return [
        orjson.loads(line)
        for file in sorted((output / "_dead_letter").rglob("*.jsonl"))
        if not file.name.startswith(".")
        for line in file.read_bytes().splitlines()
        if line
    ]


def test_failed_checkpoints_are_tolerated_and_processing_continues_R2_5(
    emulator: DataHubEmulator, tmp_path: Path
) -> None:
    config, path = job_config(tmp_path, emulator.endpoint)
    events = change_stream(2000, rows=300)
    send(config, events[:1000])
    proc = run_job(path, tmp_path)
    try:
        wait_for_lines(tmp_path / "out", 1000, proc)
        (job_dir,) = [d for d in (tmp_path / "ck").iterdir() if d.is_dir()]
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
        lines = wait_for_lines(tmp_path / "out", 2000, proc)
    finally:
        stop(proc)
    ids = [str(line["event_id"]) for line in lines]
    assert len(ids) == len(set(ids)) == 2000
    flink_log = "\n".join(f.read_text(errors="replace") for f in (tmp_path / "flink-log").glob("*.log"))
    assert "Failed to trigger or complete checkpoint" in flink_log  # the failure is logged
    assert "to RESTARTING" not in flink_log  # processing continued: the job was never restarted
