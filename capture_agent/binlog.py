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
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.row_event import DeleteRowsEvent, UpdateRowsEvent, WriteRowsEvent

from capture_agent.db import Database
from capture_agent.dialects import BINARY_TYPES, TableInfo, snapshot_begin, snapshot_end
from capture_agent.method import Captured, CaptureMethod, Position
from capture_agent.snapshot import Method, read_snapshot_chunk, snapshot_pending
from capture_agent.values import normalize
from obflow.config import ObflowConfig
from obflow.events import ChangeEvent, SourceInfo

_OPS = {WriteRowsEvent: "c", UpdateRowsEvent: "u", DeleteRowsEvent: "d"}


class BinlogCapture(CaptureMethod):
    name = "binlog"

    def __init__(
        self,
        config: ObflowConfig,
        db: Database,
        tables: list[TableInfo],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.db = db
        self.tables = {(t.schema, t.name): t for t in tables}
        self.clock = clock
        self.database = config.source.tenant or config.source.database
        self._snapshot_session: int | None = None

    def initial_position(self) -> Position:
        if self.config.capture.snapshot:
            for statement in snapshot_begin("mysql"):
                self.db.execute(statement)
            self._snapshot_session = self.db.session
        status = dict(self.db.query("SHOW STATUS LIKE 'binlog_snapshot_%'"))
        if status.get("binlog_snapshot_file"):
            log_file, log_pos = str(status["binlog_snapshot_file"]), int(status["binlog_snapshot_position"])
        else:
            row = self.db.query("SHOW MASTER STATUS")[0]
            log_file, log_pos = str(row[0]), int(row[1])
        tables: dict[str, Any] = {t.qualified: {} for t in self.tables.values()}
        if self.config.capture.snapshot:
            for entry in tables.values():
                entry["snapshot"] = {"hw": f"{log_file}:{log_pos}", "after": None, "done": False}
        return {"method": self.name, "log_file": log_file, "log_pos": log_pos, "tables": tables}

    def poll(self, position: Position) -> Captured:
        new_position: Position = {**position, "tables": {k: dict(v) for k, v in position["tables"].items()}}
        for table in self.tables.values():
            entry = new_position["tables"].setdefault(table.qualified, {})
            if entry.get("snapshot") and not entry["snapshot"]["done"]:
                entry["snapshot"] = dict(entry["snapshot"])
                if self._snapshot_session != self.db.session:
                    for statement in snapshot_begin("mysql"):
                        self.db.execute(statement)
                    self._snapshot_session = self.db.session
                chunk = read_snapshot_chunk(
                    self.db, "mysql", table, entry["snapshot"], self.config.capture.batch_size,
                    partial(self._source, table), int(self.clock() * 1000),
                )  # fmt: skip
                if not snapshot_pending(new_position):
                    for statement in snapshot_end("mysql"):
                        self.db.execute(statement)
                    self._snapshot_session = None
                return Captured(chunk, new_position)
        return self._stream(new_position)

    def _stream(self, position: Position) -> Captured:
        source = self.config.source
        stream = BinLogStreamReader(
            connection_settings={
                "host": source.host,
                "port": source.port,
                "user": source.user,
                "passwd": source.password.get_secret_value(),
            },
            server_id=self.config.capture.binlog_server_id,
            log_file=position["log_file"],
            log_pos=position["log_pos"],
            resume_stream=True,
            blocking=False,
            only_events=list(_OPS),
            only_schemas=sorted({schema for schema, _ in self.tables}),
            only_tables=sorted({name for _, name in self.tables}),
        )
        events: list[ChangeEvent] = []
        now_ms = int(self.clock() * 1000)
        try:
            for binlog_event in stream:
                table = self.tables.get((binlog_event.schema, binlog_event.table))
                if table is not None:
                    end = f"{stream.log_file}:{binlog_event.packet.log_pos}"
                    op = _OPS[type(binlog_event)]
                    commit_ms = int(binlog_event.timestamp) * 1000
                    for index, row in enumerate(binlog_event.rows):
                        events.append(self._event(table, op, row, f"{end}:{index}", commit_ms, now_ms))
                position["log_file"], position["log_pos"] = stream.log_file, binlog_event.packet.log_pos
                if len(events) >= self.config.capture.batch_size:
                    break
        finally:
            stream.close()
        return Captured(events, position)

    def _event(
        self, table: TableInfo, op: str, row: dict[str, Any], position: str, commit_ms: int, now_ms: int
    ) -> ChangeEvent:
        before = self._image(table, row.get("before_values") if op == "u" else row.get("values") if op == "d" else None)
        after = self._image(table, row.get("after_values") if op == "u" else row.get("values") if op == "c" else None)
        image = after or before or {}
        key = {k: image[k] for k in table.primary_key}
        source = self._source(table, position, commit_ms, None, "binlog")
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

    def _source(
        self, table: TableInfo, position: str, commit_ts_ms: int, txid: str | None, method: Method
    ) -> SourceInfo:
        return SourceInfo(
            method=method,
            database=self.database,
            db_schema=table.schema,
            table=table.name,
            position=position,
            txid=txid,
            commit_ts_ms=commit_ts_ms,
        )
