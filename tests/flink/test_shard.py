"""The per-record work of the job, one shard at a time, without Flink: the real DataHub emulator in, real
files out. Named, typed files (R3.1 to R3.6), copies dropped within their window (R9.3), every change
exactly once after a crash in each window of a commit (R9.2), bad records and failed writes to the
dead-letter queue (R2.7, R3.7, R3.8). A crash is a worker abandoned mid-way (an exception at the named
point) and a new worker started on the same shard, as Flink starts one after a failure or a rescale;
the same points crash the whole job process in tests/flink/test_job.py."""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flink_job.files import OpenFile, PositionsFile
from flink_job.output import read_file
from flink_job.shard import ShardMetrics, ShardWorker
from obflow.datahub.client import make_client
from obflow.deadletter import DeadLetterQueue
from obflow.faults import Fault, InjectedFaultError
from obflow_dev.emulator import DataHubEmulator
from obflow_dev.sample import change_stream
from tests.support.job import output_rows, send
from tests.support.shards import (
    drain,
    emulator,
    ids_of,
    one_shard,
    worker,
)

__all__ = ["emulator"]  # the fixture, imported for this module's tests

NAME = re.compile(
    r"^TRADE\.ORDERS/(\d{4}-\d\d-\d\d)/(\d\d)/TRADE\.ORDERS-(\d{8})T(\d\d)\d{7}Z-s(\d+)-(\d{12})\.(jsonl|parquet|csv)$"
)
HOUR_MS = 3_600_000


@pytest.mark.parametrize("fmt", ["json", "parquet", "csv"])
def test_changes_become_typed_files_named_by_table_hour_time_and_shard_R3_1_R3_2_R3_3_R3_6(
    tmp_path: Path, emulator: DataHubEmulator, fmt: str
) -> None:
    config = one_shard(tmp_path, emulator.endpoint, fmt)
    events = change_stream(300, rows=50, commit_ts_ms=1_795_687_200_000 - 150)  # crosses 10:00 UTC
    send(config, events)
    drain(config)
    names = sorted(str(f.relative_to(config.output.path)) for f in Path(config.output.path).glob("TRADE.ORDERS/*/*/*"))
    matches = [NAME.match(n) for n in names]
    assert len(names) == 2 and all(matches), names
    # directory hour, name hour, shard, first sequence (the shard holds the changes in the order the
    # producer's puts landed: the first of 10:00 is not the 150th)
    parts = [(m[2], m[4], m[5], int(m[6])) for m in matches if m]
    assert parts[0] == ("09", "09", "0", 0) and parts[1][:3] == ("10", "10", "0") and 0 < parts[1][3] < 300
    rows = output_rows(config)
    assert ids_of(rows) == [e.event_id for e in events]  # in commit order
    first, last_delete = rows[0], next(r for r in reversed(rows) if r["_op"] == "d")
    assert events[0].after is not None
    assert str(first["amount"]) == events[0].after["AMOUNT"]  # an exact decimal
    assert first["created_at"].isoformat() == "2026-11-26T09:59:59.850000+00:00"
    assert first["_commit_ts"] == first["created_at"] and first["version"] == 1
    deleted = next(e for e in events if e.event_id == last_delete["_event_id"])
    assert deleted.before is not None and last_delete["ID"] == deleted.before["ID"]  # a delete keeps its last image


def test_identical_rows_in_all_three_formats_R3_1_R3_2_R3_3(tmp_path: Path, emulator: DataHubEmulator) -> None:
    events = change_stream(500, rows=80)
    by_format = {}
    for fmt in ("json", "parquet", "csv"):
        config = one_shard(tmp_path / fmt, emulator.endpoint, fmt)
        if fmt == "json":
            send(config, events)
        drain(config)
        by_format[fmt] = output_rows(config)
    assert len(by_format["json"]) == 500
    assert by_format["json"] == by_format["parquet"] == by_format["csv"]


def test_a_table_without_columns_keeps_key_and_images_as_json_text(tmp_path: Path, emulator: DataHubEmulator) -> None:
    config = one_shard(tmp_path, emulator.endpoint)
    config.source.tables[0].columns = []
    send(config, change_stream(20, rows=20))
    drain(config)
    (file,) = list(Path(config.output.path).rglob("*.parquet"))
    row = pq.read_table(file).to_pylist()[0]
    assert row["key"].startswith('{"ID":') and '"AMOUNT":"' in row["after"] and row["before"] is None


