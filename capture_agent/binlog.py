"""The ``binlog`` capture method: MySQL-protocol row binlog (MySQL, MariaDB, and OceanBase MySQL-mode
tenants through the LogProxy binlog service), read with ``mysql-replication``.

Needs ``binlog_format=ROW`` and ``binlog_row_image=FULL`` (UPDATE events then carry both images),
preferably ``binlog_row_metadata=FULL`` (column names in the log; without it columns are mapped by
position, which is wrong for events written before an ALTER TABLE), and a user with REPLICATION SLAVE
and REPLICATION CLIENT. The committed position is the binlog file
and the offset after the last row event fully accepted by DataHub; each poll reads from there, so a
restart resumes exactly after it. Event positions are ``<file>:<offset after the event>:<row index>``.

Snapshot: inside a consistent-snapshot transaction MariaDB reports the binlog coordinates that
snapshot corresponds to (``binlog_snapshot_file``/``binlog_snapshot_position``), so snapshot and
stream meet without gap or double. Other servers lack them; ``SHOW MASTER STATUS`` is read instead,
and changes committed between it and the snapshot's start may be seen twice (at-least-once).
"""

from __future__ import annotations

import base64
import queue
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pymysql
from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.row_event import DeleteRowsEvent, UpdateRowsEvent, WriteRowsEvent

from capture_agent.db import ConnectionLostError, Database, is_connection_error, tls_settings
from capture_agent.dialects import BINARY_TYPES, Column, TableInfo
from capture_agent.method import Captured, Position, discover_table, split_key_change
from capture_agent.schema import SchemaChange, report_schema_change
from capture_agent.snapshot import SnapshotThenStream, copy_position
from capture_agent.values import normalize
from obflow.config import ObflowConfig
from obflow.events import ChangeEvent

_OPS = {WriteRowsEvent: "c", UpdateRowsEvent: "u", DeleteRowsEvent: "d"}


def _names(row: dict[str, Any]) -> tuple[str, ...] | None:
    """The columns a binlog row names, in the table's order; None where the server sent no names."""
    values = row.get("values") or row.get("after_values") or {}
    names = tuple(values)
    return None if not names or any(n.startswith("UNKNOWN_COL") for n in names) else names


class _StreamReader:
    """One open binlog stream, read by a thread into a bounded queue.

    ``handed_out`` is the position after the last event given to the agent: the stream continues
    from there, so polls need not reconnect.
    """

    def __init__(self, stream: BinLogStreamReader, start: tuple[str, int]) -> None:
        self.stream = stream
        self.handed_out = start
        self.error: BaseException | None = None
        self.queue: queue.Queue[tuple[Any, str]] = queue.Queue(maxsize=10_000)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="binlog-reader", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            for event in self.stream:
                while not self.stopping.is_set():
                    try:
                        self.queue.put((event, self.stream.log_file), timeout=0.2)
                        break
                    except queue.Full:
                        continue
                if self.stopping.is_set():
                    return
        except Exception as exc:
            if not self.stopping.is_set():
                self.error = exc
        finally:
            self.stopping.set()

    def take(self, limit: int, wait: float) -> Iterator[tuple[Any, str]]:
        """Events (with their binlog file) until ``limit`` rows or nothing new within ``wait``."""
        rows = 0
        timeout = wait
        while rows < limit:
            try:
                event, log_file = self.queue.get(timeout=timeout)
            except queue.Empty:
                return
            rows += len(event.rows)
            timeout = 0.005  # drain what is there, do not wait for more
            yield event, log_file

    def close(self) -> None:
        self.stopping.set()
        self.stream.close()
        self.thread.join(5)


