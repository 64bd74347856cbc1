"""Columns follow the table (issue 19, item 3): a table without configured columns is typed by the
shape its events carry (``source.tables[].columns`` absent), a change of shape starts a new file, and
each file's schema or header shows its shape. The real DataHub emulator in, the job's shard worker,
real files out (as tests/flink/test_shard.py); the capture side of the shapes is proven on seekdb and
MariaDB in tests/capture/test_schema_changes.py and tests/capture/test_schema_to_files.py."""

from __future__ import annotations

import decimal
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json
import pyarrow.parquet as pq
import pytest
from datahub.models import TupleRecord

from flink_job.mapping import SCHEMA_VERSION
from obflow.config import ObflowConfig
from obflow.datahub.client import change_topic_schema, make_client
from obflow.deadletter import DeadLetterQueue
from obflow.events import PAYLOAD_INDEX, ChangeEvent, TableSchema
from obflow.faults import Fault, InjectedFaultError
from obflow_dev.emulator import DataHubEmulator
from obflow_dev.sample import change_stream
from tests.support.job import output_rows, send
from tests.support.shards import drain, emulator, ids_of, one_shard, worker

__all__ = ["emulator"]  # the fixture

SHAPE_1 = (("ID", "int(11)"), ("STATUS", "varchar(10)"), ("AMOUNT", "decimal(12,2)"),
           ("CREATED_AT", "timestamp(6)"), ("NOTE", "varchar(40)"), ("V", "int(11)"))  # fmt: skip
SHAPE_2 = (*SHAPE_1, ("C2", "bigint(20)"))  # ALTER TABLE ... ADD COLUMN C2
SHAPE_3 = tuple(c for c in SHAPE_2 if c[0] != "NOTE")  # ... DROP COLUMN NOTE


def shape(columns: tuple[tuple[str, str], ...], version: str) -> TableSchema:
    return TableSchema(version=version, columns=columns)


def shaped(events: list[ChangeEvent], table_schema: TableSchema | None, values: dict[str, Any]) -> list[ChangeEvent]:
    """``events`` as a trigger of ``table_schema`` writes them: its columns in the images (``values`` for
    those the sample does not have)."""
    names = {name for name, _ in table_schema.columns} if table_schema else None

    def image(row: dict[str, Any] | None) -> dict[str, Any] | None:
        if row is None or names is None:
            return row
        return {k: v for k, v in {**row, **values}.items() if k in names}

    return [
        ChangeEvent.create(e.op, key=e.key, before=image(e.before), after=image(e.after),
                           source=e.source.model_copy(update={"table_schema": table_schema}), ts_ms=e.ts_ms)
        for e in events
    ]  # fmt: skip


def three_shapes() -> list[ChangeEvent]:
    """600 changes: 200 of the table as created, 200 after ADD COLUMN C2, 200 after DROP COLUMN NOTE."""
    events = change_stream(600, rows=150)
    return (
        shaped(events[:200], shape(SHAPE_1, "v1"), {})
        + shaped(events[200:400], shape(SHAPE_2, "v2"), {"C2": 7})
        + shaped(events[400:], shape(SHAPE_3, "v3"), {"C2": 8})
    )


def following(tmp_path: Path, endpoint: str, fmt: str = "parquet") -> ObflowConfig:
    config = one_shard(tmp_path, endpoint, fmt)
    config.source.tables[0].columns = []
    return config


def files_of(config: ObflowConfig, suffix: str) -> list[Path]:
    return sorted(Path(config.output.path).rglob(f"*{suffix}"), key=lambda f: f.name)


def test_a_table_without_columns_is_typed_by_its_events_shape(tmp_path: Path, emulator: DataHubEmulator) -> None:
    config = following(tmp_path, emulator.endpoint)
    send(config, shaped(change_stream(50, rows=50), shape(SHAPE_1, "v1"), {}))
    drain(config)
    (file,) = files_of(config, ".parquet")
    table = pq.read_table(file)
    assert table.schema.field("AMOUNT").type == pa.decimal128(12, 2)
    assert table.schema.field("CREATED_AT").type == pa.timestamp("us", tz="UTC")
    assert table.schema.field("ID").type == pa.int64() and table.schema.metadata[SCHEMA_VERSION] == b"v1"
    assert "key" not in table.schema.names and "after" not in table.schema.names
    assert isinstance(table.to_pylist()[0]["AMOUNT"], decimal.Decimal)


