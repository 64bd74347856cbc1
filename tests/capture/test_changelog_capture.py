"""Change-log capture on real engines (seekdb = OceanBase MySQL mode, MariaDB): R1.1-R1.4, gaps, snapshot."""

from __future__ import annotations

import time
from pathlib import Path

from capture_agent.install import apply_ddl, change_log_ddl
from obflow.config import ObflowConfig
from obflow.events import ChangeEvent
from obflow_dev.emulator import DataHubEmulator
from obflow_dev.localdb import Engine
from tests.support.capture import RunningAgent, capture_config, read_topic, start_capture
from tests.support.waiting import wait_for

NULLS = {"amount": None, "note": None, "created": None, "paid_at": None}


def install(config: ObflowConfig) -> None:
    apply_ddl(config, change_log_ddl(config))


def changes_of(config: ObflowConfig, table: str, count: int, timeout: float = 10) -> list[ChangeEvent]:
    def enough() -> list[ChangeEvent] | None:
        events = [e for e in read_topic(config) if e.source.table == table and e.op != "r"]
        return events if len(events) >= count else None

    events: list[ChangeEvent] = wait_for(enough, timeout)
    return sorted(events, key=lambda e: (int(e.source.position.split("+")[0]), e.source.position))


def test_insert_update_delete_reach_datahub_within_5s_with_images_R1_1_R1_2_R1_3_R1_4(
    engine: Engine, database: str, datahub: DataHubEmulator, tmp_path: Path
) -> None:
    config, agent = start_capture(engine, database, datahub, tmp_path)
    try:
        with engine.connect(database) as conn, conn.cursor() as cur:
            started = time.time()
            cur.execute(
                "INSERT INTO orders VALUES (1, 'NEW', 120.50, NULL, '2026-11-26 09:40:01.250000', "
                "FROM_UNIXTIME(1795686072.5))"
            )
            changes_of(config, "orders", 1)
            insert_seconds = time.time() - started
            started = time.time()
            cur.execute("UPDATE orders SET status = 'PAID', note = 'card' WHERE id = 1")
            changes_of(config, "orders", 2)
            update_seconds = time.time() - started
            started = time.time()
            cur.execute("DELETE FROM orders WHERE id = 1")
            delete = changes_of(config, "orders", 3)
            delete_seconds = time.time() - started
    finally:
        agent.stop()
    assert max(insert_seconds, update_seconds, delete_seconds) < 5, (
        insert_seconds,
        update_seconds,
        delete_seconds,
    )
    created, updated, deleted = delete
    row = {
        "id": 1, "status": "NEW", "amount": "120.50", "note": None, "created": "2026-11-26T09:40:01.250000",
        "paid_at": "2026-11-26T09:41:12.500000Z",
    }  # fmt: skip
    assert (created.op, created.key, created.before, created.after) == ("c", {"id": 1}, None, row)
    assert updated.op == "u"
    assert updated.before == row
    assert updated.after == {**row, "status": "PAID", "note": "card"}
    assert (deleted.op, deleted.before, deleted.after) == (
        "d",
        {**row, "status": "PAID", "note": "card"},
        None,
    )
    assert [e.source.method for e in delete] == ["changelog"] * 3
    assert len({e.event_id for e in delete}) == 3


def test_an_update_of_the_primary_key_is_a_delete_of_the_old_key_then_an_insert_of_the_new_R1_2(
    engine: Engine, database: str, datahub: DataHubEmulator, tmp_path: Path
) -> None:
    config, agent = start_capture(engine, database, datahub, tmp_path)
    try:
        with engine.connect(database) as conn, conn.cursor() as cur:
            cur.execute("INSERT INTO orders (id, status) VALUES (7, 'NEW')")
            cur.execute("UPDATE orders SET id = 8, status = 'MOVED' WHERE id = 7")
            created, deleted, moved = changes_of(config, "orders", 3)
    finally:
        agent.stop()
    row = {"id": 7, "status": "NEW", **NULLS}
    assert (deleted.op, deleted.key, deleted.before, deleted.after) == ("d", {"id": 7}, row, None)
    moved_row = {**row, "id": 8, "status": "MOVED"}
    assert (moved.op, moved.key, moved.before, moved.after) == ("c", {"id": 8}, None, moved_row)
    assert moved.source.position == deleted.source.position + "+c"
    assert len({created.event_id, deleted.event_id, moved.event_id}) == 3