def test_rows_in_a_file_are_in_commit_order_whatever_order_the_log_holds_them_in_R2_3(
    tmp_path: Path, emulator: DataHubEmulator
) -> None:
    config = one_shard(tmp_path, emulator.endpoint, "json")
    events = change_stream(600, rows=600)  # a change per row: the log's order says nothing of the commit order
    send(config, list(reversed(events[300:])))
    send(config, events[:300])
    drain(config)
    for file in Path(config.output.path).rglob("*.jsonl"):
        commits = [r["_commit_ts"] for r in output_rows(config)]
        assert commits == sorted(commits), file


def test_a_rows_changes_keep_their_order_when_their_commit_times_go_backwards_R2_3_R9_4(
    tmp_path: Path, emulator: DataHubEmulator
) -> None:
    """A trigger stamps its statement's time: an update that waited for the row's lock carries an earlier
    time than the change it waited for (seen on seekdb). The row's changes stay in their order; the other
    rows are still in commit order, with each change counted no earlier than its row's previous one."""
    config = one_shard(tmp_path, emulator.endpoint, "json")
    events = change_stream(600, rows=30)
    events = [
        e.model_copy(update={"source": e.source.model_copy(update={"commit_ts_ms": e.source.commit_ts_ms - 40})})
        if i % 7 == 3 else e
        for i, e in enumerate(events)
    ]  # fmt: skip
    send(config, events)
    drain(config)
    row_time: dict[str, int] = {}
    causal = {}  # event id -> (the row's latest commit time so far, position)
    for position, event in enumerate(events):
        row_time[event.key_json] = max(row_time.get(event.key_json, 0), event.source.commit_ts_ms)
        causal[event.event_id] = (row_time[event.key_json], position)
    rows = output_rows(config)
    assert sorted(ids_of(rows)) == sorted(causal)
    in_file = [causal[event_id] for event_id in ids_of(rows)]
    assert [time for time, _ in in_file] == sorted(time for time, _ in in_file)
    for key in row_time:  # and each row's changes in the order they were made
        positions = [int(row["_position"]) for row in rows if row["ID"] == orjson.loads(key)["ID"]]
        assert positions == sorted(positions), key
    assert ids_of(rows) != [e.event_id for e in events]  # the other rows were reordered by commit time


def test_copies_within_the_window_are_dropped_across_a_restart_and_the_bound_is_the_window_R9_3(
    tmp_path: Path, emulator: DataHubEmulator
) -> None:
    config = one_shard(tmp_path, emulator.endpoint, "json")
    config.flink.dedup_records = 1000
    config.capture.batch_size = 1000
    events = change_stream(1500, rows=1500)
    send(config, events[:1000])
    drain(config)  # the first worker stops: what follows is read by a new one
    send(config, events[500:700])  # a capture replay after a restart: within 1000 records of the originals
    send(config, events[1000:])
    send(config, events[1200:1300])  # and another, 300 records after its originals
    drain(config)
    assert sorted(ids_of(output_rows(config))) == sorted(e.event_id for e in events)
    send(config, events[:10])  # 1,500 records later: past the window, no longer recognised
    drain(config)
    assert len(output_rows(config)) == 1510


@pytest.mark.parametrize("point", ["records", "file.written", "file.renamed", "positions.saved"])
@pytest.mark.parametrize("rolls_next_time", ["the same", "earlier", "later"])
def test_a_crash_at_each_point_of_a_commit_loses_and_doubles_nothing_R9_2(
    tmp_path: Path, emulator: DataHubEmulator, point: str, rolls_next_time: str
) -> None:
    """Killed before the rename (an in-progress file is left), after it (the positions not yet past the
    file) or after the positions moved; the new worker rolls its files at the same, an earlier or a later
    record than the one that crashed, so the file it writes again under the same name is the same file,
    a prefix of it, or a superset."""
    config = one_shard(tmp_path, emulator.endpoint, "json", max_size="24KB")
    events = change_stream(1200, rows=300)
    send(config, events)
    crashed = worker(config, faults=Fault(point, "fail", tmp_path / "crashed", after=1 if point != "records" else 700))
    with pytest.raises(InjectedFaultError):
        for _ in range(5):
            crashed.poll(10)
    before = {f.name for f in Path(config.output.path).rglob("*.jsonl")}
    assert (tmp_path / "crashed").exists()
    if point != "records":
        assert before or point == "file.written", "the crash came after a file was written"
    if rolls_next_time != "the same":
        config.output.rolling.max_size = {"earlier": 16 * 1024, "later": 40 * 1024}[rolls_next_time]
    drain(config)
    rows = output_rows(config)
    assert len(rows) == 1200 and sorted(ids_of(rows)) == sorted(e.event_id for e in events)
    assert not list(Path(config.output.path).rglob(".*.inprogress")) or point == "file.written"


