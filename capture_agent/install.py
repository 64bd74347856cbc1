"""``obflow capture install|uninstall``: create or remove the change logs and triggers, idempotently."""

from __future__ import annotations

from capture_agent.db import Database
from capture_agent.dialects import install_ddl, uninstall_ddl
from capture_agent.method import dialect_of, discover_tables
from obflow.config import ObflowConfig


def change_log_ddl(config: ObflowConfig, remove: bool = False) -> list[str]:
    """The statements for every configured table (reads the catalog, changes nothing)."""
    db = Database(config.source)
    db.connect()
    try:
        tables = discover_tables(db, config)
    finally:
        db.close()
    build = uninstall_ddl if remove else install_ddl
    return [statement for table in tables for statement in build(dialect_of(config), table)]


def apply_ddl(config: ObflowConfig, statements: list[str]) -> None:
    db = Database(config.source)
    db.connect()
    try:
        for statement in statements:
            db.execute(statement)
    finally:
        db.close()
