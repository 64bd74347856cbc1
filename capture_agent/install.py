"""``obflow capture install|uninstall``: create or remove the change logs and triggers, idempotently."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

from capture_agent.db import DRIVER_ERRORS, Database
from capture_agent.dialects import TableInfo, install_ddl, installed_triggers_query, uninstall_ddl
from capture_agent.method import dialect_of, discover_table, discover_tables
from capture_agent.schema import catches_stale_columns, replace_triggers
from obflow.config import ObflowConfig

_ALTER_TABLE = re.compile(r"\s*ALTER\s+TABLE\s+(?:`?(\w+)`?\s*\.\s*)?`?(\w+)`?\s", re.IGNORECASE)


class SchemaChangeError(Exception):
    """A DDL that ``obflow capture ddl`` cannot apply; the message says why and what to do."""


def change_log_ddl(config: ObflowConfig, remove: bool = False) -> list[str]:
    """The statements for every configured table (reads the catalog, changes nothing)."""
    dialect = dialect_of(config)
    db = Database(config.source)
    db.connect()
    try:
        tables = discover_tables(db, config)
        if remove or dialect == "oracle":
            build = uninstall_ddl if remove else install_ddl
            return [statement for table in tables for statement in build(dialect, table)]
        in_place = catches_stale_columns(str(db.query("SELECT VERSION()")[0][0]))
        statements = []
        for table in tables:
            installed = {str(n): str(b) for n, b in db.query(installed_triggers_query(), (table.schema, table.name))}
            statements += install_ddl(dialect, table, installed, replace_in_place=in_place)
        return statements
    finally:
        db.close()


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
    only a DDL that drops or renames a primary-key column still breaks the key-only triggers.
    """
    match = _ALTER_TABLE.match(ddl)
    if match is None:
        raise SchemaChangeError("obflow capture ddl applies one ALTER TABLE statement of a captured table")
    if dialect_of(config) == "oracle":
        raise SchemaChangeError("obflow capture ddl: Oracle mode is not supported yet; see docs/capture.md")
    wanted = (match.group(1) or config.source.database, match.group(2))
    spec = next((s for s in config.source.tables if config.source.schema_and_table(s) == wanted), None)
    if spec is None:
        raise SchemaChangeError(f"{'.'.join(wanted)} is not in source.tables: run the DDL directly")
    db = Database(config.source)
    db.connect()
    try:
        in_place = catches_stale_columns(str(db.query("SELECT VERSION()")[0][0]))
        table = discover_table(db, config, spec)
        assert table is not None
        _with_retries(lambda: replace_triggers(db, table, in_place, key_only=True))
        try:
            db.execute(ddl)
        finally:
            changed = discover_table(db, config, spec) or table
            _with_retries(lambda: replace_triggers(db, changed, in_place))
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