@pytest.mark.parametrize("fmt", ["parquet", "csv", "json"])
def test_a_change_of_shape_rolls_the_file_and_each_file_shows_its_shape(
    tmp_path: Path, emulator: DataHubEmulator, fmt: str
) -> None:
    """ADD COLUMN then DROP COLUMN in the stream: three files, each of one shape, in order, nothing lost
    or doubled; Parquet schemas and CSV headers name the columns each shape had."""
    config = following(tmp_path, emulator.endpoint, fmt)
    events = three_shapes()
    for start in (0, 200, 400):  # the DDLs fall between two of the capture's sends
        send(config, events[start : start + 200])
    drain(config)
    files = files_of(config, {"json": ".jsonl"}.get(fmt, f".{fmt}"))
    assert len(files) == 3, [f.name for f in files]
    if fmt == "parquet":
        schemas = [pq.read_schema(f) for f in files]
        assert [s.metadata[SCHEMA_VERSION] for s in schemas] == [b"v1", b"v2", b"v3"]
        columns = [[n for n in s.names if not n.startswith("_")] for s in schemas]
    else:
        read = pa_csv.read_csv if fmt == "csv" else pa_json.read_json
        columns = [[n for n in read(f).schema.names if not n.startswith("_")] for f in files]
    assert columns == [[n for n, _ in s] for s in (SHAPE_1, SHAPE_2, SHAPE_3)]
    rows = output_rows(config)
    assert sorted(ids_of(rows)) == sorted(e.event_id for e in events)
    assert {r["C2"] for r in rows if "C2" in r} == {7, 8}
    assert [int(r["_position"]) for r in rows] == sorted(int(r["_position"]) for r in rows)  # files in order


def test_shapes_interleaved_in_the_shard_never_share_a_file(tmp_path: Path, emulator: DataHubEmulator) -> None:
    """One send across both DDLs: the producer keeps order per row only, so the shard holds the shapes
    interleaved (as when a DDL falls inside one capture batch). Every file still holds one shape, and
    every change is there once; the price is a file per alternation (printed)."""
    config = following(tmp_path, emulator.endpoint)
    events = three_shapes()
    send(config, events)
    drain(config)
    files = files_of(config, ".parquet")
    for file in files:
        table = pq.read_table(file)
        version = table.schema.metadata[SCHEMA_VERSION].decode()
        expected = {"v1": SHAPE_1, "v2": SHAPE_2, "v3": SHAPE_3}[version]
        assert [n for n in table.schema.names if not n.startswith("_")] == [n for n, _ in expected]
        by_id = {e.event_id: e for e in events}
        shapes = {by_id[i].source.table_schema for i in table.column("_event_id").to_pylist()}
        assert {s.version for s in shapes if s is not None} == {version} and None not in shapes
    rows = output_rows(config)
    assert sorted(ids_of(rows)) == sorted(e.event_id for e in events)
    print(f"600 changes of 3 shapes interleaved in one shard: {len(files)} files")


def test_a_crash_after_a_shape_change_rolled_a_file_writes_the_same_files_again_R9_2(
    tmp_path: Path, emulator: DataHubEmulator
) -> None:
    """Killed right after the roll renamed the first shape's file, before the positions moved past it: the
    next worker writes the same three files, every change once."""
    config = following(tmp_path, emulator.endpoint)
    events = three_shapes()
    for start in (0, 200, 400):
        send(config, events[start : start + 200])
    crashed = worker(config, faults=Fault("file.renamed", "fail", tmp_path / "crashed", after=1))
    with pytest.raises(InjectedFaultError):
        for _ in range(3):
            crashed.poll(10)
    assert len(files_of(config, ".parquet")) == 1
    drain(config)
    assert [pq.read_schema(f).metadata[SCHEMA_VERSION] for f in files_of(config, ".parquet")] == [b"v1", b"v2", b"v3"]
    rows = output_rows(config)
    assert len(rows) == 600 and sorted(ids_of(rows)) == sorted(e.event_id for e in events)


def test_configured_columns_stay_a_projection_whatever_the_shape(tmp_path: Path, emulator: DataHubEmulator) -> None:
    config = one_shard(tmp_path, emulator.endpoint)
    configured = [c.output_name for c in config.source.tables[0].columns]
    send(config, three_shapes())
    drain(config)
    files = files_of(config, ".parquet")
    assert len(files) == 1, "a configured table does not roll on a change of shape"
    schema = pq.read_schema(files[0])
    assert [n for n in schema.names if not n.startswith("_")] == configured and SCHEMA_VERSION not in (
        schema.metadata or {}
    )
    notes = {r["note"] for r in output_rows(config) if "note" in r}
    assert notes == {None}, "a dropped column is null in the projection"


def test_a_column_without_a_typed_form_holds_its_json_text(tmp_path: Path, emulator: DataHubEmulator) -> None:
    """MySQL JSON and ENUM columns as canonical JSON text, in the table's order among the typed ones; a
    column named like a metadata column (``_op``) under its name with a trailing ``_``."""
    config = following(tmp_path, emulator.endpoint)
    columns = (SHAPE_1[0], ("ATTRS", "json"), *SHAPE_1[1:], ("KIND", "enum('a','b')"), ("_op", "varchar(4)"))
    values = {"ATTRS": {"b": [1, None], "a": "x"}, "KIND": "a", "_op": "mine"}
    send(config, shaped(change_stream(20, rows=20), shape(columns, "vj"), values))
    drain(config)
    (file,) = files_of(config, ".parquet")
    table = pq.read_table(file)
    assert table.schema.names[5:] == ["ID", "ATTRS", "STATUS", "AMOUNT", "CREATED_AT", "NOTE", "V", "KIND", "_op_"]
    rows = table.to_pylist()
    assert {r["ATTRS"] for r in rows} == {'{"a":"x","b":[1,null]}'} and {r["KIND"] for r in rows} == {'"a"'}
    assert {r["_op_"] for r in rows} == {"mine"} and {r["_op"] for r in rows} <= {"c", "u", "d"}
    assert isinstance(rows[0]["AMOUNT"], decimal.Decimal), "the other columns stay typed"


