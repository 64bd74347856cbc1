"""Binlog capture against a real MariaDB with row binlog: images, resume from the stored position, snapshot."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from obflow.config import ObflowConfig
from obflow.events import ChangeEvent
from obflow_dev.emulator import DataHubEmulator
from obflow_dev.localdb import Engine
from tests.support.capture import RunningAgent, capture_config, read_topic
from tests.support.waiting import wait_for


@pytest.fixture
def engine(mariadb: Engine) -> Engine:
    if mariadb.proc is None or mariadb.proc.poll() is not None:
        mariadb.start()
    return mariadb


def orders(config: ObflowConfig, count: int) -> list[ChangeEvent]:
    def enough() -> list[ChangeEvent] | None:
        events = [e for e in read_topic(config) if e.source.table == "orders"]
        return events if len(events) >= count else None

    found: list[ChangeEvent] = wait_for(enough, timeout=20)
    return found


def test_binlog_captures_images_and_resumes_after_restart_R1_1_R1_2_R1_3(
    engine: Engine, database: str, datahub: DataHubEmulator, tmp_path: Path
) -> None:
    config = capture_config(engine, database, tmp_path / "state", datahub.endpoint, method="binlog", snapshot=False)
    agent = RunningAgent(config)
    try:
        with engine.connect(database) as conn, conn.cursor() as cur:
            started = time.time()
            cur.execute(
                "INSERT INTO orders VALUES (1, 'NEW', 9.99, NULL, '2026-11-26 09:40:01.250000', "
                "FROM_UNIXTIME(1795686072.5))"
            )
            cur.execute("UPDATE orders SET status = 'PAID' WHERE id = 1")
            cur.execute("DELETE FROM orders WHERE id = 1")
            events = orders(config, 3)
            latency = time.time() - started
    finally:
        agent.stop()
    assert latency < 5
    created, updated, deleted = sorted(events, key=lambda e: e.source.position.split(":")[1:])
    row = {
        "id": 1, "status": "NEW", "amount": "9.99", "note": None, "created": "2026-11-26T09:40:01.250000",
        "paid_at": "2026-11-26T09:41:12.500000Z",
    }  # fmt: skip
    assert (created.op, created.after, created.before) == ("c", row, None)
    assert (updated.op, updated.before, updated.after) == ("u", row, {**row, "status": "PAID"})
    assert (deleted.op, deleted.before, deleted.after) == ("d", {**row, "status": "PAID"}, None)
    assert {e.source.method for e in events} == {"binlog"}

    # changes made while the agent is down are picked up from the stored position, none twice
    with engine.connect(database) as conn, conn.cursor() as cur:
        cur.execute("INSERT INTO orders (id, status) VALUES (2, 'WHILE_DOWN')")
    agent = RunningAgent(config)
    try:
        events = orders(config, 4)
        time.sleep(0.5)
        events = [e for e in read_topic(config) if e.source.table == "orders"]
    finally:
        agent.stop()
    assert len(events) == 4 and len({e.event_id for e in events}) == 4


def test_binlog_snapshot_then_stream(engine: Engine, database: str, datahub: DataHubEmulator, tmp_path: Path) -> None:
    with engine.connect(database) as conn, conn.cursor() as cur:
        cur.executemany("INSERT INTO orders (id, status) VALUES (%s, 'OLD')", [(i,) for i in range(120)])
    config = capture_config(engine, database, tmp_path / "state", datahub.endpoint, method="binlog", batch_size=50)
    agent = RunningAgent(config)
    try:
        with engine.connect(database) as conn, conn.cursor() as cur:
            cur.execute("UPDATE orders SET status = 'NEWER' WHERE id = 5")
        events = orders(config, 121)
    finally:
        agent.stop()
    assert sorted(e.key["id"] for e in events if e.op == "r") == list(range(120))
    assert [(e.op, e.key["id"]) for e in events if e.op != "r"] == [("u", 5)]


def test_binlog_update_of_the_primary_key_is_a_delete_then_an_insert_R1_2(
    engine: Engine, database: str, datahub: DataHubEmulator, tmp_path: Path
) -> None:
    config = capture_config(engine, database, tmp_path / "state", datahub.endpoint, method="binlog", snapshot=False)
    agent = RunningAgent(config)
    try:
        with engine.connect(database) as conn, conn.cursor() as cur:
            cur.execute("INSERT INTO orders (id, status) VALUES (7, 'NEW')")
            cur.execute("UPDATE orders SET id = 8 WHERE id = 7")
            events = sorted(orders(config, 3), key=lambda e: (int(e.source.position.split(":")[1]), e.source.position))
    finally:
        agent.stop()
    assert [(e.op, e.key) for e in events] == [("c", {"id": 7}), ("d", {"id": 7}), ("c", {"id": 8})]
    assert events[2].source.position == events[1].source.position + "+c"


def test_binlog_rows_follow_the_table_through_add_drop_and_rename_column(
    engine: Engine, database: str, datahub: DataHubEmulator, tmp_path: Path
) -> None:
    """With binlog_row_metadata=FULL each row names its columns: after each ALTER TABLE the events carry
    the table's new shape (its columns and their types, a new schema version) and the values of an added
    or renamed column; the rows written before it keep the shape they were written in."""
    config = capture_config(engine, database, tmp_path / "state", datahub.endpoint, method="binlog", snapshot=False)
    agent = RunningAgent(config)
    try:
        with engine.connect(database) as conn, conn.cursor() as cur:
            cur.execute("INSERT INTO orders (id, status, note) VALUES (1, 'NEW', 'first')")
            cur.execute("ALTER TABLE orders ADD COLUMN priority INT")
            cur.execute("INSERT INTO orders (id, status, priority) VALUES (2, 'NEW', 7)")
            cur.execute("ALTER TABLE orders DROP COLUMN note")
            cur.execute("INSERT INTO orders (id, status, priority) VALUES (3, 'NEW', 8)")
            cur.execute("ALTER TABLE orders CHANGE COLUMN priority rank_no INT")
            cur.execute("UPDATE orders SET rank_no = 9 WHERE id = 3")
        events = sorted(orders(config, 4), key=lambda e: e.source.position)
    finally:
        agent.stop()
    first, added, dropped, renamed = events
    assert first.after is not None and first.after["note"] == "first" and "priority" not in first.after
    assert added.after is not None and added.after["priority"] == 7 and added.after["note"] is None
    assert dropped.after is not None and "note" not in dropped.after and dropped.after["priority"] == 8
    assert renamed.op == "u" and renamed.after is not None and renamed.after["rank_no"] == 9
    assert renamed.before is not None and "priority" not in renamed.before
    shapes = [e.source.table_schema for e in events]
    assert all(shape is not None for shape in shapes)
    assert len({shape.version for shape in shapes if shape is not None}) == 4
    assert [name for name, _ in shapes[1].columns][-1] == "priority"  # type: ignore[union-attr]
    assert dict(shapes[3].columns)["rank_no"] == "int(11)"  # type: ignore[union-attr]
