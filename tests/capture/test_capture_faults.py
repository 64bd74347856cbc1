"""The capture agent under faults, on real engines: nothing lost, copies only with identical ids."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import orjson
import pymysql
import pytest
import yaml

from capture_agent.agent import run_agent
from capture_agent.install import apply_ddl, change_log_ddl
from obflow.config import ObflowConfig
from obflow.events import ChangeEvent
from obflow.net import free_port
from obflow_dev.emulator import DataHubEmulator
from obflow_dev.localdb import Engine
from tests.support.capture import capture_config, read_topic, start_capture
from tests.support.datahub import ACCESS_KEY, put_log, set_faults
from tests.support.tls import https_emulator_at, make_certificates
from tests.support.waiting import wait_for


class Writer:
    """Inserts rows one transaction at a time until stopped, riding out database restarts."""

    def __init__(self, engine: Engine, database: str, start: int = 0) -> None:
        self.engine, self.database, self.next_id = engine, database, start
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Writer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        self.thread.join(30)

    def _run(self) -> None:
        conn = None
        while not self.stop_event.is_set():
            try:
                conn = conn or self.engine.connect(self.database)
                with conn.cursor() as cur:
                    cur.execute("INSERT INTO orders (id, status) VALUES (%s, 'NEW')", (self.next_id,))
                self.next_id += 1
                time.sleep(0.005)
            except (pymysql.err.Error, OSError):
                conn = None
                time.sleep(0.2)


def table_ids(engine: Engine, database: str) -> set[int]:
    with engine.connect(database) as conn, conn.cursor() as cur:
        cur.execute("SELECT id FROM orders")
        return {int(r[0]) for r in cur.fetchall()}


def assert_exactly_the_table(engine: Engine, database: str, config: ObflowConfig) -> list[ChangeEvent]:
    """Every row in the table was captured; copies, if any, carry the same id and content."""
    expected = table_ids(engine, database)

    def caught_up() -> list[ChangeEvent] | None:
        events = [e for e in read_topic(config) if e.source.table == "orders"]
        return events if {e.key["id"] for e in events} >= expected else None

    events: list[ChangeEvent] = wait_for(caught_up, timeout=60)
    assert {e.key["id"] for e in events} == expected  # nothing lost, nothing invented
    by_id: dict[str, ChangeEvent] = {}
    for event in events:
        first = by_id.setdefault(event.event_id, event)
        # a copy is the same change: only ts_ms (when the agent read it) may differ
        assert first.model_dump(exclude={"ts_ms"}) == event.model_dump(exclude={"ts_ms"})
    assert len({e.key["id"] for e in by_id.values()}) == len(by_id)  # one insert per row
    return events


def test_database_restart_mid_stream_reconnects_within_30s_and_loses_nothing_R1_6_R1_7(
    engine: Engine, database: str, datahub: DataHubEmulator, tmp_path: Path
) -> None:
    config, agent = start_capture(engine, database, datahub, tmp_path)
    try:
        session = agent.agent.db.session
        with Writer(engine, database):
            time.sleep(1)
            assert agent.agent.db.session == session  # one persistent connection while all is well (R1.6)
            engine.kill()
            time.sleep(2)
            engine.start()
            back = time.monotonic()
            wait_for(lambda: agent.agent.db.connected and agent.agent.db.session != session, timeout=30)
            reconnect_seconds = time.monotonic() - back
            time.sleep(1)
        assert reconnect_seconds < 30  # R1.7
        assert_exactly_the_table(engine, database, config)
    finally:
        agent.stop()


def agent_process(config: ObflowConfig, tmp_path: Path) -> subprocess.Popen[bytes]:
    data = config.model_dump(mode="json")
    del data["datahub"]["access_key"]  # the secret comes from the environment, as in production
    path = tmp_path / "capture.yaml"
    path.write_text(yaml.safe_dump(data))
    env = {**os.environ, "OBFLOW_DATAHUB__ACCESS_KEY": ACCESS_KEY}
    log = (tmp_path / "agent.log").open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "obflow.cli", "capture", "run", "--config", str(path)],
        stdout=log,
        stderr=log,
        env=env,
    )


def test_agent_killed_mid_batch_and_restarted_loses_nothing_R9_1_R9_6(
    engine: Engine, database: str, datahub: DataHubEmulator, tmp_path: Path
) -> None:
    config = capture_config(engine, database, tmp_path / "state", datahub.endpoint, snapshot=False, batch_size=50)
    config.capture.http_port = free_port()
    apply_ddl(config, change_log_ddl(config))
    # slow puts keep a batch in flight when the agent is killed
    set_faults(datahub.endpoint, latency_ms=40)
    with Writer(engine, database):
        proc = agent_process(config, tmp_path)
        wait_for(lambda: len(read_topic(config)) > 100, timeout=60)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        time.sleep(0.5)
        proc = agent_process(config, tmp_path)
        time.sleep(2)
    try:
        events = assert_exactly_the_table(engine, database, config)
    finally:
        proc.terminate()
        assert proc.wait(30) == 0  # SIGTERM: finish the batch, commit, exit 0
    assert len(events) >= len(table_ids(engine, database))


def test_a_capture_setting_rollout_resumes_from_the_position_without_gap_or_copy_R5_7(
    engine: Engine, database: str, datahub: DataHubEmulator, tmp_path: Path
) -> None:
    """What the operator's Recreate rollout of the capture Deployment does to the agent: the old one
    gets SIGTERM and exits after committing its position; only then does the new one start, with the
    changed setting, from that position, while the database keeps taking writes throughout."""
    config = capture_config(engine, database, tmp_path / "state", datahub.endpoint, snapshot=False, batch_size=200)
    config.capture.http_port = free_port()
    apply_ddl(config, change_log_ddl(config))
    with Writer(engine, database):
        old = agent_process(config, tmp_path)
        wait_for(lambda: len(read_topic(config)) > 100, timeout=60)
        old.terminate()
        assert old.wait(30) == 0  # the old agent is gone before the new one starts: never two
        sent_by_old = len(read_topic(config))
        config.capture.batch_size, config.capture.poll_interval = 7, 0.02  # the rolled-out change
        new = agent_process(config, tmp_path)
        wait_for(lambda: len(read_topic(config)) > sent_by_old + 100, timeout=60)
    try:
        events = assert_exactly_the_table(engine, database, config)
    finally:
        new.terminate()
        assert new.wait(30) == 0
    assert len(events) == len({e.event_id for e in events})  # a graceful handover sends nothing twice


def test_datahub_failures_hold_the_position_and_lose_nothing_R1_5(
    engine: Engine, database: str, datahub: DataHubEmulator, tmp_path: Path
) -> None:
    config, agent = start_capture(engine, database, datahub, tmp_path)
    position_file = tmp_path / "state" / "position.json"
    try:
        with engine.connect(database) as conn, conn.cursor() as cur:
            cur.execute("INSERT INTO orders (id, status) VALUES (1, 'NEW')")
            wait_for(lambda: len(read_topic(config)) == 1)
            # the agent persists the position right after DataHub accepted the batch: wait for that
            wait_for(lambda: orjson.loads(position_file.read_bytes())["tables"][f"{database}.orders"]["hw"] >= 1)
            committed = orjson.loads(position_file.read_bytes())
            # DataHub now fails 1 + 3 retries: the batch is not accepted, the position must hold
            set_faults(datahub.endpoint, fail_next_puts=4)
            puts_before = len(put_log(datahub.endpoint))
            cur.execute("INSERT INTO orders (id, status) VALUES (2, 'NEW')")
            wait_for(lambda: len(put_log(datahub.endpoint)) >= puts_before + 4)
            assert orjson.loads(position_file.read_bytes()) == committed
        assert_exactly_the_table(engine, database, config)
    finally:
        agent.stop()
    attempts = put_log(datahub.endpoint)[puts_before : puts_before + 5]
    assert [a["whole_request_failed"] for a in attempts] == [True, True, True, True, False]
    gaps = [float(str(b["time"])) - float(str(a["time"])) for a, b in itertools.pairwise(attempts[:4])]
    # the configured retry interval (200 ms here) plus a request; the upper bound allows for a loaded machine
    assert all(0.18 <= gap <= 1.0 for gap in gaps), gaps


def test_health_readiness_and_metrics_endpoints_R7_8(
    engine: Engine, database: str, datahub: DataHubEmulator, tmp_path: Path
) -> None:
    config, agent = start_capture(engine, database, datahub, tmp_path)
    try:
        base = f"http://127.0.0.1:{agent.agent.http_port}"
        with engine.connect(database) as conn, conn.cursor() as cur:
            cur.execute("INSERT INTO orders (id, status) VALUES (1, 'NEW')")
        wait_for(lambda: len(read_topic(config)) == 1)
        assert httpx.get(f"{base}/healthz").status_code == 200
        ready = httpx.get(f"{base}/readyz")
        assert ready.status_code == 200 and "database=up datahub=up" in ready.text
        metrics = httpx.get(f"{base}/metrics").text
        for name in (
            "obflow_capture_changes_total",
            "obflow_capture_lag_seconds_bucket",
            "obflow_capture_backlog",
            "obflow_capture_position",
            "obflow_capture_reconnects_total",
            "obflow_datahub_put_retries_total",
        ):
            assert name in metrics, name
        engine.kill()
        wait_for(lambda: httpx.get(f"{base}/readyz").status_code == 503, timeout=15)
        assert httpx.get(f"{base}/healthz").status_code == 200
    finally:
        agent.stop()
        engine.start()


def test_invalid_config_refuses_to_start_naming_the_key_R10_4(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"capture": {"method": "magic", "poll_interval": "often"}}))
    result = subprocess.run(
        [sys.executable, "-m", "obflow.cli", "capture", "run", "--config", str(path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "capture.method" in result.stderr and "capture.poll_interval" in result.stderr


def test_an_untrusted_datahub_certificate_stops_the_agent_at_start_saying_what_to_set(
    mariadb: Engine, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Over https with a CA that did not sign the endpoint's certificate (tests/support/tls.py): exit 2 after the
    database answered, the fault naming datahub.ca_file, and nothing captured."""
    certificates = make_certificates(tmp_path)
    emulator = https_emulator_at(tmp_path, certificates.server)
    try:
        with mariadb.connect() as conn, conn.cursor() as cur:
            cur.execute("CREATE DATABASE IF NOT EXISTS tls_untrusted")
        config = capture_config(mariadb, "tls_untrusted", tmp_path / "state", emulator.endpoint)
        config.datahub.ca_file = certificates.other_ca
        assert run_agent(config) == 2
        refused = [r for r in caplog.records if getattr(r, "event", None) == "config.invalid"]
        assert refused and "set datahub.ca_file" in refused[0].getMessage()
        assert emulator.stats.records_stored == 0
    finally:
        emulator.stop()
