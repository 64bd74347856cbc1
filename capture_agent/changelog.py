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

from capture_agent.db import OPERATIONAL_ERRORS
from capture_agent.dialects import (
    VERSION_KEY,
    TableInfo,
    gap_query,
    log_query,
    max_seq_query,
    purge_statement,
    row_by_key_query,
    schema_version,
    seq_query,
)
from capture_agent.method import Captured, Position, TableNotFoundError, split_key_change
from capture_agent.schema import SchemaWatch, drop_older_copies, now_columns_missing, row_version
from capture_agent.snapshot import SnapshotThenStream, copy_position, snapshot_pending
from capture_agent.values import normalize, normalize_row
from obflow.events import ChangeEvent, SourceInfo
from obflow.log import Fault, log_event, log_fault

log = logging.getLogger("obflow.capture.changelog")

UNKNOWN_COLUMN = {1054, 904}
"""A column named is gone: MySQL family 1054; Oracle mode ORA-00904 (the code as an Oracle-mode tenant reports
it over the wire is unverified here: none runs on this machine)."""

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
    _watch: SchemaWatch | None = None

    # ---- positions ------------------------------------------------------------------------

    def initial_position(self) -> Position:
        if self.config.capture.snapshot:
            self.begin_snapshot()
        return {"method": self.name, "tables": {table.qualified: self._start(table) for table in self.tables}}

    def _start(self, table: TableInfo) -> dict[str, Any]:
        """Where capture of ``table`` starts. When snapshotting (inside the snapshot transaction): at the high
        water that transaction sees, with the sequences it does not see as open gaps, and a snapshot."""
        if not self.config.capture.snapshot:
            return {"hw": 0, "gaps": []}
        high_water = int(self.db.query(max_seq_query(self.dialect, table))[0][0])
        seen = {int(r[0]) for r in self.db.query(seq_query(self.dialect, table), (1, high_water))}
        gaps, _ = track_gaps(
            [], 0, high_water, seen, self.clock(), self.config.capture.gap_max_count, self.config.capture.gap_max_age
        )
        return {"hw": high_water, "gaps": gaps, "snapshot": {"hw": high_water, "after": None, "done": False}}

    def _start_added(self, position: Position) -> None:
        """Tables added to ``source.tables`` since the position was first taken start (and are snapshotted)
        on their own; the others go on from where they are."""
        added = [table for table in self.tables if table.qualified not in position["tables"]]
        if not added:
            return
        if self.config.capture.snapshot and self._snapshot_session != self.db.session:
            self.begin_snapshot()
        for table in added:
            position["tables"][table.qualified] = self._start(table)
        names = [table.qualified for table in added]
        log_event(log, "capture.table_added", f"capturing {', '.join(names)} from now on", tables=names,
                  snapshot=self.config.capture.snapshot)  # fmt: skip

    def resnapshot(self, position: Position, table: str, request: str) -> Captured | None:
        index = next((i for i, t in enumerate(self.tables) if t.qualified == table), None)
        if index is None:
            raise TableNotFoundError(f"{table} is not in source.tables")
        if ((position["tables"].get(table) or {}).get("snapshot") or {}).get("request") == request:
            return Captured([], position)
        if table not in position["tables"] or snapshot_pending(position):
            return None  # one snapshot at a time
        new_position = copy_position(position)
        self.begin_snapshot()
        # inside the snapshot transaction: every change it sees, so the snapshot's rows come after them all
        entry, events = new_position["tables"][table], []
        while True:
            high_water = entry["hw"]
            events += self._stream(index, entry, self.config.capture.batch_size)
            if entry["hw"] == high_water:
                break
        entry["snapshot"] = {"hw": entry["hw"], "after": None, "done": False, "request": request}
        return Captured(events, new_position)

    def poll(self, position: Position) -> Captured:
        new_position = copy_position(position)
        self._start_added(new_position)
        step = self.snapshot_step(new_position)
        if step is not None:
            return step
        events: list[ChangeEvent] = []
        backlog: dict[str, int] = {}
        budget = self.config.capture.batch_size
        for index, table in enumerate(self.tables):
            entry = new_position["tables"].setdefault(table.qualified, {"hw": 0, "gaps": []})
            table_events = self._stream(index, entry, budget)
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

    def _stream(self, index: int, entry: dict[str, Any], limit: int) -> list[ChangeEvent]:
        table = self.tables[index]
        high_water = int(entry["hw"])
        rows = self.db.query(log_query(self.dialect, table, limit), (high_water,))
        self.schema_of(table)  # known before a DDL: what the rows its triggers logged hold
        # after reading: a row written after a DDL is then always judged by the table's new shape
        table = self.tables[index] = self._schema_watch().check(table)
        rows += self._read_on_to_twins(table, rows, limit)
        for low, high, _ in entry["gaps"]:
            rows += self.db.query(gap_query(self.dialect, table), (int(low), int(high)))
        version = schema_version(table)
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
        for _ in range(3):
            try:
                return [event for row in drop_older_copies(rows, version) for event in self._events(table, row, now_ms)]
            except _TableChangedError:  # a DDL ran between the check and a re-read: read by the newer shape
                table = self.tables[index] = self._schema_watch().check(table)
        raise RuntimeError(f"{table.qualified} keeps changing under capture")

    def _read_on_to_twins(self, table: TableInfo, rows: list[tuple[Any, ...]], limit: int) -> list[tuple[Any, ...]]:
        """The rows after a full batch that ends with an older trigger's row, up to one of the current shape:
        that row's copy by the new trigger is next to it, and a batch must not split the two."""
        version, more, full = schema_version(table), [], len(rows) == limit
        last = rows[-1] if rows else None
        for _ in range(64):
            if not full or last is None or row_version(last) in (None, version):
                break
            chunk = self.db.query(log_query(self.dialect, table, 16), (int(last[0]),))
            more += chunk
            full, last = len(chunk) == 16, (chunk[-1] if chunk else None)
        return more

    def _schema_watch(self) -> SchemaWatch:
        if self._watch is None:
            self._watch = SchemaWatch(self.config, self.db, self.clock)
        return self._watch

    def _events(self, table: TableInfo, row: tuple[Any, ...], now_ms: int) -> list[ChangeEvent]:
        """The change a log row records; a row whose trigger could not render its images (the table changed
        under it) is re-read by key, and one missing a column the table has now is followed by the row now."""
        seq, op, pk, before, after, txid, commit_ts_ms = row
        types = {c.name: c.data_type for c in table.columns}

        def image(values: dict[str, Any] | None) -> dict[str, Any] | None:
            return None if values is None else {k: normalize(types.get(k, ""), v) for k, v in values.items()}

        raw_key = orjson.loads(pk)
        version = str(raw_key.pop(VERSION_KEY, "")).removesuffix("-key")
        txid = None if txid is None else str(txid)
        source = self.source(table, str(seq), int(commit_ts_ms), txid, "changelog", self.shapes.get(version))
        old, new = (None if text is None else orjson.loads(text) for text in (before, after))
        if not raw_key:
            log_fault(
                log,
                Fault.CAPTURE_CHANGE_UNREADABLE,
                f"a change ({op}) of {table.qualified} at sequence {seq} could not be rendered even by its key: the "
                "key's columns changed under the trigger; the row is unknown (re-snapshot the table to repair it)",
                level=logging.ERROR,
                table=table.qualified,
                seq=int(seq),
            )
            return []
        key = image(raw_key) or {}
        if (op == "c" and new is None) or (op == "u" and old is None and new is None) or (op == "d" and old is None):
            return self._reread(table, op, raw_key, key, source, now_ms)
        events = split_key_change(
            ChangeEvent.create(op, key=key, before=image(old), after=image(new), source=source, ts_ms=now_ms)
        )
        if op != "d" and now_columns_missing(table, new):
            later = source.model_copy(update={"position": f"{seq}+r"})
            events += self._reread(table, "r", raw_key, key, later, now_ms)
        return events

    def _reread(
        self, table: TableInfo, op: str, raw_key: dict[str, Any], key: dict[str, Any], source: SourceInfo, now_ms: int
    ) -> list[ChangeEvent]:
        """The row with ``key`` as it is now (op ``r``); a deleted row as a delete of its key."""
        source = source.model_copy(update={"table_schema": self.schema_of(table)})
        try:
            rows = self.db.query(row_by_key_query(self.dialect, table), [raw_key[k] for k in table.primary_key])
        except OPERATIONAL_ERRORS as exc:
            if exc.args and exc.args[0] in UNKNOWN_COLUMN:
                raise _TableChangedError() from exc
            raise
        if rows:
            names = [c.name for c in table.columns]
            after = normalize_row(table, dict(zip(names, rows[0], strict=True)))
            return [ChangeEvent.create("r", key=key, after=after, source=source, ts_ms=now_ms)]
        if op == "d":
            return [ChangeEvent.create("d", key=key, before=dict(key), source=source, ts_ms=now_ms)]
        return []  # gone since: the delete that removed it follows in the log


class _TableChangedError(Exception):
    """The table lost a column the agent's view of it still has."""
