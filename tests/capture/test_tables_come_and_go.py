"""Tables come and go without a manual install or a restart of the others' capture, on real engines:
capture installed by the agent at start, a table added to the config snapshotted alone, and
`obflow capture resnapshot` re-reading one table after every change before it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from capture_agent.agent import CaptureAgent
from capture_agent.method import TableNotFoundError
from obflow.config import ObflowConfig
from obflow.events import ChangeEvent
from obflow_dev.emulator import DataHubEmulator
from obflow_dev.localdb import Engine
from tests.support.capture import RunningAgent, capture_config, read_topic
from tests.support.waiting import wait_for


def with_tables(config: ObflowConfig, *tables: str) -> ObflowConfig:
    kept = [table for table in config.source.tables if table.name in tables]
    return config.model_copy(update={"source": config.source.model_copy(update={"tables": kept})})


def events_of(config: ObflowConfig, table: str, count: int) -> list[ChangeEvent]:
    def enough() -> list[ChangeEvent] | None:
        events = [e for e in read_topic(config) if e.source.table == table]
        return events if len(events) >= count else None

    found: list[ChangeEvent] = wait_for(enough, 20)
    return found


def capture_triggers(engine: Engine, database: str) -> set[str]:
    with engine.connect(database) as conn, conn.cursor() as cur:
        cur.execute("SELECT TRIGGER_NAME FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = %s", (database,))
        return {str(row[0]) for row in cur.fetchall()}


def test_the_agent_installs_missing_capture_at_start_unless_told_never(
    engine: Engine, database: str, datahub: DataHubEmulator, tmp_path: Path
) -> None:
    never = capture_config(engine, database, tmp_path / "never", datahub.endpoint, install="never")
    refused = CaptureAgent(never)
    try:
        try:
            refused.start()
        except TableNotFoundError as exc:
            message = str(exc)
        else:
            raise AssertionError("started without change capture")
    finally:
        refused.close()
    assert f"{database}.orders, {database}.order_lines have no change capture" in message
    assert "obflow capture install" in message and capture_triggers(engine, database) == set()

    config = capture_config(engine, database, tmp_path / "state", datahub.endpoint, snapshot=False)
    agent = RunningAgent(config)
    try:
        with engine.connect(database) as conn, conn.cursor() as cur:
            cur.execute("INSERT INTO orders (id, status) VALUES (1, 'NEW')")
        (created,) = events_of(config, "orders", 1)
    finally:
        agent.stop()
    assert (created.op, created.key) == ("c", {"id": 1})
    assert len(capture_triggers(engine, database)) == 6  # three per table


def test_a_table_added_to_the_config_is_snapshotted_alone_and_the_others_go_on(
    engine: Engine, database: str, datahub: DataHubEmulator, tmp_path: Path
) -> None:
    config = capture_config(engine, database, tmp_path / "state", datahub.endpoint)
    first = with_tables(config, "orders")
    with engine.connect(database) as conn, conn.cursor() as cur:
        cur.execute("INSERT INTO orders (id, status) VALUES (1, 'BEFORE')")
        cur.executemany("INSERT INTO order_lines VALUES (%s, %s, 'S', 1)", [(i, 0) for i in range(25)])
    agent = RunningAgent(first)
    try:
        events_of(first, "orders", 1)  # its snapshot
        with engine.connect(database) as conn, conn.cursor() as cur:
            cur.execute("INSERT INTO orders (id, status) VALUES (2, 'WHILE_ONE')")
        events_of(first, "orders", 2)
    finally:
        agent.stop()
    assert capture_triggers(engine, database) == {f"orders__obflow_{op}" for op in ("ins", "upd", "del")}

    agent = RunningAgent(config)  # order_lines added
    try:
        lines = events_of(config, "order_lines", 25)
        with engine.connect(database) as conn, conn.cursor() as cur:
            cur.execute("INSERT INTO orders (id, status) VALUES (3, 'AFTER')")
            cur.execute("UPDATE order_lines SET qty = 2 WHERE order_id = 0")
        orders = events_of(config, "orders", 3)
        lines = events_of(config, "order_lines", 26)
    finally:
        agent.stop()
    assert sorted((e.op, e.key["id"]) for e in orders) == [("c", 2), ("c", 3), ("r", 1)]  # no second snapshot
    assert sorted(e.op for e in lines) == ["r"] * 25 + ["u"]
    assert len({e.event_id for e in lines}) == 26


def test_resnapshot_rereads_one_table_after_every_change_before_it(
    engine: Engine, database: str, datahub: DataHubEmulator, tmp_path: Path
) -> None:
    config = capture_config(engine, database, tmp_path / "state", datahub.endpoint, snapshot=False)
    agent = RunningAgent(config)
    try:
        with engine.connect(database) as conn, conn.cursor() as cur:
            cur.executemany("INSERT INTO orders (id, status) VALUES (%s, 'NEW')", [(i,) for i in range(10)])
            cur.execute("INSERT INTO order_lines VALUES (1, 1, 'S', 1)")
        events_of(config, "orders", 10)
        path = tmp_path / "capture.yaml"
        data = config.model_dump(mode="json")
        del data["datahub"]["access_key"]
        path.write_text(yaml.safe_dump(data))

        def resnapshot(table: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "obflow.cli", "capture", "resnapshot", "--config", str(path), table],
                capture_output=True, text=True, timeout=60, check=False, env=dict(os.environ),
            )  # fmt: skip

        unknown = resnapshot("nope")
        assert unknown.returncode == 2 and f"{database}.nope is not in source.tables" in unknown.stderr
        with engine.connect(database) as conn, conn.cursor() as cur:
            cur.execute("UPDATE orders SET status = 'PAID' WHERE id = 3")
            requested = resnapshot("orders")
            assert requested.returncode == 0, requested.stderr
            orders = events_of(config, "orders", 21)
            cur.execute("DELETE FROM orders WHERE id = 4")
        orders = events_of(config, "orders", 22)
        again = resnapshot(f"{database}.orders")
        assert again.returncode == 0, again.stderr
        orders = events_of(config, "orders", 31)
    finally:
        agent.stop()
    by_position = sorted(orders, key=lambda e: (e.source.method, e.source.position))
    reads = [e for e in by_position if e.op == "r"]
    assert len(reads) == 19 and len({e.event_id for e in orders}) == 31
    first, second = ({e.key["id"]: e for e in reads if f"~{request}:" in e.source.position} for request in
                     sorted({e.source.position.split("~")[1].split(":")[0] for e in reads}))  # fmt: skip
    if len(first) == 9:
        first, second = second, first
    assert sorted(first) == list(range(10)) and sorted(second) == [i for i in range(10) if i != 4]
    # the update before the request is in the stream and in the re-read rows
    assert first[3].after is not None and first[3].after["status"] == "PAID"
    assert [e.op for e in by_position if e.source.method == "changelog"].count("u") == 1
    assert not [e for e in read_topic(config) if e.source.table == "order_lines" and e.op == "r"]
