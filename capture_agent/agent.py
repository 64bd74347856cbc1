"""The capture agent: poll the source, ship to DataHub, commit the position, repeat.

Delivery rule (R9.1): the position is persisted only after DataHub accepted every event before it.
A crash at any point therefore resumes from a committed position and replays what followed it, with
the same event ids (R9.6) — at-least-once, the copies removable downstream by id.

``/healthz`` (the process is alive), ``/readyz`` (connected to the database, and DataHub accepted
the last batch or none was due) and ``/metrics`` (Prometheus) are served on ``capture.http_port``
(R7.8). SIGTERM finishes the batch in flight, commits its position and exits 0.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from functools import partial
from typing import Any

from datahub.exceptions import DatahubException
from prometheus_client import Counter, Gauge, Histogram
from requests.exceptions import RequestException

from capture_agent.changelog import ChangeLogCapture
from capture_agent.db import DRIVER_ERRORS, ConnectionLostError, Database, is_tls_refusal
from capture_agent.install import install_missing
from capture_agent.method import Captured, CaptureMethod, Position, TableNotFoundError, discover_tables
from capture_agent.privileges import describe, explain
from capture_agent.state import PositionStore, ResnapshotRequest, ResnapshotRequests
from obflow.config import ObflowConfig
from obflow.datahub.client import ensure_change_topic, make_client
from obflow.datahub.producer import DeliveryError, Producer
from obflow.health import HealthServer
from obflow.log import Fault, log_event, log_fault
from obflow.runtime import refuse_start_without_datahub

log = logging.getLogger("obflow.capture")

CHANGES = Counter("obflow_capture_changes", "Changes accepted by DataHub", ["table", "op"])
LAG = Histogram(
    "obflow_capture_lag_seconds",
    "Commit in the database to acceptance by DataHub",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300),
)
BACKLOG = Gauge("obflow_capture_backlog", "Changes in the change log not yet shipped", ["table"])
POSITION = Gauge("obflow_capture_position", "Committed change-log high-water mark", ["table"])
LAST_COMMIT = Gauge("obflow_capture_last_commit_timestamp_seconds", "When a position was last committed")


def build_method(config: ObflowConfig, db: Database) -> CaptureMethod:
    tables = discover_tables(db, config)
    if config.capture.method == "changelog":
        names = [table.qualified for table in install_missing(db, config, tables)]
        if names:
            log_event(log, "capture.installed", f"change capture installed on {', '.join(names)}", tables=names)
    if config.capture.method == "binlog":
        from capture_agent.binlog import BinlogCapture

        return BinlogCapture(config, db, tables, history_dir=config.capture.state_dir)
    return ChangeLogCapture(config, db, tables, history_dir=config.capture.state_dir)


class CaptureAgent:
    def __init__(self, config: ObflowConfig) -> None:
        self.config = config
        self.db = Database(config.source)
        self.positions = PositionStore(config.capture.state_dir)
        self.requests = ResnapshotRequests(config.capture.state_dir)
        self.stop_event = threading.Event()
        self.datahub_ok = False
        self.http = HealthServer("capture", config.capture.http_port, self._readiness)
        self.method: CaptureMethod | None = None
        self.producer: Producer | None = None

    @property
    def ready(self) -> bool:
        return self.db.connected and self.datahub_ok

    # ---- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Connect to both ends and serve the health endpoints; raises when either end is unusable."""
        self.http.start()
        try:
            self.db.connect()
        except Exception as exc:
            if is_tls_refusal(exc):
                raise
            why = describe(exc, self.config.source, self.config.capture.method)
            log_fault(log, Fault.DB_CONNECTION_LOST, f"database not usable at start: {why}")
            if not self.db.reconnect(self.stop_event):
                raise _StoppedError() from None
        client = make_client(self.config.datahub)
        ensure_change_topic(client, self.config.datahub)
        self.producer = Producer(
            client,
            self.config.datahub.project,
            self.config.datahub.topic,
            self.config.datahub.retry,
            batch_size=self.config.datahub.batch_size,
        )
        self.datahub_ok = True
        self.method = build_method(self.config, self.db)

    def run(self) -> int:
        """Capture until :meth:`stop`; returns the process exit code."""
        assert self.method is not None and self.producer is not None
        method = self.method
        position = self.positions.load()
        if position is None:
            try:
                position = self._with_db(method.initial_position)
            except _StoppedError:
                return 0
            self.positions.save(position)
            log_event(
                log,
                "capture.started_fresh",
                "no committed position: starting from the beginning",
                position=position,
            )
        while not self.stop_event.is_set():
            try:
                captured, request = self._with_db(partial(self._next, method, position))
            except _StoppedError:
                break
            if captured.events and not self._deliver(captured):
                continue
            self._record(captured)
            if captured.position != position:  # an idle poll changes nothing: no write, no fsync, no purge
                position = captured.position
                self.positions.save(position)
                LAST_COMMIT.set_to_current_time()
                try:
                    self._with_db(partial(method.acknowledge, position))
                except _StoppedError:
                    break
            if request is not None:
                self.requests.done(request)
            if not captured.events:
                self.stop_event.wait(self.config.capture.poll_interval)
                try:
                    self._with_db(self.db.heartbeat)
                except _StoppedError:
                    break
        log_event(log, "capture.stopped", "capture agent stopped; position committed", position=position)
        return 0

    def _next(self, method: CaptureMethod, position: Position) -> tuple[Captured, ResnapshotRequest | None]:
        """The next batch: a re-snapshot asked for with `obflow capture resnapshot` when one can start (with
        the request, done once its position is committed), else the next poll."""
        for request in self.requests.pending():
            try:
                planned = method.resnapshot(position, request.table, request.id)
            except (NotImplementedError, TableNotFoundError) as exc:
                log_fault(log, Fault.CAPTURE_RESNAPSHOT_REFUSED, f"re-snapshot of {request.table} refused: {exc}",
                          table=request.table, request=request.id)  # fmt: skip
                self.requests.done(request)
                continue
            if planned is not None:
                log_event(log, "capture.resnapshot", f"re-snapshot of {request.table} planned", table=request.table,
                          request=request.id)  # fmt: skip
                return planned, request
        return method.poll(position), None

    def stop(self) -> None:
        self.stop_event.set()

    def close(self) -> None:
        if self.method is not None:
            self.method.close()
        if self.producer is not None:
            self.producer.close()
        self.db.close()
        self.http.stop()

    # ---- steps ----------------------------------------------------------------------------

    def _deliver(self, captured: Captured) -> bool:
        assert self.producer is not None
        try:
            self.producer.send(captured.events)
        except DeliveryError as exc:
            self.datahub_ok = False
            log_fault(
                log,
                Fault.DATAHUB_UNREACHABLE,
                f"batch not accepted, position held; retrying the batch: {exc}",
                level=logging.ERROR,
                events=len(captured.events),
            )
            self.stop_event.wait(max(self.config.datahub.retry.interval, 1.0))
            return False
        self.datahub_ok = True
        now = time.time()
        for event in captured.events:
            CHANGES.labels(event.source.qualified_table, event.op).inc()
            if event.op != "r":
                LAG.observe(max(now - event.source.commit_ts_ms / 1000, 0))
        return True

    def _record(self, captured: Captured) -> None:
        for table, backlog in captured.backlog.items():
            BACKLOG.labels(table).set(backlog)
        for table, entry in captured.position.get("tables", {}).items():
            if "hw" in entry:
                POSITION.labels(table).set(entry["hw"])

    def _with_db(self, action: Any) -> Any:
        """Run ``action``; on a lost connection reconnect (R1.7) and run it again."""
        while True:
            try:
                return action()
            except ConnectionLostError:
                if not self.db.reconnect(self.stop_event):
                    raise _StoppedError() from None

    def _readiness(self) -> tuple[bool, str]:
        database = "up" if self.db.connected else "down"
        return self.ready, f"database={database} datahub={'up' if self.datahub_ok else 'down'}"

    @property
    def http_port(self) -> int:
        return self.http.port


class _StoppedError(Exception):
    """Stop was requested while waiting for the database."""


def run_agent(config: ObflowConfig) -> int:
    """``obflow capture run``: start, capture until SIGTERM/SIGINT, exit 0."""
    agent = CaptureAgent(config)
    signal.signal(signal.SIGTERM, lambda signum, frame: agent.stop())
    signal.signal(signal.SIGINT, lambda signum, frame: agent.stop())
    try:
        agent.start()
    except TableNotFoundError as exc:
        log_fault(log, Fault.CONFIG_INVALID, f"capture agent refuses to start: {exc}", level=logging.ERROR)
        agent.close()
        return 2
    except DRIVER_ERRORS as exc:
        explained = explain(exc, config.source, config.capture.method)
        if explained is None:
            raise
        # a missing privilege does not come back by retrying: say what to grant, and stop
        log_fault(log, Fault.CONFIG_INVALID, f"capture agent refuses to start: {explained}", level=logging.ERROR)
        agent.close()
        return 2
    except (DatahubException, RequestException) as exc:
        agent.close()
        return refuse_start_without_datahub("capture", exc, config.datahub)
    try:
        return agent.run()
    finally:
        agent.close()
