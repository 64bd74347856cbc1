"""The small interface every capture method implements, and table discovery shared by them.

A method turns "changes after position P" into a :class:`Captured` batch: envelopes in commit
order plus the position right after them. The agent sends the envelopes, and only once DataHub has
accepted them all does it persist the new position and call :meth:`CaptureMethod.acknowledge`.
Positions are plain JSON-serialisable dicts owned by the method.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from capture_agent.db import Database
from capture_agent.dialects import Column, Dialect, TableInfo, catalog_queries, oracle_capturable
from obflow.config import ObflowConfig, TableConfig
from obflow.events import ChangeEvent

Position = dict[str, Any]


@dataclass
class Captured:
    events: list[ChangeEvent]
    position: Position
    backlog: dict[str, int] = field(default_factory=dict)
    """Changes known to be waiting per table (for the backlog metric)."""


class CaptureMethod(ABC):
    name: str

    @abstractmethod
    def initial_position(self) -> Position:
        """Where to start when no position was ever committed (may plan a snapshot)."""

    @abstractmethod
    def poll(self, position: Position) -> Captured:
        """The next changes after ``position``, bounded by ``capture.batch_size``; may be empty."""

    def resnapshot(self, position: Position, table: str, request: str) -> Captured | None:
        """Plan a new snapshot of ``table`` (``schema.table``) for ``request``: the changes up to the
        snapshot's point first, then its rows as ``op=r`` events in the following polls. None: not now (a
        snapshot is running), ask again; ``position`` unchanged: ``request`` is planned already."""
        raise NotImplementedError(f"capture.method {self.name} cannot re-snapshot one table")

    def acknowledge(self, position: Position) -> None:  # noqa: B027 - optional hook
        """Called after ``position`` was committed: release what is no longer needed (e.g. purge)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources."""


def split_key_change(event: ChangeEvent) -> list[ChangeEvent]:
    """An update that changed the primary key as what it is downstream: a delete of the old key, then an
    insert under the new one (position ``P+c``, so its id differs). Under the new key alone, the old key's
    row would live on in every keyed output."""
    if event.op != "u" or event.before is None or event.after is None:
        return [event]
    old_key = {k: event.before.get(k) for k in event.key}
    if old_key == event.key:
        return [event]
    delete = ChangeEvent.create("d", key=old_key, before=event.before, source=event.source, ts_ms=event.ts_ms)
    moved = event.source.model_copy(update={"position": f"{event.source.position}+c"})
    insert = ChangeEvent.create("c", key=event.key, after=event.after, source=moved, ts_ms=event.ts_ms)
    return [delete, insert]


class TableNotFoundError(Exception):
    pass


def dialect_of(config: ObflowConfig) -> Dialect:
    return "oracle" if config.source.mode == "oracle" else "mysql"


def discover_tables(db: Database, config: ObflowConfig) -> list[TableInfo]:
    """Columns and primary keys of every configured table, from the catalog (or the config's key)."""
    if not config.source.tables:
        raise TableNotFoundError(
            "source.tables: no table configured; list the tables to capture (TABLE or SCHEMA.TABLE)"
        )
    return [table for spec in config.source.tables if (table := discover_table(db, config, spec)) is not None]


def discover_table(db: Database, config: ObflowConfig, spec: TableConfig, missing_ok: bool = False) -> TableInfo | None:
    """One configured table as the catalog has it now; None when it does not exist and ``missing_ok``."""
    dialect = dialect_of(config)
    columns_sql, key_sql = catalog_queries(dialect)
    schema, name = config.source.schema_and_table(spec)
    columns = tuple(Column(str(n), str(t), str(full)) for n, t, full in db.query(columns_sql, (schema, name)))
    if not columns:
        if missing_ok:
            return None
        raise TableNotFoundError(
            f"source.tables: table {schema}.{name} does not exist or is not visible to {config.source.user}"
        )
    key = tuple(spec.primary_key) or tuple(str(r[0]) for r in db.query(key_sql, (schema, name)))
    if not key:
        raise TableNotFoundError(
            f"source.tables: {schema}.{name} has no primary key; add one or set primary_key for it in the config"
        )
    unknown = [k for k in key if k not in {c.name for c in columns}]
    if unknown:
        raise TableNotFoundError(f"source.tables: primary_key {unknown} not among the columns of {schema}.{name}")
    columns, skipped = oracle_capturable(columns) if dialect == "oracle" else (columns, ())
    return TableInfo(schema, name, columns, key, skipped)
