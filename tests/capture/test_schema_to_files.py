"""A table's schema changes, read from the output files (issue 19, items 3 and 6): real seekdb and
MariaDB, a real capture agent, the DataHub emulator, and the job's per-record stage (the shard worker
that runs inside each Flink subtask, here driven without Flink, as in tests/flink/test_shard.py) writing
real Parquet and CSV files. The table is not given ``columns``: its output follows the catalog. The
DDL runs as a plain ALTER TABLE on MariaDB, through ``obflow capture ddl`` on seekdb."""

from __future__ import annotations

import decimal
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest

from capture_agent.install import apply_schema_change
from flink_job.mapping import SCHEMA_VERSION
from flink_job.output import read_output
from obflow.config import ObflowConfig
from obflow_dev.emulator import DataHubEmulator
from obflow_dev.localdb import Engine
from tests.support.capture import read_topic, start_capture
from tests.support.shards import drain
from tests.support.waiting import wait_for

CREATED = ["id", "status", "amount", "note", "created", "paid_at"]
ADDED = [*CREATED, "channel"]
DROPPED = [c for c in ADDED if c != "note"]
RENAMED = [c if c != "channel" else "origin" for c in DROPPED]  # MODIFY then changes amount's type alone


STEPS = [
    ("ALTER TABLE orders ADD COLUMN channel VARCHAR(20) NULL",
     [f"INSERT INTO orders (id, status, amount, channel) VALUES ({i}, 'NEW', 1.5, 'web')" for i in range(21, 41)]),
    ("ALTER TABLE orders DROP COLUMN note", ["UPDATE orders SET status = 'PAID', channel = 'app' WHERE id <= 10"]),
    ("ALTER TABLE orders CHANGE COLUMN channel origin VARCHAR(20) NULL",
     ["UPDATE orders SET origin = 'pos' WHERE id BETWEEN 11 AND 15"]),
    ("ALTER TABLE orders MODIFY COLUMN amount DECIMAL(14,3)",
     ["UPDATE orders SET amount = amount + 0.001 WHERE id BETWEEN 16 AND 20"]),
]  # fmt: skip
"""Each DDL, then the writes after it (20, 10, 5 and 5 changes)."""


def change_the_table(engine: Engine, database: str, config: ObflowConfig) -> None:
    """20 inserts, then each of :data:`STEPS`, every step's changes in the topic before the next DDL."""

    def wait_until(changes: int, what: str) -> None:
        wait_for(lambda: len(read_topic(config)) >= changes, 30, what)

    with engine.connect(database) as conn, conn.cursor() as cur:
        for i in range(1, 21):
            cur.execute("INSERT INTO orders (id, status, amount, note, created) VALUES (%s, 'NEW', %s, 'n', "
                        "'2026-12-01 10:00:00.250000')", (i, f"{i}.25"))  # fmt: skip
        changes = 20
        wait_until(changes, "the first inserts in the topic")
        for ddl, writes in STEPS:
            if engine.kind == "mariadb":
                cur.execute(ddl)  # out of band, as a migration tool runs it
            else:  # seekdb fails writes for a moment after a plain DROP or RENAME (test_schema_changes.py)
                apply_schema_change(config, ddl)
            time.sleep(0.5)  # the agent's poll sees the new shape (docs/capture.md: within one poll interval)
            for statement in writes:
                changes += cur.execute(statement)
            wait_until(changes, f"the changes after {ddl}")


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_output_files_follow_add_drop_rename_and_modify_column_each_file_one_shape_every_change_once(
    engine: Engine, database: str, datahub: DataHubEmulator, tmp_path: Path, fmt: str
) -> None:
    config, agent = start_capture(engine, database, datahub, tmp_path)
    config.output.path = str(tmp_path / "out")
    config.output.format = fmt  # type: ignore[assignment]
    try:
        change_the_table(engine, database, config)
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
    assert {tuple(s) for s in shapes} == {tuple(CREATED), tuple(ADDED), tuple(DROPPED), tuple(RENAMED)}
    versions = {e.source.table_schema.version for e in events if e.source.table_schema}
    assert len(versions) == 5, "created, ADD, DROP, RENAME, MODIFY: five shapes"
    rows = [row for _, file_rows in files for row in file_rows]
    assert sorted(r["_event_id"] for r in rows) == sorted(e.event_id for e in events), "not every change once"
    assert len(rows) == 60
    assert {r["channel"] for r in rows if r["_op"] == "c" and int(r["id"]) > 20} == {"web"}
    assert {r.get("channel") for r in rows if r["_op"] == "u" and int(r["id"]) <= 10} == {"app"}
    assert all("note" not in r for r in rows if r["_op"] == "u")
    assert {r["origin"] for r in rows if r["_op"] == "u" and 10 < int(r["id"]) <= 15} == {"pos"}
    if fmt == "parquet":
        first = next(pq.read_table(f) for f, _ in files if pq.read_schema(f).names[-1] == "paid_at")
        assert first.schema.field("amount").type == pa.decimal128(12, 2)
        assert first.schema.field("created").type == pa.timestamp("us")
        assert first.schema.field("paid_at").type == pa.timestamp("us", tz="UTC")
        assert set(first.column("amount").to_pylist()) <= {decimal.Decimal(f"{i}.25") for i in range(1, 21)}
        assert first.schema.metadata[SCHEMA_VERSION]
        modified = [pq.read_table(f) for f, rows in files if any(r["_op"] == "u" and int(r["id"]) > 15 for r in rows)]
        assert {m.schema.field("amount").type for m in modified} == {pa.decimal128(14, 3)}
    print(f"\n{engine.kind} {fmt}: 60 changes over ADD, DROP, RENAME and MODIFY COLUMN -> {len(files)} files, "
          f"shapes {[len(s) for s in shapes]} columns")  # fmt: skip