def test_composite_keys_and_many_rows(engine: Engine, database: str, datahub: DataHubEmulator, tmp_path: Path) -> None:
    config, agent = start_capture(engine, database, datahub, tmp_path)
    try:
        with engine.connect(database) as conn, conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO order_lines VALUES (%s, %s, %s, %s)",
                [(i // 3, i % 3, f"S{i}", i) for i in range(300)],
            )
            cur.execute("UPDATE order_lines SET qty = qty + 1 WHERE order_id < 10")
        events = changes_of(config, "order_lines", 330)
    finally:
        agent.stop()
    assert {tuple(sorted(e.key)) for e in events} == {("line_no", "order_id")}
    assert len({e.event_id for e in events}) == 330


def test_a_late_committing_transaction_is_not_lost(
    engine: Engine, database: str, datahub: DataHubEmulator, tmp_path: Path
) -> None:
    config, agent = start_capture(engine, database, datahub, tmp_path)
    try:
        slow = engine.connect(database)
        fast = engine.connect(database)
        with slow.cursor() as s, fast.cursor() as f:
            s.execute("BEGIN")
            s.execute("INSERT INTO orders (id, status) VALUES (1, 'SLOW')")  # takes the lower sequence
            f.execute("INSERT INTO orders (id, status) VALUES (2, 'FAST')")  # higher sequence, commits first
            changes_of(config, "orders", 1)
            time.sleep(0.5)  # several polls pass the high-water mark beyond the slow one's sequence
            s.execute("COMMIT")
        events = changes_of(config, "orders", 2)
        slow.close()
        fast.close()
    finally:
        agent.stop()
    assert sorted(e.after["status"] for e in events if e.after) == ["FAST", "SLOW"]


def test_snapshot_then_stream_without_gap_or_double(
    engine: Engine, database: str, datahub: DataHubEmulator, tmp_path: Path
) -> None:
    with engine.connect(database) as conn, conn.cursor() as cur:
        cur.executemany("INSERT INTO orders (id, status) VALUES (%s, 'OLD')", [(i,) for i in range(250)])
    config = capture_config(engine, database, tmp_path / "state", datahub.endpoint, snapshot=True, batch_size=100)
    install(config)
    with engine.connect(database) as conn, conn.cursor() as cur:
        cur.execute("UPDATE orders SET status = 'TOUCHED' WHERE id = 7")  # before the agent's first start
    agent = RunningAgent(config)
    try:
        with engine.connect(database) as conn, conn.cursor() as cur:
            cur.execute("INSERT INTO orders (id, status) VALUES (1000, 'NEW')")
            cur.execute("UPDATE orders SET status = 'LATER' WHERE id = 3")
        wait_for(lambda: len([e for e in read_topic(config) if e.source.table == "orders"]) >= 250 + 2)
        time.sleep(0.5)
        events = [e for e in read_topic(config) if e.source.table == "orders"]
    finally:
        agent.stop()
    snapshot = [e for e in events if e.op == "r"]
    stream = sorted((e for e in events if e.op != "r"), key=lambda e: int(e.source.position))
    assert sorted(e.key["id"] for e in snapshot) == list(range(250))
    assert next(e.after for e in snapshot if e.key["id"] == 7) == {"id": 7, "status": "TOUCHED", **NULLS}
    # the change log already held the UPDATE of row 7 (and the inserts) before the first start: the
    # snapshot covers them, so only what came after its high-water mark is streamed
    assert [(e.op, e.key["id"]) for e in stream] == [("c", 1000), ("u", 3)]
    assert len({e.event_id for e in events}) == len(events)
