"""Both database drivers capture uses, against real engines. pyoceanbase is the Oracle-mode driver; no
Oracle-mode tenant runs on this machine, so it is proven here against the MySQL-mode engines (its
Oracle-mode capability flag is harmless to them): it raises its own error classes, and the agent must
still tell a failed statement from a lost connection, and reconnect after one (R1.7)."""

from __future__ import annotations

import threading

import pytest

from capture_agent.db import DRIVER_ERRORS, DRIVERS, ConnectionLostError, Database, is_connection_error
from obflow.config import SourceConfig
from obflow_dev.localdb import Engine


@pytest.mark.parametrize("mode", ["mysql", "oracle"])
def test_each_drivers_failed_statement_and_lost_connection_are_told_apart_R1_7(
    engine: Engine, database: str, mode: str
) -> None:
    conn = DRIVERS[mode].connect(host="127.0.0.1", port=engine.port, user="root", password="", database=database)
    with pytest.raises(DRIVER_ERRORS) as failed:
        conn.cursor().execute("SELECT no_such_column FROM DUAL")
    assert not is_connection_error(failed.value)
    with engine.connect(database) as admin, admin.cursor() as cur:
        cur.execute(f"KILL {conn.thread_id()}")
    with pytest.raises(DRIVER_ERRORS) as lost:
        conn.cursor().execute("SELECT 1")
    assert is_connection_error(lost.value), lost.value


@pytest.mark.parametrize("mode", ["mysql", "oracle"])
def test_a_database_on_either_driver_reports_a_lost_connection_and_reconnects_R1_7(
    engine: Engine, database: str, mode: str
) -> None:
    """``mode: oracle`` picks pyoceanbase (and no default database): here against a MySQL-mode engine."""
    source = SourceConfig(engine="oceanbase", mode=mode, host="127.0.0.1", port=engine.port, user="root",
                          database=database)  # fmt: skip
    db = Database(source)
    db.connect()
    try:
        (session,) = db.query("SELECT CONNECTION_ID()")[0]
        with engine.connect() as admin, admin.cursor() as cur:
            cur.execute(f"KILL {session}")
        with pytest.raises(ConnectionLostError):
            db.query("SELECT 1")
        assert not db.connected
        assert db.reconnect(threading.Event())
        assert db.query("SELECT 1") == [(1,)]
        assert type(db._conn).__module__.split(".")[0] == DRIVERS[mode].__name__
    finally:
        db.close()
