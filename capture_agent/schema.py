"""Schema changes of captured tables: found in the catalog, triggers regenerated at once, every one an event.

The change-log triggers name the table's columns, so a DDL changes what they can write. Per engine
(docs/capture.md, "Schema changes"): on MariaDB a trigger whose column is gone catches the error and
logs the key only, and its replacement is atomic (``CREATE OR REPLACE TRIGGER``); on seekdb (and MySQL) a
trigger naming a dropped or renamed column fails the application's statement until it is replaced, which
the agent does within one poll of the DDL and reports as a fault with the window's upper bound.

Every change-log row carries the schema version of the trigger that wrote it
(:data:`capture_agent.dialects.VERSION_KEY` in its key JSON), so the agent can tell the rows of an older
trigger: a copy it logged while its replacement already ran is dropped (:func:`drop_older_copies`), and
a row missing a column the table has now is followed by the row as it is now (re-read by key).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from prometheus_client import Counter

from capture_agent.db import DRIVER_ERRORS, Database
from capture_agent.dialects import (
    VERSION_KEY,
    Dialect,
    TableInfo,
    installed_triggers_query,
    is_capture_trigger,
    schema_version,
    trigger_ddl,
    trigger_version,
    version_marker,
)
from capture_agent.method import dialect_of, discover_table
from obflow.config import ObflowConfig
from obflow.log import Fault, log_event, log_fault

log = logging.getLogger("obflow.capture.schema")

SCHEMA_CHANGES = Counter("obflow_capture_schema_changes", "Schema changes of captured tables seen", ["table"])
WRITE_FAILURE_WINDOWS = Counter(
    "obflow_capture_write_failure_windows",
    "Schema changes after which the application's writes to the table failed until its triggers were replaced",
    ["table"],
)

LogRow = tuple[Any, ...]
"""(seq, op, pk JSON, before JSON, after JSON, txid, commit_ts_ms), as the change-log queries select."""


@dataclass(frozen=True)
class SchemaChange:
    table: str
    added: tuple[str, ...]
    removed: tuple[str, ...]
    retyped: tuple[str, ...]
    old_version: str
    new_version: str

    @classmethod
    def between(cls, old: TableInfo, new: TableInfo) -> SchemaChange:
        before = {c.name: c.column_type or c.data_type for c in old.columns}
        after = {c.name: c.column_type or c.data_type for c in new.columns}
        return cls(
            table=new.qualified,
            added=tuple(name for name in after if name not in before),
            removed=tuple(name for name in before if name not in after),
            retyped=tuple(name for name in after if name in before and before[name] != after[name]),
            old_version=schema_version(old),
            new_version=schema_version(new),
        )

    def describe(self) -> str:
        labelled = (("added", self.added), ("removed or renamed", self.removed), ("retyped", self.retyped))
        parts = [f"{label} {', '.join(names)}" for label, names in labelled if names]
        return "; ".join(parts) or "column order or key changed"


def row_version(row: LogRow) -> str | None:
    """The schema version of the trigger that wrote ``row``; None for rows of triggers older than versions."""
    version = orjson.loads(row[2]).get(VERSION_KEY)
    return None if version is None else str(version)


def drop_older_copies(rows: Sequence[LogRow], current: str) -> list[LogRow]:
    """``rows`` (in sequence order) without the copies an older trigger logged of changes its replacement
    logged too: while both ran (between creating the new trigger and dropping the old one) a statement
    fired both. The copy is the row of an older version nearest to the current one with the same op and
    key (the row lock lets no other change of that row in between) and the same values in the columns
    both have; each current row cancels at most one."""
    versions = [row_version(row) for row in rows]
    older = [index for index, version in enumerate(versions) if version not in (None, current)]
    if not older:
        return list(rows)
    dropped: set[int] = set()
    for index, version in enumerate(versions):
        if version != current:
            continue
        for other in sorted(older, key=lambda other: abs(other - index)):
            if other not in dropped and _same_change(rows[other], rows[index]):
                dropped.add(other)
                break
    return [row for index, row in enumerate(rows) if index not in dropped]


def _same_change(older: LogRow, current: LogRow) -> bool:
    if older[1] != current[1] or _key(older) != _key(current):
        return False
    for old_image, new_image in ((older[3], current[3]), (older[4], current[4])):
        old_values, new_values = (None if i is None else orjson.loads(i) for i in (old_image, new_image))
        if old_values is None or new_values is None:
            continue  # a trigger that could log the key only
        if any(old_values[name] != new_values[name] for name in old_values.keys() & new_values.keys()):
            return False
    return True


def _key(row: LogRow) -> dict[str, Any]:
    key: dict[str, Any] = orjson.loads(row[2])
    key.pop(VERSION_KEY, None)
    return key


def installed_triggers(db: Database, dialect: Dialect, table: TableInfo) -> dict[str, str]:
    """The triggers on ``table`` now, name to body."""
    return {str(n): str(b) for n, b in db.query(installed_triggers_query(dialect), (table.schema, table.name))}


def replace_triggers(
    db: Database,
    dialect: Dialect,
    table: TableInfo,
    in_place: bool,
    key_only: bool = False,
    installed: dict[str, str] | None = None,
) -> None:
    """Give ``table`` the change-log triggers of its shape now (``installed``: the ones it has, if known)."""
    installed = installed_triggers(db, dialect, table) if installed is None else installed
    for statement in trigger_ddl(dialect, table, installed, replace_in_place=in_place, key_only=key_only):
        db.execute(statement)


def catches_stale_columns(server_version: str) -> bool:
    """Whether the engine lets a trigger catch an unknown column (MariaDB; seekdb fails at compile time)."""
    return "mariadb" in server_version.lower()


def server_version(db: Database, dialect: Dialect) -> str:
    return "OceanBase Oracle mode" if dialect == "oracle" else str(db.query("SELECT VERSION()")[0][0])


def replaces_in_place(db: Database, dialect: Dialect) -> bool:
    """Whether a trigger is replaced by ``CREATE OR REPLACE`` (atomic): Oracle mode and MariaDB."""
    return dialect == "oracle" or catches_stale_columns(server_version(db, dialect))


def report_schema_change(change: SchemaChange, done: str) -> None:
    """A change of a captured table's shape, as a ``schema.changed`` event and metric; ``done``: what
    the capture did about it."""
    SCHEMA_CHANGES.labels(change.table).inc()
    log_event(
        log,
        "schema.changed",
        f"{change.table} changed ({change.describe()}): {done}",
        table=change.table,
        added=list(change.added),
        removed=list(change.removed),
        retyped=list(change.retyped),
        old_version=change.old_version,
        new_version=change.new_version,
    )


class SchemaWatch:
    """Compares the captured tables with the catalog and, on a change, regenerates their triggers."""

    def __init__(self, config: ObflowConfig, db: Database, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.db = db
        self.clock = clock
        self.dialect = dialect_of(config)
        self.server_version = server_version(db, self.dialect)
        catches = self.dialect == "mysql" and catches_stale_columns(self.server_version)
        # elsewhere (seekdb; Oracle mode: the trigger is invalid) a stale trigger fails writes until replaced
        self.stale_trigger_fails_writes = not catches
        self.in_place = self.dialect == "oracle" or catches
        self._checked_at: dict[str, float] = {}
        self._gone: set[str] = set()
        self._unreplaced: set[str] = set()

    def check(self, table: TableInfo) -> TableInfo:
        """``table`` as the catalog has it now (the same object when nothing changed). At the first check the
        installed triggers are brought to the current shape too (left by a crashed `obflow capture ddl`, an
        older release, or generated offline from the config's columns)."""
        now = self.clock()
        first = table.qualified not in self._checked_at
        previous_check = self._checked_at.get(table.qualified, now)
        self._checked_at[table.qualified] = now
        found = self._read(table)
        if found is None:
            return table
        changed = (found.columns, found.primary_key) != (table.columns, table.primary_key)
        if not changed and not first and table.qualified not in self._unreplaced:
            return table
        installed = installed_triggers(self.db, self.dialect, found)
        ours = [body for name, body in installed.items() if is_capture_trigger(self.dialect, table.name, name)]
        if changed:
            # triggers of the old shape (or of a release before versions) named every column of it: on seekdb a
            # statement fails until they are gone, in Oracle mode until the trigger is valid again (ORA-04098)
            marker = version_marker(self.dialect, trigger_version(table))
            named_old = any(marker in body or VERSION_KEY not in body for body in ours)
            self._report(SchemaChange.between(table, found), self.clock() - previous_check, named_old)
        if not ours:
            return found  # not installed: only `obflow capture install` creates capture (with its change log)
        try:
            replace_triggers(self.db, self.dialect, found, self.in_place, installed=installed)
        except DRIVER_ERRORS as exc:  # e.g. `obflow capture ddl` replacing them at the same moment
            log.info("replacing the triggers of %s failed (%s); trying again at the next poll", table.qualified, exc)
            self._unreplaced.add(table.qualified)
        else:
            self._unreplaced.discard(table.qualified)
        return found

    def _read(self, table: TableInfo) -> TableInfo | None:
        spec = self.config.source.qualified_tables()[table.qualified]
        found = discover_table(self.db, self.config, spec, missing_ok=True)
        if found is None:
            if table.qualified not in self._gone:
                self._gone.add(table.qualified)
                log_fault(
                    log,
                    Fault.CAPTURE_TABLE_GONE,
                    f"{table.qualified} was dropped or renamed: nothing more is captured from it under this name; "
                    "the change log keeps what it has (source.tables names the table to capture)",
                    table=table.qualified,
                )
            return None
        self._gone.discard(table.qualified)
        return found

    def _report(self, change: SchemaChange, window_s: float, writes_failed: bool) -> None:
        """``writes_failed``: the triggers named a column that is gone, on an engine where that fails writes."""
        report_schema_change(change, "its change-log triggers were regenerated")
        if change.removed and writes_failed and self.stale_trigger_fails_writes:
            WRITE_FAILURE_WINDOWS.labels(change.table).inc()
            log_fault(
                log,
                Fault.CAPTURE_WRITES_FAILED,
                f"application writes to {change.table} failed from the DDL until its triggers were regenerated, at "
                f"most {window_s:.2f} s: the trigger named {', '.join(change.removed)}, which the table no longer has "
                f"({self.server_version} fails a statement whose trigger names a missing column); apply such DDL with "
                "`obflow capture ddl` to avoid the window",
                level=logging.ERROR,
                table=change.table,
                columns=list(change.removed),
                window_max_s=round(window_s, 3),
            )


def now_columns_missing(table: TableInfo, image: dict[str, Any] | None) -> bool:
    """Whether ``image`` lacks a column the table has now (it was written by a trigger of an older shape)."""
    return image is not None and any(c.name not in image for c in table.columns)