def test_a_worker_resumes_from_the_committed_positions_and_rewrites_nothing_committed_R9_2(
    tmp_path: Path, emulator: DataHubEmulator
) -> None:
    config = one_shard(tmp_path, emulator.endpoint, "json")
    send(config, change_stream(800, rows=800))
    drain(config)
    files = {f: f.stat().st_mtime_ns for f in Path(config.output.path).rglob("*.jsonl")}
    positions = PositionsFile(Path(config.output.path), config.datahub.topic, "0").load()
    assert positions.resume == 800
    again = worker(config)
    assert again.poll(5).records == 800  # only the window of recent ids is read again: nothing is written
    assert {f: f.stat().st_mtime_ns for f in Path(config.output.path).rglob("*.jsonl")} == files
    assert len(output_rows(config)) == 800


def test_bad_records_become_dead_letters_with_reason_and_stage_while_good_ones_flow_R2_7(
    tmp_path: Path, emulator: DataHubEmulator
) -> None:
    from datahub.models import TupleRecord

    from obflow.datahub.client import change_topic_schema

    config = one_shard(tmp_path, emulator.endpoint)
    good = change_stream(30, rows=30)
    send(config, good[:10])
    wrong_decimal = good[0].to_json().decode().replace('"AMOUNT":"', '"AMOUNT":"x')
    no_op = '{"event_id": "e", "source": {"table": "ORDERS", "commit_ts_ms": 1}}'
    records = []
    ids = [hashlib.blake2b(str(i).encode(), digest_size=16).hexdigest() for i in range(3)]
    for event_id, payload in [(ids[0], "{not json"), (ids[1], no_op), (ids[2], wrong_decimal), ("x", "{}")]:
        values = good[0].to_datahub_values()
        values[0], values[-1] = event_id, payload
        record = TupleRecord(schema=change_topic_schema(), values=values)
        record.shard_id = "0"
        records.append(record)
    client = make_client(config.datahub)
    assert client.put_records(config.datahub.project, config.datahub.topic, records).failed_record_count == 0
    send(config, change_stream(3, rows=3, table="NOT_CAPTURED"))
    send(config, good[10:])
    drain(config)
    assert sorted(ids_of(output_rows(config))) == sorted(e.event_id for e in good)
    letters = list(DeadLetterQueue(config).read())
    assert [d.stage for d in letters] == ["decode", "decode", "decode", "map", "route", "route", "route"]
    assert letters[0].error == "event_id is not 32 hexadecimal digits" and letters[0].payload == "{}"
    assert letters[1].error.startswith("JSON parse error") and letters[1].payload == "{not json"
    assert letters[2].error == "op is not one of ['c', 'u', 'd', 'r']"
    assert letters[3].error.startswith("column AMOUNT (NUMBER(12,2)) of after: The string 'x")
    assert (
        letters[4].error == "table TRADE.NOT_CAPTURED is not in source.tables, and its changes do not carry its columns"
    )
    assert all(d.time and d.location["shard"] == "0" and d.location["sequence"] >= 10 for d in letters)
    assert not (tmp_path / "out-dead-letters").exists()  # DataHub took them: no dead-letter files


