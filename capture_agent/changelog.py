"""The ``changelog`` capture method: trigger-fed change-log tables, polled with gap tracking.

Why gaps: a change's sequence is taken when its trigger runs, but becomes visible only when its
transaction commits. A transaction holding sequence 7 that commits after the one holding 8 would be
skipped by a naive ``seq > last`` poller. So every sequence missing below the high-water mark is
an open *gap*, re-read on every poll until it shows up, or until it is older than
``capture.gap_max_age`` (a rolled-back transaction or a cache jump of the sequence never fills it) or
more than ``capture.gap_max_count`` gaps are open (the oldest then expire first). Expiry is logged as a
``capture.gap_expired`` fault event. Gaps are kept as ranges, so a sequence jump of a million after a
restart is one entry.

Per-row order: two changes to one row are serialised by the row lock, so the later one takes its
sequence, and becomes visible, only after the earlier one committed.

Snapshot (``capture.snapshot``): on first start, inside one consistent-snapshot transaction, the
high-water mark and the open gaps are read from the change log and then every table is read in
primary-key chunks (``op=r``, position ``snapshot:<high-water>:<key>``). The snapshot is therefore
exactly the state at the high-water mark, and streaming continues from it: no gap, no double. The
chunk progress is part of the committed position; if the agent or the connection dies mid-snapshot,
the remaining chunks are read in a new transaction, which may already see changes that are also
streamed afterwards (at-least-once for those rows; their final state is right). Change-log rows are
not purged until every snapshot has finished.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson

from capture_agent.dialects import TableInfo, gap_query, log_query, max_seq_query, purge_statement, seq_query
from capture_agent.method import Captured, Position
from capture_agent.snapshot import SnapshotThenStream, copy_position, snapshot_pending
from capture_agent.values import normalize
from obflow.events import ChangeEvent
from obflow.log import Fault, log_fault

log = logging.getLogger("obflow.capture.changelog")

Gap = list[float]  # [low seq, high seq, first seen (epoch seconds)]


def track_gaps(
    gaps: list[Gap],
    high_water: int,
    new_high_water: int,
    seen: set[int],
    now: float,
    max_count: int,
    max_age: float,
) -> tuple[list[Gap], list[Gap]]:
    """(open gaps, expired gaps) after a poll that saw sequences ``seen`` and moved the high water."""
    updated: list[Gap] = []
    for low, high, first_seen in gaps:
        updated += _split(int(low), int(high), first_seen, seen)
    # sequences skipped between the old and the new high-water mark are new gaps
    updated += _split(high_water + 1, new_high_water, now, seen)
    expired = [g for g in updated if now - g[2] > max_age]
    open_gaps = sorted((g for g in updated if now - g[2] <= max_age), key=lambda g: (g[2], g[0]))
    if len(open_gaps) > max_count:
        expired += open_gaps[: len(open_gaps) - max_count]
        open_gaps = open_gaps[len(open_gaps) - max_count :]
    return sorted(open_gaps, key=lambda g: g[0]), expired


def _split(low: int, high: int, first_seen: float, seen: set[int]) -> list[Gap]:
    """The parts of [low, high] not in ``seen``, as gap ranges."""
    if low > high:
        return []
    inside = (
        sorted(s for s in seen if low <= s <= high)
        if len(seen) < high - low + 1
        else [s for s in range(low, high + 1) if s in seen]
    )
    parts: list[Gap] = []
    start = low
    for s in inside:
        if s > start:
            parts.append([start, s - 1, first_seen])
        start = s + 1
    if start <= high:
        parts.append([start, high, first_seen])
    return parts


class ChangeLogCapture(SnapshotThenStream):
    name = "changelog"

    # ---- positions ------------------------------------------------------------------------

    def initial_position(self) -> Position:
        if self.config.capture.snapshot:
            self.begin_snapshot()
        tables: dict[str, Any] = {}
        for table in self.tables:
            high_water = int(self.db.query(max_seq_query(self.dialect, table))[0][0])
            entry: dict[str, Any] = {"hw": 0, "gaps": []}
            if self.config.capture.snapshot:
                # Everything at or below the high water that is not in the log yet is an open gap.
                seen = {int(r[0]) for r in self.db.query(seq_query(self.dialect, table), (1, high_water))}
                gaps, _ = track_gaps(
                    [],
                    0,
                    high_water,
                    seen,
                    self.clock(),
                    self.config.capture.gap_max_count,
                    self.config.capture.gap_max_age,
                )
                entry = {
                    "hw": high_water,
                    "gaps": gaps,
                    "snapshot": {"hw": high_water, "after": None, "done": False},
                }
            tables[table.qualified] = entry
        return {"method": self.name, "tables": tables}

    def poll(self, position: Position) -> Captured:
        new_position = copy_position(position)
        step = self.snapshot_step(new_position)
        if step is not None:
            return step
        events: list[ChangeEvent] = []
        backlog: dict[str, int] = {}
        budget = self.config.capture.batch_size
        for table in self.tables:
            entry = new_position["tables"].setdefault(table.qualified, {"hw": 0, "gaps": []})
            table_events = self._stream(table, entry, budget)
            events += table_events
            budget = max(budget - len(table_events), 1)
            backlog[table.qualified] = int(self.db.query(max_seq_query(self.dialect, table))[0][0]) - int(entry["hw"])
        return Captured(events, new_position, backlog)

    def acknowledge(self, position: Position) -> None:
        if snapshot_pending(position):
            return
        for table in self.tables:
            entry = position["tables"].get(table.qualified)
            if not entry:
                continue
            mark = min([int(g[0]) - 1 for g in entry["gaps"]] + [int(entry["hw"])])
            if mark > 0:
                self.db.execute(purge_statement(self.dialect, table), (mark,))

    # ---- reading --------------------------------------------------------------------------

    def _stream(self, table: TableInfo, entry: dict[str, Any], limit: int) -> list[ChangeEvent]:
        high_water = int(entry["hw"])
        rows = self.db.query(log_query(self.dialect, table, limit), (high_water,))
        for low, high, _ in entry["gaps"]:
            rows += self.db.query(gap_query(self.dialect, table), (int(low), int(high)))
        rows.sort(key=lambda r: int(r[0]))
        new_high_water = max([high_water] + [int(r[0]) for r in rows if int(r[0]) > high_water])
        seen = {int(r[0]) for r in rows}
        gaps, expired = track_gaps(
            entry["gaps"],
            high_water,
            new_high_water,
            seen,
            self.clock(),
            self.config.capture.gap_max_count,
            self.config.capture.gap_max_age,
        )
        for low, high, first_seen in expired:
            log_fault(
                log,
                Fault.CAPTURE_GAP_EXPIRED,
                f"sequences {int(low)}..{int(high)} of {table.qualified} never appeared within the gap bounds; "
                "treated as rolled back",
                table=table.qualified,
                low=int(low),
                high=int(high),
                waited_s=round(self.clock() - first_seen, 1),
            )
        entry["hw"], entry["gaps"] = new_high_water, gaps
        now_ms = int(self.clock() * 1000)
        return [self._event(table, row, now_ms) for row in rows]

    def _event(self, table: TableInfo, row: tuple[Any, ...], now_ms: int) -> ChangeEvent:
        seq, op, pk, before, after, txid, commit_ts_ms = row
        types = {c.name: c.data_type for c in table.columns}

        def image(text: Any) -> dict[str, Any] | None:
            if text is None:
                return None
            return {k: normalize(types.get(k, ""), v) for k, v in orjson.loads(text).items()}

        key = image(pk) or {}
        source = self.source(table, str(seq), int(commit_ts_ms), None if txid is None else str(txid), "changelog")
        return ChangeEvent.create(op, key=key, before=image(before), after=image(after), source=source, ts_ms=now_ms)
