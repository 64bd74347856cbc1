"""`obflow capture install|uninstall` on real engines: idempotent, printable, reversible."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from obflow.localdb import Engine
from tests.capture.conftest import capture_config


def cli(engine: Engine, database: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    config = capture_config(engine, database, tmp_path / "state", "http://127.0.0.1:1")
    data = config.model_dump(mode="json")
    del data["datahub"]["access_key"]
    path = tmp_path / "capture.yaml"
    path.write_text(yaml.safe_dump(data))
    return subprocess.run(
        [sys.executable, "-m", "obflow.cli", "capture", *args, "--config", str(path)],
        capture_output=True, text=True, timeout=120, check=False, env=dict(os.environ),
    )  # fmt: skip


def objects(engine: Engine, database: str) -> tuple[set[str], set[str]]:
    with engine.connect(database) as conn, conn.cursor() as cur:
        cur.execute("SELECT TRIGGER_NAME FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = %s", (database,))
        triggers = {r[0] for r in cur.fetchall()}
        cur.execute("SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s", (database,))
        tables = {r[0] for r in cur.fetchall()}
    return triggers, tables


def test_install_twice_then_uninstall(engine: Engine, database: str, tmp_path: Path) -> None:
    printed = cli(engine, database, tmp_path, "install", "--print")
    assert printed.returncode == 0, printed.stderr
    assert "CREATE TRIGGER" in printed.stdout and objects(engine, database)[0] == set()  # printed, not applied
    for _ in range(2):
        installed = cli(engine, database, tmp_path, "install")
        assert installed.returncode == 0, installed.stderr
    triggers, tables = objects(engine, database)
    assert triggers == {f"{t}__obflow_{op}" for t in ("orders", "order_lines") for op in ("ins", "upd", "del")}
    assert {"orders__obflow_log", "order_lines__obflow_log"} <= tables
    removed = cli(engine, database, tmp_path, "uninstall")
    assert removed.returncode == 0, removed.stderr
    triggers, tables = objects(engine, database)
    assert triggers == set() and tables == {"orders", "order_lines"}


def test_a_missing_table_is_named(engine: Engine, database: str, tmp_path: Path) -> None:
    with engine.connect(database) as conn, conn.cursor() as cur:
        cur.execute("DROP TABLE order_lines")
    result = cli(engine, database, tmp_path, "install")
    assert result.returncode == 2
    assert f"source.tables: table {database}.order_lines does not exist" in result.stderr
    assert "Traceback" not in result.stderr


def test_capture_ddl_applies_an_alter_table_and_names_what_it_cannot_apply(
    engine: Engine, database: str, tmp_path: Path
) -> None:
    assert cli(engine, database, tmp_path, "install").returncode == 0
    applied = cli(engine, database, tmp_path, "ddl", "ALTER TABLE orders ADD COLUMN channel VARCHAR(20)")
    assert applied.returncode == 0, applied.stderr
    assert f"applied to {database}.orders" in applied.stdout and "channel" in applied.stdout
    triggers, _ = objects(engine, database)
    assert len({name for name in triggers if name.startswith("orders__obflow_")}) == 3  # one per op, new shape
    for statement, says in (
        ("DROP TABLE orders", "applies one ALTER TABLE statement of a captured table"),
        ("ALTER TABLE other ADD COLUMN c INT", f"{database}.other is not in source.tables: run the DDL directly"),
    ):
        refused = cli(engine, database, tmp_path, "ddl", statement)
        assert refused.returncode == 2 and says in refused.stderr and "Traceback" not in refused.stderr
    failed = cli(engine, database, tmp_path, "ddl", "ALTER TABLE orders DROP COLUMN nope")
    assert failed.returncode == 1 and "the database refused it" in failed.stderr, failed.stderr
    assert "Traceback" not in failed.stderr