class BinlogCapture(SnapshotThenStream):
    name = "binlog"

    def __init__(
        self,
        config: ObflowConfig,
        db: Database,
        tables: list[TableInfo],
        clock: Callable[[], float] = time.time,
        history_dir: Path | None = None,
    ) -> None:
        super().__init__(config, db, tables, clock, history_dir)
        self.by_name = {(t.schema, t.name): t for t in tables}
        self._reader: _StreamReader | None = None
        self._shapes: dict[tuple[str, tuple[str, ...]], TableInfo] = {}
        self._columns_seen: dict[str, dict[str, Column]] = {t.qualified: {c.name: c for c in t.columns} for t in tables}

    def initial_position(self) -> Position:
        if self.config.capture.snapshot:
            self.begin_snapshot()
        status = dict(self.db.query("SHOW STATUS LIKE 'binlog_snapshot_%'"))
        if status.get("binlog_snapshot_file"):
            log_file, log_pos = str(status["binlog_snapshot_file"]), int(status["binlog_snapshot_position"])
        else:
            row = self.db.query("SHOW MASTER STATUS")[0]
            log_file, log_pos = str(row[0]), int(row[1])
        tables: dict[str, Any] = {t.qualified: {} for t in self.tables}
        if self.config.capture.snapshot:
            for entry in tables.values():
                entry["snapshot"] = {"hw": f"{log_file}:{log_pos}", "after": None, "done": False}
        return {"method": self.name, "log_file": log_file, "log_pos": log_pos, "tables": tables}

    def poll(self, position: Position) -> Captured:
        new_position = copy_position(position)
        return self.snapshot_step(new_position) or self._stream(new_position)

    def _stream(self, position: Position) -> Captured:
        where = (position["log_file"], int(position["log_pos"]))
        if self._reader is None or self._reader.handed_out != where:
            # first poll, or the agent is back at its committed position after a failed delivery
            self._close_reader()
            try:
                self._reader = _StreamReader(self._open_stream(*where), where)
            except (pymysql.err.Error, OSError) as exc:
                if not is_connection_error(exc):
                    raise
                raise ConnectionLostError(f"binlog stream cannot be opened: {exc}") from exc
        events: list[ChangeEvent] = []
        now_ms = int(self.clock() * 1000)
        for binlog_event, log_file in self._reader.take(
            self.config.capture.batch_size, self.config.capture.poll_interval
        ):
            table = self.by_name.get((binlog_event.schema, binlog_event.table))
            if table is not None:
                end = f"{log_file}:{binlog_event.packet.log_pos}"
                op = _OPS[type(binlog_event)]
                commit_ms = int(binlog_event.timestamp) * 1000
                for index, row in enumerate(binlog_event.rows):
                    shape = self._shape_of(table, _names(row))
                    events += split_key_change(self._event(shape, op, row, f"{end}:{index}", commit_ms, now_ms))
            position["log_file"], position["log_pos"] = log_file, binlog_event.packet.log_pos
        self._reader.handed_out = (position["log_file"], int(position["log_pos"]))
        if self._reader.error is not None:
            error, self._reader = self._reader.error, None
            raise ConnectionLostError(f"binlog stream failed: {error}")
        return Captured(events, position)

    def _shape_of(self, table: TableInfo, names: tuple[str, ...] | None) -> TableInfo:
        """The table's shape when the binlog wrote a row of columns ``names`` (with binlog_row_metadata=FULL
        every table map names them; None: it does not): ``table`` while they match. After an ALTER TABLE,
        the catalog's shape where it has those columns, and the table streams in it from then on; where it
        has not (the binlog is read behind a later change), those columns with the types last seen of them.
        Each shape is looked up once."""
        if names is None or names == tuple(c.name for c in table.columns):
            return table
        found = self._shapes.get((table.qualified, names))
        if found is None:
            found = self._shapes[(table.qualified, names)] = self._shape_named(table, names)
        if found is not table and self.by_name[(table.schema, table.name)] is table:
            self.by_name[(table.schema, table.name)] = found
            report_schema_change(SchemaChange.between(table, found), "its binlog rows are read in the new shape")
        return found

    def _shape_named(self, table: TableInfo, names: tuple[str, ...]) -> TableInfo:
        spec = self.config.source.qualified_tables()[table.qualified]
        now = discover_table(self.db, self.config, spec, missing_ok=True)
        seen = self._columns_seen[table.qualified]
        if now is not None:
            seen.update((c.name, c) for c in now.columns)
            if tuple(c.name for c in now.columns) == names:
                return now
        columns = tuple(seen.get(name, Column(name, "text", "text")) for name in names)
        key = table.primary_key if set(table.primary_key) <= set(names) else (now or table).primary_key
        return TableInfo(table.schema, table.name, columns, key)

    def _open_stream(self, log_file: str, log_pos: int) -> BinLogStreamReader:
        source = self.config.source
        return BinLogStreamReader(
            connection_settings={
                "host": source.host,
                "port": source.port,
                "user": source.user,
                "password": source.password.get_secret_value(),
                **tls_settings(source),
            },
            server_id=self.config.capture.binlog_server_id,
            log_file=log_file,
            log_pos=log_pos,
            resume_stream=True,
            blocking=True,
            slave_heartbeat=1.0,
            only_events=list(_OPS),
            only_schemas=sorted({schema for schema, _ in self.by_name}),
            only_tables=sorted({name for _, name in self.by_name}),
        )

    def _close_reader(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def close(self) -> None:
        self._close_reader()

    def _event(
        self, table: TableInfo, op: str, row: dict[str, Any], position: str, commit_ms: int, now_ms: int
    ) -> ChangeEvent:
        before = self._image(table, row.get("before_values") if op == "u" else row.get("values") if op == "d" else None)
        after = self._image(table, row.get("after_values") if op == "u" else row.get("values") if op == "c" else None)
        image = after or before or {}
        key = {k: image[k] for k in table.primary_key}
        source = self.source(table, position, commit_ms, None, "binlog")
        return ChangeEvent.create(op, key=key, before=before, after=after, source=source, ts_ms=now_ms)  # type: ignore[arg-type]

    @staticmethod
    def _image(table: TableInfo, values: dict[str, Any] | None) -> dict[str, Any] | None:
        if values is None:
            return None
        if values and all(k.startswith("UNKNOWN_COL") for k in values):
            # the server sent no column names (binlog_row_metadata is not FULL): map by position
            values = {table.columns[int(k[len("UNKNOWN_COL") :])].name: v for k, v in values.items()}
        image = {}
        for column in table.columns:
            value = values.get(column.name)
            if column.data_type in BINARY_TYPES and isinstance(value, bytes | bytearray):
                value = base64.b64encode(value).decode("ascii")
            image[column.name] = normalize(column.data_type, value)
        return image
