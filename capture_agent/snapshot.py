"""The initial snapshot shared by every capture method: primary-key chunks read as ``op=r`` events.

A snapshot's state lives in the committed position: ``{"hw": <where streaming resumes>, "after":
<last key read, raw values> | None, "done": bool}``. Each event's position is
``snapshot:<hw>:<canonical key JSON>``, so a chunk read again after a restart carries the same ids.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from capture_agent.db import Database
from capture_agent.dialects import Dialect, TableInfo, snapshot_query
from capture_agent.values import normalize_row
from obflow.events import ChangeEvent, SourceInfo, canonical_json

Method = Literal["changelog", "binlog", "snapshot", "logproxy"]
SourceFactory = Callable[[str, int, "str | None", Method], SourceInfo]
"""(position, commit_ts_ms, txid, method) -> SourceInfo of one table."""


def snapshot_pending(position: dict[str, Any]) -> bool:
    return any(e.get("snapshot") and not e["snapshot"]["done"] for e in position["tables"].values())


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
        where = source(f"snapshot:{snapshot['hw']}:{canonical_json(key)}", now_ms, None, "snapshot")
        events.append(ChangeEvent.create("r", key=key, after=image, source=where, ts_ms=now_ms))
    if rows:
        snapshot["after"] = [v if isinstance(v, int | str) else str(v) for v in rows[-1][width:]]
    snapshot["done"] = len(rows) < chunk
    return events
