"""Schema changes of a captured table under a concurrent write load, on real seekdb and MariaDB.

For each kind of DDL, applied out of band (a plain ``ALTER TABLE``, as a migration tool runs it) while
an application thread inserts, updates and deletes: how many application statements failed and over
what window (printed), and whether the change stream, replayed, gives exactly the table's final rows.
"""

from __future__ import annotations

import itertools
import logging
import random
import threading
import time
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import pymysql
import pytest

from capture_agent.db import Database
from capture_agent.dialects import column_expression
from capture_agent.install import apply_schema_change
from capture_agent.method import discover_tables
from capture_agent.values import normalize_row
from obflow.config import ObflowConfig
from obflow.events import ChangeEvent, canonical_json
from obflow_dev.emulator import DataHubEmulator
from obflow_dev.localdb import Engine
from tests.support.capture import RunningAgent, read_topic, start_capture
from tests.support.waiting import wait_for

DDL = {
    "add": "ALTER TABLE orders ADD COLUMN channel VARCHAR(20) NULL",
    "drop": "ALTER TABLE orders DROP COLUMN note",
    "rename": "ALTER TABLE orders CHANGE COLUMN note remark VARCHAR(100) NULL",
    "modify": "ALTER TABLE orders MODIFY COLUMN amount DECIMAL(14,3)",
}


WRITTEN_AFTER = {"add": {"channel": "web"}, "rename": {"remark": "renamed"}}


@dataclass
class Writer:
    """The application: one connection inserting, updating and deleting orders until stopped."""

    engine: Engine
    database: str
    after_ddl: dict[str, str] = field(default_factory=dict)  # column -> value, set once the DDL is applied
    failures: list[tuple[float, str]] = field(default_factory=list)
    statements: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        ids = itertools.count(1)
        live: list[int] = []
        rng = random.Random(7)
        with self.engine.connect(self.database) as conn, conn.cursor() as cur:
            while not self.stop.is_set():
                extra = dict(self.after_ddl)
                new = next(ids)
                names = ", ".join(["id", "status", "amount", *extra])
                values = [new, "NEW", f"{new}.25", *extra.values()]
                for sql, params, landed in (
                    (f"INSERT INTO orders ({names}) VALUES ({', '.join(['%s'] * len(values))})", values, new),
                    ("UPDATE orders SET status = %s, amount = amount + 1 WHERE id = %s",
                     ["PAID", rng.choice(live)] if live else None, None),
                    ("DELETE FROM orders WHERE id = %s", [live.pop(0)] if len(live) > 20 else None, None),
                ):  # fmt: skip
                    if params is None:
                        continue
                    try:
                        cur.execute(sql, params)
                    except pymysql.err.Error as exc:
                        self.failures.append((time.monotonic(), str(exc)))
                    else:
                        if landed is not None:
                            live.append(landed)
                    self.statements += 1

    @property
    def window_s(self) -> float:
        return self.failures[-1][0] - self.failures[0][0] if self.failures else 0.0


def replayed(events: list[ChangeEvent]) -> dict[str, dict[str, Any] | None]:
    """Each key's final row after applying the stream in its order (a row's changes keep their order)."""
    state: dict[str, dict[str, Any] | None] = {}
    for event in sorted(events, key=lambda e: _order(e.source.position)):
        state[event.key_json] = None if event.op == "d" else event.after
    return state


def _order(position: str) -> tuple[int, int]:
    seq, _, reread = position.partition("+")
    return int(seq), 1 if reread else 0


def table_now(config: ObflowConfig) -> dict[str, dict[str, Any]]:
    db = Database(config.source)
    db.connect()
    try:
        orders = discover_tables(db, config)[0]
        columns = ", ".join(column_expression("mysql", c) for c in orders.columns)
        names = [c.name for c in orders.columns]
        rows = db.query(f"SELECT {columns} FROM {orders.qualified}")
        images = [normalize_row(orders, dict(zip(names, row, strict=True))) for row in rows]
    finally:
        db.close()
    return {canonical_json({"id": image["id"]}): image for image in images}


