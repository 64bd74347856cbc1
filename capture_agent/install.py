"""``obflow capture install|uninstall``: create or remove the change logs and triggers, idempotently."""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from capture_agent.db import DRIVER_ERRORS, DRIVER_OR_NETWORK_ERRORS, ConnectionLostError, Database
from capture_agent.dialects import (
    ORACLE_DDL_CLIENT,
    Column,
    Dialect,
    TableInfo,
    base_type,
    install_ddl,
    is_capture_trigger,
    log_table_name,
    log_table_query,
    oracle_capturable,
    oracle_ddl_guard,
    uninstall_ddl,
)
from capture_agent.method import TableNotFoundError, dialect_of, discover_table, discover_tables
from capture_agent.schema import installed_triggers, replace_triggers, replaces_in_place
from obflow.config import ObflowConfig

_NAME = r"""[`"]?([\w$#]+)[`"]?"""
_ALTER_TABLE = re.compile(rf"\s*ALTER\s+TABLE\s+(?:{_NAME}\s*\.\s*)?{_NAME}\s", re.IGNORECASE)


_STATEMENT_ERRORS: tuple[type[Exception], ...] = (*DRIVER_ERRORS, ConnectionLostError)


class SchemaChangeError(Exception):
    """A DDL that obflow cannot apply or generate; the message says why and what to do."""


@dataclass(frozen=True)
class ChangeLogPlan:
    """What ``obflow capture install|uninstall`` would run, table by table."""

    by_table: list[tuple[TableInfo, list[str]]]
    offline_because: str = ""
    """Set when the database could not be reached and the tables are as the config describes them."""

    @property
    def statements(self) -> list[str]:
        return [statement for _, statements in self.by_table for statement in statements]

    @property
    def tables(self) -> list[TableInfo]:
        return [table for table, _ in self.by_table]


def change_log_ddl(config: ObflowConfig, remove: bool = False) -> list[str]:
    """The statements for every configured table (reads the catalog, changes nothing)."""
    return change_log_plan(config, remove).statements


def change_log_plan(config: ObflowConfig, remove: bool = False, offline_ok: bool = False) -> ChangeLogPlan:
    """The statements for every configured table, from the catalog; with ``offline_ok``, from the config's
    ``columns`` and ``primary_key`` when the database cannot be reached (for a DBA's review)."""
    dialect = dialect_of(config)
    db = Database(config.source)
    try:
        db.connect()
    except DRIVER_OR_NETWORK_ERRORS as exc:
        if not offline_ok:
            raise
        why = str(exc.args[-1] if exc.args else exc)
        build = uninstall_ddl if remove else install_ddl
        return ChangeLogPlan([(t, build(dialect, t)) for t in configured_tables(config, why)], offline_because=why)
    try:
        tables = discover_tables(db, config)
        if remove:
            return ChangeLogPlan([(table, uninstall_ddl(dialect, table)) for table in tables])
        in_place = replaces_in_place(db, dialect)
        return ChangeLogPlan(
            [
                (table, install_ddl(dialect, table, installed_triggers(db, dialect, table), replace_in_place=in_place))
                for table in tables
            ]
        )
    finally:
        db.close()


def apply_install(config: ObflowConfig, plan: ChangeLogPlan) -> None:
    """``obflow capture install``: :func:`install_tables` on a connection of its own."""
    db = Database(config.source)
    db.connect()
    try:
        install_tables(db, dialect_of(config), plan.by_table)
    finally:
        db.close()


def install_tables(db: Database, dialect: Dialect, by_table: list[tuple[TableInfo, list[str]]]) -> None:
    """Run each table's install statements; when one fails (a missing TRIGGER privilege, say), what this run
    created goes again before the error is raised: the change log and triggers of every table that had
    neither before. A table that had a change log keeps it, with the changes it may hold. What the user
    may not drop is said in a note on the error."""
    untouched = [table for table, _ in by_table if not capture_objects(db, dialect, table)]
    try:
        for _, statements in by_table:
            for statement in statements:
                db.execute(statement)
    except _STATEMENT_ERRORS as exc:
        left = _remove_again(db, dialect, untouched)
        if left:
            exc.add_note(f"this run could not remove what it created ({', '.join(left)}): "
                         "run `obflow capture uninstall` as a user with DROP and TRIGGER rights")  # fmt: skip
        raise


def capture_objects(db: Database, dialect: Dialect, table: TableInfo) -> list[str]:
    """The capture triggers and change log that ``table`` has now, by name."""
    triggers = [
        name for name in installed_triggers(db, dialect, table) if is_capture_trigger(dialect, table.name, name)
    ]
    log = log_table_name(dialect, table.name)
    return triggers + [str(row[0]) for row in db.query(log_table_query(dialect), (table.schema, log))]


def _remove_again(db: Database, dialect: Dialect, tables: list[TableInfo]) -> list[str]:
    """Drop the capture objects of ``tables``; those still there after, by qualified name."""
    left = []
    for table in tables:
        for statement in uninstall_ddl(dialect, table):
            # a right this user lacks, or the connection is gone: what is left is said below
            with contextlib.suppress(*_STATEMENT_ERRORS):
                db.execute(statement)
        try:
            left += [f"{table.schema}.{name}" for name in capture_objects(db, dialect, table)]
        except _STATEMENT_ERRORS:
            left.append(f"{table.qualified}'s change log and triggers, if any: the database could not be asked")
    return left


