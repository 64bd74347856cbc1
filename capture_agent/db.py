"""One persistent database connection with a heartbeat and automatic reconnection (R1.6, R1.7).

MySQL-protocol engines (OceanBase MySQL mode, seekdb, MySQL, MariaDB) are reached with PyMySQL.
OceanBase Oracle-mode tenants need a driver that sets the Oracle-mode capability flag (plain PyMySQL
gets error 1235): the ``pyoceanbase`` fork of PyMySQL, used when ``source.mode`` is ``oracle``. The two
raise their own (equally named) error classes: catch the tuples below, never one driver's.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

import pymysql
import pyoceanbase
from prometheus_client import Counter, Gauge

from capture_agent.privileges import TLS_UNSUPPORTED
from obflow.config import SourceConfig
from obflow.log import Fault, log_event, log_fault
from obflow.tls import certificate_failure, verifying_context

log = logging.getLogger("obflow.capture.db")

RECONNECTS = Counter("obflow_capture_reconnects", "Successful database reconnections")
CONNECTED = Gauge("obflow_capture_db_connected", "1 while the database connection is up")

# Client error codes that mean the connection itself is gone (not a failed statement):
# can't connect, server gone away, lost connection during query, lost connection (SSL), killed.
CONNECTION_LOST_CODES = {2003, 2006, 2013, 2055, 1927, 4031}


DRIVERS = {"mysql": pymysql, "oracle": pyoceanbase}
"""The driver per ``source.mode``."""
DRIVER_ERRORS: tuple[type[Exception], ...] = (pymysql.err.MySQLError, pyoceanbase.err.MySQLError)
"""Every error a driver raises: a failed statement or a lost connection."""
OPERATIONAL_ERRORS: tuple[type[Exception], ...] = (pymysql.err.OperationalError, pyoceanbase.err.OperationalError)
INTERFACE_ERRORS: tuple[type[Exception], ...] = (pymysql.err.InterfaceError, pyoceanbase.err.InterfaceError)
DRIVER_OR_NETWORK_ERRORS: tuple[type[Exception], ...] = (*DRIVER_ERRORS, OSError)


def is_connection_error(exc: BaseException) -> bool:
    if isinstance(exc, (*INTERFACE_ERRORS, ConnectionError, TimeoutError, BrokenPipeError)):
        return True
    if isinstance(exc, OPERATIONAL_ERRORS):
        return bool(exc.args) and exc.args[0] in CONNECTION_LOST_CODES
    return False


def tls_settings(config: SourceConfig) -> dict[str, Any]:
    """The driver's TLS argument for ``source.tls``: a verifying context, or nothing (the driver's default,
    TLS when the server offers it, its certificate unchecked)."""
    return {"ssl": verifying_context(config.ca_file)} if config.tls else {}


def is_tls_refusal(exc: BaseException) -> bool:
    """Whether ``exc`` is the TLS the config asks for failing (an untrusted certificate, a server without
    TLS): a setting to change, not an outage to wait out."""
    if certificate_failure(exc) is not None:
        return True
    return isinstance(exc, OPERATIONAL_ERRORS) and bool(exc.args) and exc.args[0] == TLS_UNSUPPORTED


class ConnectionLostError(Exception):
    """The database connection dropped; :meth:`Database.reconnect` brings it back."""


class Database:
    def __init__(self, config: SourceConfig) -> None:
        self.config = config
        self._conn: Any = None
        self._last_used = 0.0
        self._down_since: float | None = None

    @property
    def connected(self) -> bool:
        return self._conn is not None

    @property
    def session(self) -> int | None:
        """Identifies the current connection: it changes with every reconnect."""
        return id(self._conn) if self._conn is not None else None

    def connect(self) -> None:
        user = f"{self.config.user}@{self.config.tenant}" if self.config.tenant else self.config.user
        self._conn = DRIVERS[self.config.mode].connect(
            host=self.config.host,
            port=self.config.port,
            user=user,
            password=self.config.password.get_secret_value(),
            database=self.config.database if self.config.mode == "mysql" else None,
            connect_timeout=self.config.connect_timeout,
            read_timeout=max(self.config.connect_timeout, 30),
            write_timeout=max(self.config.connect_timeout, 30),
            autocommit=True,
            charset="utf8mb4",
            **tls_settings(self.config),
        )
        self._last_used = time.monotonic()
        CONNECTED.set(1)

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:
                log.debug("closing the connection failed", exc_info=True)
            self._conn = None
        CONNECTED.set(0)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Rows of ``sql``; raises :class:`ConnectionLostError` when the connection is gone."""
        rows: list[tuple[Any, ...]] = self._run(sql, params, fetch=True)
        return rows

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Rows affected by ``sql``; raises :class:`ConnectionLostError` when the connection is gone."""
        count: int = self._run(sql, params, fetch=False)
        return count

    def _run(self, sql: str, params: Sequence[Any], fetch: bool) -> Any:
        if self._conn is None:
            raise ConnectionLostError("not connected")
        try:
            with self._conn.cursor() as cursor:
                count = int(cursor.execute(sql, tuple(params) or None))
                result = list(cursor.fetchall()) if fetch else count
        except DRIVER_OR_NETWORK_ERRORS as exc:
            if not is_connection_error(exc):
                raise
            self._lost(exc)
            raise ConnectionLostError(str(exc)) from exc
        self._last_used = time.monotonic()
        return result

    def heartbeat(self) -> None:
        """Ping when the connection has been idle for ``heartbeat_interval`` (keeps it alive, finds it dead)."""
        if self._conn is not None and time.monotonic() - self._last_used >= self.config.heartbeat_interval:
            self.query("SELECT 1" + (" FROM DUAL" if self.config.mode == "oracle" else ""))

    def _lost(self, exc: BaseException) -> None:
        if self._down_since is None:
            self._down_since = time.monotonic()
            log_fault(
                log,
                Fault.DB_CONNECTION_LOST,
                f"database connection lost: {exc}",
                host=self.config.host,
                port=self.config.port,
            )
        self.close()

    def reconnect(self, stop: threading.Event) -> bool:
        """Reconnect with capped exponential backoff until it works or ``stop`` is set.

        The backoff never exceeds ``reconnect_max_backoff`` (at most 30 s), so the connection is back
        within that long after the database is (R1.7).
        """
        if self._down_since is None:
            self._down_since = time.monotonic()
        self.close()
        delay, attempt = 0.1, 0
        while not stop.is_set():
            attempt += 1
            try:
                self.connect()
            except Exception as exc:
                log_fault(
                    log,
                    Fault.DB_RECONNECT_FAILED,
                    f"reconnect attempt {attempt} failed: {exc}",
                    level=logging.INFO,
                    attempt=attempt,
                )
                stop.wait(delay)
                delay = min(delay * 2, self.config.reconnect_max_backoff)
                continue
            down = time.monotonic() - self._down_since
            self._down_since = None
            RECONNECTS.inc()
            log_event(
                log,
                Fault.DB_RECONNECTED.value,
                f"database reconnected after {down:.1f}s",
                downtime_s=round(down, 3),
            )
            return True
        return False