@pytest.mark.parametrize(("kind", "safely"), [*((kind, False) for kind in DDL), ("drop", True), ("rename", True)])
def test_a_ddl_under_load_loses_and_doubles_no_change_and_fails_no_write_that_the_engine_lets_us_keep(
    kind: str,
    safely: bool,
    engine: Engine,
    database: str,
    datahub: DataHubEmulator,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="obflow.capture")
    config, agent = start_capture(engine, database, datahub, tmp_path)
    writer = Writer(engine, database)
    thread = threading.Thread(target=writer.run, daemon=True)
    try:
        thread.start()
        time.sleep(1.0)
        applied = time.monotonic()
        if safely:  # obflow capture ddl
            apply_schema_change(config, DDL[kind])
        else:  # a plain ALTER TABLE, as a migration tool runs it
            with engine.connect(database) as conn, conn.cursor() as cur:
                cur.execute(DDL[kind])
        writer.after_ddl.update(WRITTEN_AFTER.get(kind, {}))  # values of a column the DDL made, right after it
        time.sleep(1.5)
        writer.stop.set()
        thread.join(10)
        expected = table_now(config)
        seen: list[dict[str, Any]] = []

        def caught_up() -> bool:
            seen[:] = [replayed([e for e in read_topic(config) if e.source.table == "orders"])]
            return _projected(seen[0], expected) == expected

        wait_for(caught_up, 30, f"the stream replayed equals the table after {kind}", interval=0.5,
                 seen=lambda: _difference(seen[0] if seen else {}, expected))  # fmt: skip
    finally:
        writer.stop.set()
        agent.stop()
    events = [e for e in read_topic(config) if e.source.table == "orders"]
    # the writer changes amount in every statement: one change twice would have the same op, key and amounts
    changes = [(e.op, e.key_json, _amounts(e)) for e in events if e.op != "r"]
    changed = [r for r in caplog.records if getattr(r, "event", None) == "schema.changed"]
    failed = [r for r in caplog.records if getattr(r, "event", None) == "capture.writes_failed"]
    first = f"{(writer.failures[0][0] - applied) * 1000:.0f} ms" if writer.failures else "none"
    how = " (obflow capture ddl)" if safely else ""
    print(f"\n{engine.kind} {kind}{how}: {writer.statements} application statements, {len(writer.failures)} "
          f"failed over {writer.window_s * 1000:.0f} ms (first failure {first} after the DDL); {len(events)} "
          f"events, {sum(e.op == 'r' for e in events)} re-read")  # fmt: skip
    assert len(changes) == len(set(changes)), "a change was doubled"
    assert_shapes_follow_the_table(events, kind)
    assert len(changed) == 1 and changed[0].table == f"{database}.orders"  # type: ignore[attr-defined]
    if kind == "add":
        assert {"channel"} == set(changed[0].added)  # type: ignore[attr-defined]
    if engine.kind == "mariadb" or kind in ("add", "modify") or safely:
        assert writer.failures == [] and failed == []
    else:  # seekdb fails a statement whose trigger names a missing column, until the agent replaced it
        assert writer.window_s <= 1.0, writer.failures
        assert failed and "writes to" in failed[0].getMessage(), [r.getMessage() for r in caplog.records]
        assert {msg for _, msg in writer.failures} <= {"(1327, 'Undeclared variable: note')"}


def test_a_captured_table_renamed_away_is_reported_and_its_writes_keep_working(
    engine: Engine, database: str, datahub: DataHubEmulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="obflow.capture")
    _, agent = start_capture(engine, database, datahub, tmp_path)
    try:
        with engine.connect(database) as conn, conn.cursor() as cur:
            cur.execute("RENAME TABLE orders TO orders_old")
            cur.execute("INSERT INTO orders_old (id, status) VALUES (1, 'NEW')")  # the application is not affected
        gone = wait_for(lambda: [r for r in caplog.records if getattr(r, "event", None) == "capture.table_gone"],
                        10, "capture.table_gone")  # fmt: skip
    finally:
        agent.stop()
    assert f"{database}.orders was dropped or renamed" in gone[0].getMessage()


