"""A table's schema changes, read from the output files (issue 19, items 3 and 6): real seekdb and
MariaDB, a real capture agent, the DataHub emulator, and the job's per-record stage (the shard worker
that runs inside each Flink subtask, here driven without Flink, as in tests/flink/test_shard.py) writing
real Parquet and CSV files. The table is not given ``columns``: its output follows the catalog."""

from __future__ import annotations

import decimal
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest

from flink_job.mapping import SCHEMA_VERSION
from flink_job.output import read_output
from obflow.datahub.emulator import DataHubEmulator
from obflow.localdb import Engine
from tests.capture.conftest import read_topic, start_capture
from tests.flink.test_shard import drain
from tests.waiting import wait_for

CREATED = ["id", "status", "amount", "note", "created", "paid_at"]
ADDED = [*CREATED, "channel"]
DROPPED = [c for c in ADDED if c != "note"]


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_output_files_follow_add_and_drop_column_each_file_one_shape_every_change_once(
    engine: Engine, database: str, datahub: DataHubEmulator, tmp_path: Path, fmt: str
) -> None:
    config, agent = start_capture(engine, database, datahub, tmp_path)
    config.output.path = str(tmp_path / "out")
    config.output.format = fmt  # type: ignore[assignment]
    try:
        with engine.connect(database) as conn, conn.cursor() as cur:
            for i in range(1, 21):
                cur.execute("INSERT INTO orders (id, status, amount, note, created) VALUES (%s, 'NEW', %s, 'n', "
                            "'2026-12-01 10:00:00.250000')", (i, f"{i}.25"))  # fmt: skip
            wait_for(lambda: len(read_topic(config)) >= 20, 30, "the first inserts in the topic")
            cur.execute("ALTER TABLE orders ADD COLUMN channel VARCHAR(20) NULL")
            time.sleep(0.5)  # the agent's poll sees the new shape (docs/capture.md: within one poll interval)
            for i in range(21, 41):
                cur.execute("INSERT INTO orders (id, status, amount, channel) VALUES (%s, 'NEW', 1.5, 'web')", (i,))
            wait_for(lambda: len(read_topic(config)) >= 40, 30, "the inserts after ADD COLUMN")
            cur.execute("ALTER TABLE orders DROP COLUMN note")
            time.sleep(0.5)
            cur.execute("UPDATE orders SET status = 'PAID', channel = 'app' WHERE id <= 10")
            wait_for(lambda: len(read_topic(config)) >= 50, 30, "the updates after DROP COLUMN")
    finally:
        agent.stop()
    events = [e for e in read_topic(config) if e.source.table == "orders"]
    drain(config, shards=config.datahub.shards)

    files = [(file, rows) for table, file, rows in read_output(config) if table.endswith(".orders")]
    shapes = []
    for file, rows in files:
        names = pq.read_schema(file).names if fmt == "parquet" else pa_csv.read_csv(file).schema.names
        columns = [n for n in names if not n.startswith("_")]
        shapes.append(columns)
        by_id = {e.event_id: e for e in events}
        for row in rows:
            event = by_id[row["_event_id"]]
            assert event.source.table_schema is not None
            assert columns == [name for name, _ in event.source.table_schema.columns], "a file mixes two shapes"
    assert sorted({tuple(s) for s in shapes}) == sorted({tuple(CREATED), tuple(ADDED), tuple(DROPPED)})
    rows = [row for _, file_rows in files for row in file_rows]
    assert sorted(r["_event_id"] for r in rows) == sorted(e.event_id for e in events), "not every change once"
    assert len(rows) == 50
    assert {r["channel"] for r in rows if r["_op"] == "c" and int(r["id"]) > 20} == {"web"}
    assert {r["channel"] for r in rows if r["_op"] == "u"} == {"app"} and all("note" not in r for r in rows
                                                                            if r["_op"] == "u")  # fmt: skip
    if fmt == "parquet":
        first = next(pq.read_table(f) for f, _ in files if pq.read_schema(f).names[-1] == "paid_at")
        assert first.schema.field("amount").type == pa.decimal128(12, 2)
        assert first.schema.field("created").type == pa.timestamp("us")
        assert first.schema.field("paid_at").type == pa.timestamp("us", tz="UTC")
        assert set(first.column("amount").to_pylist()) <= {decimal.Decimal(f"{i}.25") for i in range(1, 21)}
        assert first.schema.metadata[SCHEMA_VERSION]
    print(f"\n{engine.kind} {fmt}: 50 changes over ADD and DROP COLUMN -> {len(files)} files, "
          f"shapes {[len(s) for s in shapes]} columns")  # fmt: skip