def install_missing(db: Database, config: ObflowConfig, tables: list[TableInfo]) -> list[TableInfo]:
    """Create the change log and triggers of those of ``tables`` that have no capture trigger (the others are
    kept current by the schema watch); the tables installed. ``capture.install: never`` refuses instead."""
    dialect = dialect_of(config)
    missing = [
        table
        for table in tables
        if not any(is_capture_trigger(dialect, table.name, name) for name in installed_triggers(db, dialect, table))
    ]
    if missing and config.capture.install == "never":
        raise TableNotFoundError(
            f"{', '.join(t.qualified for t in missing)} ha{'s' if len(missing) == 1 else 've'} no change capture and "
            "capture.install is never: apply `obflow capture install` (review it with --print first), or set "
            "capture.install: missing"
        )
    install_tables(db, dialect, [(table, install_ddl(dialect, table)) for table in missing])
    return missing


def configured_tables(config: ObflowConfig, unreachable_because: str) -> list[TableInfo]:
    """The tables as ``source.tables`` describes them (names as the catalog spells them)."""
    dialect, tables, incomplete = dialect_of(config), [], []
    for index, spec in enumerate(config.source.tables):
        if not spec.columns or not spec.primary_key:
            incomplete.append(f"source.tables[{index}] ({spec.name})")
            continue
        schema, name = config.source.schema_and_table(spec)
        # as the catalog names types: MySQL's DATA_TYPE without sizes, Oracle's with (TIMESTAMP(3))
        columns = tuple(
            Column(c.name, c.type.lower() if dialect == "oracle" else base_type(c.type), c.type.lower())
            for c in spec.columns
        )
        kept, skipped = oracle_capturable(columns) if dialect == "oracle" else (columns, ())
        tables.append(TableInfo(schema, name, kept, tuple(spec.primary_key), skipped))
    if incomplete:
        raise SchemaChangeError(
            f"the database cannot be reached ({unreachable_because}), and {', '.join(incomplete)} list no columns "
            "or no primary_key: "
            "give each table its columns (name and type) and primary_key to print its DDL without a database"
        )
    return tables


def ddl_guard_ddl(config: ObflowConfig) -> list[str]:
    """Oracle mode: per schema, the DDL trigger that rejects an ALTER TABLE which would invalidate a capture
    trigger (:func:`capture_agent.dialects.oracle_ddl_guard`). Optional: a tenant may not support DDL
    triggers, and capture works without it."""
    if dialect_of(config) != "oracle":
        return []
    schemas = sorted({config.source.schema_and_table(table)[0] for table in config.source.tables})
    return [oracle_ddl_guard(schema) for schema in schemas]


def apply_ddl_guard(config: ObflowConfig) -> str | None:
    """Create the DDL guard; None when it was created (or is not needed), else why not."""
    try:
        apply_ddl(config, ddl_guard_ddl(config))
    except DRIVER_ERRORS as exc:
        return str(exc.args[-1] if exc.args else exc)
    return None


def apply_ddl(config: ObflowConfig, statements: list[str]) -> None:
    db = Database(config.source)
    db.connect()
    try:
        for statement in statements:
            db.execute(statement)
    finally:
        db.close()


def apply_schema_change(config: ObflowConfig, ddl: str) -> TableInfo:
    """``obflow capture ddl``: apply one ALTER TABLE of a captured table with its triggers out of the way.

    The table's triggers are first replaced by ones that log the key only (they name no other column),
    then the DDL runs, then triggers of the new shape replace them; the agent re-reads the rows changed
    in between. No application statement fails and no change is missed, on every MySQL-family engine;
    only a DDL that drops or renames a primary-key column still breaks the key-only triggers. In Oracle mode
    the session identifies itself to the DDL guard, which then lets it change the columns.
    """
    match = _ALTER_TABLE.match(ddl)
    if match is None:
        raise SchemaChangeError("obflow capture ddl applies one ALTER TABLE statement of a captured table")
    dialect = dialect_of(config)
    wanted = (match.group(1) or config.source.database, match.group(2))
    same = (lambda a, b: a.upper() == b.upper()) if dialect == "oracle" else (lambda a, b: a == b)
    spec = next((s for s in config.source.tables if all(map(same, config.source.schema_and_table(s), wanted))), None)
    if spec is None:
        raise SchemaChangeError(f"{'.'.join(wanted)} is not in source.tables: run the DDL directly")
    db = Database(config.source)
    db.connect()
    try:
        in_place = replaces_in_place(db, dialect)
        table = discover_table(db, config, spec)
        assert table is not None
        if dialect == "oracle":
            db.execute(f"BEGIN DBMS_SESSION.SET_IDENTIFIER('{ORACLE_DDL_CLIENT}'); END;")
        _with_retries(lambda: replace_triggers(db, dialect, table, in_place, key_only=True))
        try:
            db.execute(ddl)
        finally:
            changed = discover_table(db, config, spec) or table
            _with_retries(lambda: replace_triggers(db, dialect, changed, in_place))
        return changed
    finally:
        db.close()


def _with_retries(replace: Callable[[], object]) -> None:
    """The agent may be replacing the same triggers at this moment (it saw the DDL): try again."""
    for attempt in range(10):
        try:
            replace()
            return
        except DRIVER_ERRORS:
            if attempt == 9:
                raise
            time.sleep(0.2)