def test_a_write_failing_past_its_retries_sends_the_rows_to_the_dead_letter_queue_R3_7_R3_8(
    tmp_path: Path, emulator: DataHubEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = one_shard(tmp_path, emulator.endpoint)
    config.output.write_retries = 3
    events = change_stream(40, rows=40)
    send(config, events)
    attempts: list[Path] = []
    real_open = OpenFile.open

    def failing_disk(self: OpenFile) -> None:
        attempts.append(self.path)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(OpenFile, "open", failing_disk)
    drain(config, rounds=1)
    assert len(attempts) == 4  # the first try and 3 retries (R3.7)
    letters = list(DeadLetterQueue(config).read())
    assert [d.payload for d in letters] == [e.to_json().decode() for e in events]  # with the original payload (R3.8)
    assert {d.stage for d in letters} == {"write"} and "failed 4 times" in letters[0].error
    monkeypatch.setattr(OpenFile, "open", real_open)
    later = change_stream(5, rows=5, first_position=100)
    send(config, later)
    drain(config)  # and the shard goes on
    assert ids_of(output_rows(config)) == [e.event_id for e in later]


@pytest.mark.parametrize("step", ["open", "append", "finish", "publish"])
def test_a_write_that_fails_then_succeeds_loses_nothing_R3_7(
    tmp_path: Path, emulator: DataHubEmulator, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    config = one_shard(tmp_path, emulator.endpoint)
    send(config, change_stream(40, rows=40))
    failures = [OSError(5, "I/O error"), OSError(5, "I/O error")]
    real = getattr(OpenFile, step)

    def flaky(self: OpenFile, *args: Any) -> Any:
        if failures:
            raise failures.pop()
        return real(self, *args)

    monkeypatch.setattr(OpenFile, step, flaky)
    drain(config)
    assert not failures
    assert len(output_rows(config)) == 40 and not list(DeadLetterQueue(config).read())


def test_an_in_progress_file_is_never_read_as_output(tmp_path: Path, emulator: DataHubEmulator) -> None:
    config = one_shard(tmp_path, emulator.endpoint, "json")
    send(config, change_stream(10, rows=10))
    one = worker(config)
    config.output.rolling.max_span = 3600
    one.poll(5)
    (file,) = one.files.values()
    assert file.in_progress.exists()
    assert output_rows(config) == []


class CountingMetrics(ShardMetrics):
    def __init__(self) -> None:
        self.expired_records = 0

    def expired(self, records: int) -> None:
        self.expired_records += records


def test_records_that_expire_unread_are_a_fault_and_a_metric_and_the_rest_flows_R4_6(
    tmp_path: Path, emulator: DataHubEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    config = one_shard(tmp_path, emulator.endpoint)
    events = change_stream(300, rows=300)
    send(config, events)
    drain(config)  # the first 300 are committed
    send(config, change_stream(200, rows=200, first_position=1000, seed=8))
    topic = emulator.store.topic(config.datahub.project, config.datahub.topic)
    emulator.store.expire(topic.shard("0"), 350)  # 50 of the new ones expire before the job reads them
    metrics = CountingMetrics()
    client = make_client(config.datahub, protocol="json", reader=True)
    late = ShardWorker(config, client, "0", DeadLetterQueue(config), metrics=metrics)
    with caplog.at_level(logging.ERROR, logger="obflow.flink"):
        late.open()
        late.poll(10)
        late._commit_all(list(late.files))
    faults = [r for r in caplog.records if getattr(r, "event", "") == "datahub.records_expired"]
    assert len(faults) == 1 and "50 records (sequences 300 to 349)" in faults[0].getMessage(), caplog.text
    assert metrics.expired_records == 50
    assert len(output_rows(config)) == 300 + 150  # the rest of the shard, exactly once


@pytest.mark.parametrize("fmt", ["json", "parquet", "csv"])
def test_arrow_writes_output_files_to_its_own_file_never_to_a_python_one(tmp_path: Path, fmt: str) -> None:
    """Arrow's writers call a Python file's write() back from C++ through PyGILState, which the job's
    thread mode (pemja) does not support: it crashed the JVM. The sink must be Arrow's own, from open
    to the durable, whole file."""
    schema = pa.schema([("id", pa.int64()), ("_commit_ts", pa.timestamp("ms", tz="UTC"))])
    rows = pa.table({"id": [1, 2], "_commit_ts": pa.array([1000, 2000], pa.timestamp("ms", tz="UTC"))})
    file = OpenFile(tmp_path, "S.T", "0", 0, 1000, schema, fmt, opened_at=0.0)
    file.open()
    file.append(rows, pa.array([0, 1]), pa.array([1000, 2000]), pa.array(["1", "2"]))
    file.flush()
    assert isinstance(file._out, pa.NativeFile)
    file.finish()
    assert read_file(file.publish(), schema).column("id").to_pylist() == [1, 2]