def test_a_table_schema_that_is_not_one_goes_to_the_dead_letter_queue_R2_7(
    tmp_path: Path, emulator: DataHubEmulator
) -> None:
    config = following(tmp_path, emulator.endpoint)
    good = shaped(change_stream(30, rows=30), shape(SHAPE_1, "v1"), {})
    send(config, good[:10])
    broken = [orjson.loads(e.to_json()) for e in good[10:12]]
    for envelope in broken:
        envelope["source"]["table_schema"] = {"version": "v9", "columns": "ID int"}
    _send_payloads(config, [orjson.dumps(e).decode() for e in broken], good[10:12])
    send(config, good[12:])
    drain(config)
    assert len(output_rows(config)) == 28
    letters = list(DeadLetterQueue(config).read())
    assert len(letters) == 2 and all("table_schema" in letter.error for letter in letters)


def _send_payloads(config: ObflowConfig, payloads: list[str], like: list[ChangeEvent]) -> None:
    """Records whose payload is ``payloads`` and whose other fields are those of ``like``."""
    client = make_client(config.datahub)
    records = []
    for payload, event in zip(payloads, like, strict=True):
        values = event.to_datahub_values()
        values[PAYLOAD_INDEX] = payload
        record = TupleRecord(schema=change_topic_schema(), values=values)
        record.shard_id = "0"
        records.append(record)
    assert client.put_records(config.datahub.project, config.datahub.topic, records).failed_record_count == 0


def test_a_batch_is_split_into_runs_of_one_shape_in_order_with_bad_payloads_kept_apart_R2_7() -> None:
    """The mapping alone, batch after batch as a worker feeds it: the shape of the batch before (decoded
    once), a new shape in the middle of a batch, an older one coming back, and a payload that is not
    JSON among them (its own dead letter, the runs around it unaffected)."""
    import pyarrow as pa

    from flink_job.mapping import LINE, FollowingMapping

    events = change_stream(30, rows=30)
    first = shaped(events[:10], shape(SHAPE_1, "v1"), {})
    mixed = shaped(events[10:15], shape(SHAPE_1, "v1"), {}) + shaped(events[15:20], shape(SHAPE_2, "v2"), {"C2": 1})
    back = shaped(events[20:25], shape(SHAPE_1, "v1"), {}) + shaped(events[25:], shape(SHAPE_2, "v2"), {"C2": 2})
    mapping = FollowingMapping()

    def runs(batch: list[ChangeEvent], broken_at: int | None = None) -> list[tuple[bytes, list[int]]]:
        payloads = [e.to_json().decode() for e in batch]
        if broken_at is not None:
            payloads[broken_at] = "{not json"
        found, bad = mapping.runs(pa.array(payloads, pa.string()))
        assert [line.number for line in bad] == ([] if broken_at is None else [broken_at])
        return [(r.schema.metadata[SCHEMA_VERSION], r.column(LINE).to_pylist()) for r in found]

    assert runs(first) == [(b"v1", list(range(10)))]
    assert runs(mixed) == [(b"v1", [0, 1, 2, 3, 4]), (b"v2", [5, 6, 7, 8, 9])]
    assert runs(back, broken_at=6) == [(b"v1", [0, 1, 2, 3, 4]), (b"v2", [5, 7, 8, 9])]
    assert runs(back) == [(b"v1", [0, 1, 2, 3, 4]), (b"v2", [5, 6, 7, 8, 9])]


def test_a_table_added_to_capture_after_the_job_started_is_written_without_a_restart(
    tmp_path: Path, emulator: DataHubEmulator
) -> None:
    """A table the job's ``source.tables`` does not list (added to the capture since: the operator then
    restarts the capture alone) is written as its changes' shape says; changes of such a table that do
    not carry a shape cannot be typed and go to the dead-letter queue (stage route)."""
    config = one_shard(tmp_path, emulator.endpoint)
    send(config, shaped(change_stream(40, rows=40, table="ADDED"), shape(SHAPE_1, "v1"), {}))
    send(config, change_stream(3, rows=3, table="UNKNOWN"))
    drain(config)
    (file,) = Path(config.output.path).rglob("TRADE.ADDED-*.parquet")
    table = pq.read_table(file)
    assert table.num_rows == 40 and table.schema.field("AMOUNT").type == pa.decimal128(12, 2)
    letters = list(DeadLetterQueue(config).read())
    assert [(letter.stage, letter.table) for letter in letters] == [("route", "TRADE.UNKNOWN")] * 3
    assert "not in source.tables, and its changes do not carry its columns" in letters[0].error
