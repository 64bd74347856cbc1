"""The initial snapshot shared by every capture method: primary-key chunks read as ``op=r`` events.

A snapshot's state lives in the committed position: ``{"hw": <where streaming resumes>, "after":
<last key read, raw values> | None, "done": bool, "request": <id of a re-snapshot>}``. Each event's
position is ``snapshot:<hw>[~<request>]:<canonical key JSON>``, so a chunk read again after a restart
carries the same ids.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, Literal

import orjson

from capture_agent.db import Database
from capture_agent.dialects import Dialect, TableInfo, snapshot_begin, snapshot_end, snapshot_query, table_schema
from capture_agent.method import Captured, CaptureMethod, Position, dialect_of
from capture_agent.state import ShapeHistory
from capture_agent.values import normalize_row
from obflow.config import ObflowConfig
from obflow.events import ChangeEvent, SourceInfo, TableSchema, canonical_json

Method = Literal["changelog", "binlog", "snapshot", "logproxy"]
SourceFactory = Callable[[str, int, "str | None", Method], SourceInfo]
"""(position, commit_ts_ms, txid, method) -> SourceInfo of one table."""


def snapshot_pending(position: dict[str, Any]) -> bool:
    return any(e.get("snapshot") and not e["snapshot"]["done"] for e in position["tables"].values())


def snapshot_mark(snapshot: dict[str, Any]) -> str:
    """The snapshot's part of its events' positions: the high water, and the request of a re-snapshot (so
    its events are new ones even when nothing changed since the last snapshot)."""
    return f"{snapshot['hw']}~{snapshot['request']}" if snapshot.get("request") else str(snapshot["hw"])


def read_snapshot_chunk(
    db: Database,
    dialect: Dialect,
    table: TableInfo,
    snapshot: dict[str, Any],
    chunk: int,
    source: SourceFactory,
    now_ms: int,
) -> list[ChangeEvent]:
    """The next ``chunk`` rows after ``snapshot["after"]``; updates ``snapshot`` in place."""
    after = snapshot["after"]
    rows = db.query(snapshot_query(dialect, table, after is not None, chunk), after or ())
    names = [c.name for c in table.columns]
    width = len(names)
    events = []
    for row in rows:
        image = normalize_row(table, dict(zip(names, row[:width], strict=True)))
        key = {k: image[k] for k in table.primary_key}
        where = source(f"snapshot:{snapshot_mark(snapshot)}:{canonical_json(key)}", now_ms, None, "snapshot")
        events.append(ChangeEvent.create("r", key=key, after=image, source=where, ts_ms=now_ms))
    if rows:
        snapshot["after"] = [v if isinstance(v, int | str) else str(v) for v in rows[-1][width:]]
    snapshot["done"] = len(rows) < chunk
    return events


class SnapshotThenStream(CaptureMethod):
    """Base of the methods that snapshot the tables before streaming: holds the connection, runs the
    snapshot transaction (restarted after a reconnect) and builds the events' source coordinates."""

    def __init__(
        self,
        config: ObflowConfig,
        db: Database,
        tables: list[TableInfo],
        clock: Callable[[], float] = time.time,
        history_dir: Path | None = None,
    ) -> None:
        """``history_dir``: where the shapes seen are kept across restarts (the agent's state directory)."""
        self.config = config
        self.db = db
        self.tables = tables
        self.dialect = dialect_of(config)
        self.clock = clock
        self.database = config.source.tenant or config.source.database
        self._snapshot_session: int | None = None
        self.shapes = ShapeHistory(history_dir)
        """Every shape of a table events were built for, by schema version."""
        self._schemas: dict[int, tuple[TableInfo, TableSchema]] = {}

    def begin_snapshot(self) -> None:
        for statement in snapshot_begin(self.dialect):
            self.db.execute(statement)
        self._snapshot_session = self.db.session

    def end_snapshot(self) -> None:
        for statement in snapshot_end(self.dialect):
            self.db.execute(statement)
        self._snapshot_session = None

    def snapshot_step(self, position: Position) -> Captured | None:
        """The next snapshot chunk (``position`` updated in place), or None once every table is done."""
        for table in self.tables:
            snapshot = position["tables"].setdefault(table.qualified, {}).get("snapshot")
            if snapshot and not snapshot["done"]:
                if self._snapshot_session != self.db.session:
                    self.begin_snapshot()  # first chunk after a restart or a reconnect
                chunk = read_snapshot_chunk(
                    self.db, self.dialect, table, snapshot, self.config.capture.batch_size,
                    partial(self.source, table), int(self.clock() * 1000),
                )  # fmt: skip
                if not snapshot_pending(position):
                    self.end_snapshot()
                return Captured(chunk, position)
        return None

    def schema_of(self, shape: TableInfo) -> TableSchema:
        """What the events of a table in ``shape`` carry (built once per shape)."""
        known = self._schemas.get(id(shape))
        if known is None or known[0] is not shape:  # a shape first seen (ids are only a fast path)
            known = self._schemas[id(shape)] = (shape, table_schema(self.dialect, shape))
            self.shapes.add(known[1])
        return known[1]

    def source(
        self,
        table: TableInfo,
        position: str,
        commit_ts_ms: int,
        txid: str | None,
        method: Method,
        written_as: TableSchema | None = None,
    ) -> SourceInfo:
        """``written_as``: the table's shape when the change was written, if not ``table``'s now (a change
        a trigger of an older shape logged)."""
        schema = written_as or self.schema_of(table)
        return SourceInfo(
            method=method,
            database=self.database,
            db_schema=table.schema,
            table=table.name,
            position=position,
            txid=txid,
            commit_ts_ms=commit_ts_ms,
            table_schema=schema,
        )


def copy_position(position: Position) -> Position:
    """A deep copy, so a poll never changes the position the agent has committed."""
    copied: Position = orjson.loads(orjson.dumps(position))
    return copied