def assert_shapes_follow_the_table(events: list[ChangeEvent], kind: str) -> None:
    """Every event says the shape its images were written in (issue 19, item 3): the images hold exactly
    its columns, the stream holds the shape before the DDL and the one after it, and the last says what
    the DDL did."""
    shapes = [e.source.table_schema for e in events]
    assert None not in shapes
    for event, shape in zip(events, shapes, strict=True):
        names = {name for name, _ in shape.columns}  # type: ignore[union-attr]
        image = event.before if event.op == "d" else event.after
        assert image is not None
        assert set(image) <= names, (event.op, event.source.position, set(image) - names)
        if event.op != "d":
            assert set(image) == names, (event.op, event.source.position, names - set(image))
    versions = list(dict.fromkeys(s.version for s in shapes if s is not None))
    assert len(versions) == 2, versions
    last = dict(shapes[-1].columns)  # type: ignore[union-attr]
    assert {"add": "channel" in last, "drop": "note" not in last, "rename": "remark" in last and "note" not in last,
            "modify": last.get("amount") == "decimal(14,3)"}[kind], last  # fmt: skip


def _amounts(event: ChangeEvent) -> tuple[Decimal | None, ...]:
    amounts = ((event.before or {}).get("amount"), (event.after or {}).get("amount"))
    return tuple(None if amount is None else Decimal(amount) for amount in amounts)


def _projected(got: dict[str, Any], expected: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The replayed rows on the table's columns now: a row unchanged since a DDL still has its older shape."""
    columns = next(iter(expected.values())).keys()
    return {key: {c: row.get(c) for c in columns} for key, row in got.items() if row is not None}


def _difference(got: dict[str, Any], expected: dict[str, Any]) -> str:
    present = _projected(got, expected)
    missing = [k for k in expected if k not in present]
    extra = [k for k in present if k not in expected]
    wrong = [(k, present[k], expected[k]) for k in expected if k in present and present[k] != expected[k]]
    return f"missing {missing[:5]} ({len(missing)}), extra {extra[:5]} ({len(extra)}), differing {wrong[:3]}"


def test_a_change_logged_before_a_ddl_run_while_the_agent_was_down_keeps_the_shape_it_was_written_in(
    engine: Engine, database: str, datahub: DataHubEmulator, tmp_path: Path
) -> None:
    """The agent keeps the shapes it has seen in its state directory: after a restart, a row the old
    trigger logged before DROP COLUMN still says it holds ``note``, and the rows after it do not."""
    config, agent = start_capture(engine, database, datahub, tmp_path)
    with engine.connect(database) as conn, conn.cursor() as cur:
        cur.execute("INSERT INTO orders (id, status, note) VALUES (1, 'NEW', 'a')")
        wait_for(lambda: len(read_topic(config)) == 1, 30, "the first insert")
        agent.stop()
        cur.execute("INSERT INTO orders (id, status, note) VALUES (2, 'NEW', 'b')")  # logged, not yet read
        cur.execute("ALTER TABLE orders DROP COLUMN note")
    agent = RunningAgent(config)
    try:
        with engine.connect(database) as conn, conn.cursor() as cur:
            # seekdb fails writes until the restarted agent has replaced the triggers (at its first poll)
            wait_for(lambda: cur.execute("INSERT INTO orders (id, status) VALUES (3, 'NEW')") == 1, 30,
                     "a write after the DDL", not_yet=(pymysql.err.Error,))  # fmt: skip
        events = wait_for(lambda: (got := read_topic(config)) and len(got) >= 3 and got, 30, "three inserts")
    finally:
        agent.stop()
    shapes = {int(e.key["id"]): e.source.table_schema for e in events}
    assert shapes[1] == shapes[2] and shapes[2] is not None and "note" in dict(shapes[2].columns)
    second = next(e for e in events if e.key["id"] == 2)
    assert second.after is not None and second.after["note"] == "b"
    assert shapes[3] is not None and "note" not in dict(shapes[3].columns)
    assert (tmp_path / "state" / "shapes.json").exists()
