"""Realistic change-event streams: the demo's load, and the input of tests and benchmarks."""

from __future__ import annotations

import random
from datetime import UTC, datetime

from obflow.events import ChangeEvent, SourceInfo

SAMPLE_COLUMNS = [
    {"name": "ID", "type": "NUMBER(12)"},
    {"name": "STATUS", "type": "VARCHAR2(16)", "rename": "status"},
    {"name": "AMOUNT", "type": "NUMBER(12,2)", "rename": "amount"},
    {"name": "CREATED_AT", "type": "TIMESTAMP(6)", "rename": "created_at"},
    {"name": "NOTE", "type": "VARCHAR2(200)", "rename": "note"},
    {"name": "V", "type": "INTEGER", "rename": "version"},
]
"""The typed output columns of the sample table (``source.tables[].columns``)."""


def change_stream(
    count: int,
    rows: int,
    table: str = "ORDERS",
    first_position: int = 1,
    seed: int = 7,
    commit_ts_ms: int = 1_795_686_000_000,
    per_second: int = 1000,
) -> list[ChangeEvent]:
    """``count`` changes in commit order over ``rows`` rows: inserts, updates with both images, deletes;
    ``per_second`` of them committed in each second from ``commit_ts_ms`` on.

    With ``rows >= count`` every change is the insert of a new row (one change per row).
    """
    rng = random.Random(seed)
    live: dict[int, dict[str, object]] = {}
    events: list[ChangeEvent] = []
    for offset in range(count):
        position = first_position + offset
        row_id = offset if rows >= count else rng.randrange(rows)
        source = SourceInfo(
            method="changelog",
            database="trade",
            db_schema="TRADE",
            table=table,
            position=str(position),
            txid=str(position // 3),
            commit_ts_ms=commit_ts_ms + offset * 1000 // per_second,
        )
        old = live.get(row_id)
        if old is None:
            new = {
                "ID": row_id,
                "STATUS": "NEW",
                "AMOUNT": f"{rng.uniform(1, 1000):.2f}",  # NUMBER(12,2): exact text, as captured
                "CREATED_AT": _iso_utc(source.commit_ts_ms),
                "NOTE": None,
                "V": 1,
            }
            live[row_id] = new
            events.append(ChangeEvent.create("c", key={"ID": row_id}, after=new, source=source))
        elif rng.random() < 0.15:
            del live[row_id]
            events.append(ChangeEvent.create("d", key={"ID": row_id}, before=old, source=source))
        else:
            new = {**old, "STATUS": rng.choice(["PAID", "SHIPPED", "DONE"]), "V": int(str(old["V"])) + 1}
            live[row_id] = new
            events.append(ChangeEvent.create("u", key={"ID": row_id}, before=old, after=new, source=source))
    return events


def _iso_utc(epoch_ms: int) -> str:
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
