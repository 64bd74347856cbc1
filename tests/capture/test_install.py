"""`obflow capture install|uninstall` on real engines: idempotent, printable, reversible."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from capture_agent.db import Database
from capture_agent.dialects import schema_version
from capture_agent.method import discover_tables
from capture_agent.schema import installed_triggers
from obflow.net import free_port
from obflow_dev.emulator import DataHubEmulator
from obflow_dev.localdb import Engine
from tests.support.capture import RunningAgent, capture_config, read_topic
from tests.support.waiting import wait_for


def cli(
    engine: Engine, database: str, tmp_path: Path, /, *args: str, **source: Any
) -> subprocess.CompletedProcess[str]:
    config = capture_config(engine, database, tmp_path / "state", "http://127.0.0.1:1")
    data = config.model_dump(mode="json")
    data["source"].update(source)
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


ORDERS_AS_CONFIGURED = {
    "name": "orders",
    "primary_key": ["id"],
    "columns": [{"name": "id", "type": "BIGINT"}, {"name": "status", "type": "VARCHAR(20)"},
                {"name": "amount", "type": "DECIMAL(12,2)"}],
}  # fmt: skip


def test_print_without_a_database_uses_the_configured_columns_and_the_agent_adopts_what_it_installed(
    engine: Engine, database: str, datahub: DataHubEmulator, tmp_path: Path
) -> None:
    """A DBA reviews the DDL before granting anything: no database is reachable (a closed port)."""
    closed = {"port": free_port(), "tables": [ORDERS_AS_CONFIGURED]}
    printed = cli(engine, database, tmp_path, "install", "--print", **closed)
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout.startswith("-- from the columns in ") and "could not be reached" in printed.stdout
    assert "CAST(NEW.`amount` AS CHAR)" in printed.stdout  # typed from the config: DECIMAL as exact text
    incomplete = cli(engine, database, tmp_path, "install", "--print", port=closed["port"])
    assert incomplete.returncode == 2 and "Traceback" not in incomplete.stderr
    assert (
        "cannot be reached (Can't connect" in incomplete.stderr and "source.tables[0] (orders), " in incomplete.stderr
    )

    # the DBA runs the reviewed script; the agent then gives the triggers the catalog's shape at its first poll
    script = "\n".join(line for line in printed.stdout.splitlines() if not line.startswith("--"))
    with engine.connect(database) as conn, conn.cursor() as cur:
        for statement in script.split(";\n\n"):
            cur.execute(statement.strip().removesuffix(";"))
    config = capture_config(engine, database, tmp_path / "agent", datahub.endpoint, snapshot=False)
    config = config.model_copy(update={"source": config.source.model_copy(update={"tables": config.source.tables[:1]})})
    db = Database(config.source)
    db.connect()
    agent = RunningAgent(config)
    try:
        (table,) = discover_tables(db, config)

        def adopted() -> bool:
            bodies = installed_triggers(db, "mysql", table).values()
            return len(bodies) == 3 and all(f"'{schema_version(table)}'" in body for body in bodies)

        wait_for(adopted, 10)
        with engine.connect(database) as conn, conn.cursor() as cur:
            cur.execute("INSERT INTO orders (id, status, amount) VALUES (1, 'NEW', 2.50)")
        events = wait_for(lambda: [e for e in read_topic(config) if e.source.table == "orders"] or None, 10)
    finally:
        agent.stop()
        db.close()
    assert [(e.op, e.after and e.after["amount"]) for e in events] == [("c", "2.50")]
    assert events[0].after is not None and "paid_at" in events[0].after  # the catalog's columns, not the config's


def read_only_user(engine: Engine, database: str) -> None:
    """User ``reader`` (password ``reader-pw``), who may only SELECT in ``database``."""
    user_with(engine, database, "reader", "SELECT")


def user_with(engine: Engine, database: str, user: str, privileges: str) -> None:
    """User ``user`` (password ``<user>-pw``), with ``privileges`` on ``database`` only."""
    with engine.connect(database) as conn, conn.cursor() as cur:
        cur.execute(f"DROP USER IF EXISTS '{user}'@'%'")
        cur.execute(f"CREATE USER '{user}'@'%' IDENTIFIED BY '{user}-pw'")
        cur.execute(f"GRANT {privileges} ON `{database}`.* TO '{user}'@'%'")


def without_trigger(engine: Engine, user: str) -> str:
    """What a user with every right but TRIGGER is told: our MariaDB writes a binary log, and then refuses a
    user without SUPER before it looks at the TRIGGER privilege."""
    if engine.kind == "mariadb":
        return f"user {user!r} may not create the capture triggers while the database writes a binary log (1419)"
    return f"user {user!r} lacks the TRIGGER privilege"


def test_an_install_refused_half_way_removes_what_it_created_and_keeps_what_was_there(
    engine: Engine, database: str, tmp_path: Path
) -> None:
    """A user who may create the change logs but not the triggers: the first CREATE TRIGGER fails after a
    change log was created. The run drops the logs it made, keeps one that was there before with its rows
    (changes not yet read, perhaps), and names what is missing (issue 21): the TRIGGER privilege, or, where the
    database writes a binary log (our MariaDB), the setting that lets a user without SUPER create triggers."""
    user_with(engine, database, "installer", "SELECT, INSERT, DELETE, CREATE, DROP")
    with engine.connect(database) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE order_lines__obflow_log (seq BIGINT PRIMARY KEY, note TEXT)")
        cur.execute("INSERT INTO order_lines__obflow_log VALUES (7, 'a change not yet read')")
    result = cli(engine, database, tmp_path, "install", user="installer", password="installer-pw")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert without_trigger(engine, "installer") in result.stderr, result.stderr
    assert "GRANT SELECT, INSERT, DELETE, CREATE, DROP, TRIGGER" in result.stderr, result.stderr
    assert "could not remove" not in result.stderr, result.stderr
    triggers, tables = objects(engine, database)
    assert triggers == set() and tables == {"orders", "order_lines", "order_lines__obflow_log"}
    with engine.connect(database) as conn, conn.cursor() as cur:
        cur.execute("SELECT seq, note FROM order_lines__obflow_log")
        assert cur.fetchall() == ((7, "a change not yet read"),)


def test_what_a_refused_install_cannot_remove_is_named_with_the_way_out(
    engine: Engine, database: str, tmp_path: Path
) -> None:
    """A user who may create tables but neither drop them nor create triggers: the change log it made stays,
    and the message names it and says how to remove it (issue 21)."""
    user_with(engine, database, "creator", "SELECT, INSERT, DELETE, CREATE")
    result = cli(engine, database, tmp_path, "install", user="creator", password="creator-pw")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert f"could not remove what it created ({database}.orders__obflow_log)" in result.stderr, result.stderr
    assert "run `obflow capture uninstall` as a user with DROP and TRIGGER rights" in result.stderr, result.stderr
    assert objects(engine, database) == (set(), {"orders", "order_lines", "orders__obflow_log"})


def test_a_user_without_the_rights_to_install_gets_the_grant_that_fixes_it(
    engine: Engine, database: str, tmp_path: Path
) -> None:
    """A capture user who may only read: no traceback, the missing privilege named and the GRANT that
    gives what the change-log capture needs; nothing half installed (issue 21)."""
    read_only_user(engine, database)
    result = cli(engine, database, tmp_path, "install", user="reader", password="reader-pw")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert "user 'reader' lacks the CREATE privilege" in result.stderr, result.stderr
    assert f"GRANT SELECT, INSERT, DELETE, CREATE, DROP, TRIGGER ON `{database}`.* TO 'reader'@'%'" in result.stderr
    assert objects(engine, database)[0] == set()


def test_a_wrong_password_and_an_unreachable_database_are_said_as_such(
    engine: Engine, database: str, tmp_path: Path
) -> None:
    wrong = cli(engine, database, tmp_path, "install", password="not-the-password")
    assert wrong.returncode == 2 and "Traceback" not in wrong.stderr, wrong.stderr
    assert "refused user" in wrong.stderr and "check source.user and source.password" in wrong.stderr, wrong.stderr
    unreachable = cli(engine, database, tmp_path, "install", port=free_port(), connect_timeout="2s")
    assert unreachable.returncode == 2 and "Traceback" not in unreachable.stderr, unreachable.stderr
    assert "cannot reach the database at" in unreachable.stderr, unreachable.stderr


def test_a_database_that_does_not_exist_is_named_with_the_setting(
    engine: Engine, database: str, tmp_path: Path
) -> None:
    missing = cli(engine, database, tmp_path, "install", database="no_such_db")
    assert missing.returncode == 2 and "Traceback" not in missing.stderr, missing.stderr
    assert "database 'no_such_db' does not exist at" in missing.stderr, missing.stderr
    assert "set source.database" in missing.stderr and "(1049, " not in missing.stderr, missing.stderr


@pytest.mark.parametrize("lacks", ["CREATE", "TRIGGER"])
def test_the_agent_says_what_to_grant_and_leaves_nothing_behind(
    engine: Engine, database: str, tmp_path: Path, datahub: DataHubEmulator, lacks: str
) -> None:
    """At start the agent installs what is missing; a user without the rights gets config.invalid with
    the GRANT, exit 2, instead of a traceback or a crash loop that says nothing, and no change log is left
    half installed (issue 21)."""
    user_with(engine, database, "capturer", "SELECT" if lacks == "CREATE" else "SELECT, INSERT, DELETE, CREATE, DROP")
    config = capture_config(engine, database, tmp_path / "state", datahub.endpoint)
    data = config.model_dump(mode="json")
    data["source"].update(user="capturer", password="capturer-pw")
    data["datahub"]["access_key"] = config.datahub.access_key.get_secret_value()
    path = tmp_path / "capture.yaml"
    path.write_text(yaml.safe_dump(data))
    result = subprocess.run(
        [sys.executable, "-m", "obflow.cli", "capture", "run", "--config", str(path)],
        capture_output=True, text=True, timeout=120, check=False, env=dict(os.environ),
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 2, output[-2000:]
    assert "Traceback" not in output and "event=config.invalid" in output, output[-2000:]
    told = "user 'capturer' lacks the CREATE privilege" if lacks == "CREATE" else without_trigger(engine, "capturer")
    assert told in output, output[-2000:]
    assert "GRANT SELECT, INSERT, DELETE, CREATE, DROP, TRIGGER" in output, output[-2000:]
    assert objects(engine, database) == (set(), {"orders", "order_lines"})
