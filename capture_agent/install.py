"""``obflow capture install|uninstall``: create or remove the change logs and triggers, idempotently."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from capture_agent.db import DRIVER_ERRORS, DRIVER_OR_NETWORK_ERRORS, Database
from capture_agent.dialects import (
    ORACLE_DDL_CLIENT,
    Column,
    TableInfo,
    base_type,
    install_ddl,
    is_capture_trigger,
    oracle_capturable,
    oracle_ddl_guard,
    uninstall_ddl,
)
from capture_agent.method import TableNotFoundError, dialect_of, discover_table, discover_tables
from capture_agent.schema import installed_triggers, replace_triggers, replaces_in_place
from obflow.config import ObflowConfig

_NAME = r"""[`"]?([\w$#]+)[`"]?"""
_ALTER_TABLE = re.compile(rf"\s*ALTER\s+TABLE\s+(?:{_NAME}\s*\.\s*)?{_NAME}\s", re.IGNORECASE)


class SchemaChangeError(Exception):
    """A DDL that obflow cannot apply or generate; the message says why and what to do."""


@dataclass(frozen=True)
class ChangeLogPlan:
    """What ``obflow capture install|uninstall`` would run, and for which tables."""

    statements: list[str]
    tables: list[TableInfo]
    offline_because: str = ""
    """Set when the database could not be reached and the tables are as the config describes them."""


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
        tables = configured_tables(config, why)
        build = uninstall_ddl if remove else install_ddl
        statements = [statement for table in tables for statement in build(dialect, table)]
        return ChangeLogPlan(statements, tables, offline_because=why)
    try:
        tables = discover_tables(db, config)
        if remove:
            return ChangeLogPlan([s for table in tables for s in uninstall_ddl(dialect, table)], tables)
        in_place = replaces_in_place(db, dialect)
        statements = []
        for table in tables:
            installed = installed_triggers(db, dialect, table)
            statements += install_ddl(dialect, table, installed, replace_in_place=in_place)
        return ChangeLogPlan(statements, tables)
    finally:
        db.close()


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
    for table in missing:
        for statement in install_ddl(dialect, table):
            db.execute(statement)
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
