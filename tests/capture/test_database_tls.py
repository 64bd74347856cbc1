"""TLS to the database (source.tls, source.ca_file) against a real MariaDB that accepts TLS connections only
(``require_secure_transport``), its certificate made by tests/support/tls.py's CA."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from capture_agent.agent import run_agent
from capture_agent.binlog import BinlogCapture
from capture_agent.db import DRIVER_ERRORS, ConnectionLostError, Database
from capture_agent.install import apply_ddl, change_log_ddl
from capture_agent.privileges import describe
from obflow.config import ObflowConfig
from obflow.events import ChangeEvent
from obflow_dev.emulator import DataHubEmulator
from obflow_dev.localdb import MARIADBD, Engine
from tests.support.capture import RunningAgent, capture_config, read_topic
from tests.support.tls import Certificates, make_certificates
from tests.support.waiting import wait_for


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("database-certificates"))


@pytest.fixture(scope="module")
def tls_mariadb(tmp_path_factory: pytest.TempPathFactory, certificates: Certificates) -> Iterator[Engine]:
    if not Path(MARIADBD).exists() or shutil.which("mariadb-install-db") is None:
        pytest.skip("MariaDB is not installed (scripts/bootstrap.sh installs mariadb-server)")
    base = tmp_path_factory.mktemp("mariadb-tls")
    serve_certificate(base, certificates.server)
    options = [f"--ssl-cert={base / 'server.pem'}", f"--ssl-key={base / 'server.key'}", "--require-secure-transport=ON"]
    engine = Engine("mariadb", base, options).start()
    yield engine
    engine.kill()


def serve_certificate(base: Path, certificate: tuple[Path, Path]) -> None:
    """Put ``certificate`` (certificate, key) where the server reads it (at start, and at FLUSH SSL)."""
    shutil.copyfile(certificate[0], base / "server.pem")
    shutil.copyfile(certificate[1], base / "server.key")


@pytest.fixture
def engine(tls_mariadb: Engine) -> Engine:
    if tls_mariadb.proc is None or tls_mariadb.proc.poll() is not None:
        tls_mariadb.start()
    return tls_mariadb


def tls_config(
    engine: Engine, database: str, datahub: DataHubEmulator, tmp_path: Path, ca_file: Path | None, **capture: Any
) -> ObflowConfig:
    config = capture_config(engine, database, tmp_path / "state", datahub.endpoint, snapshot=False, **capture)
    source = config.source.model_copy(update={"tls": True, "ca_file": ca_file})
    return config.model_copy(update={"source": source})


def refusals(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if getattr(r, "event", None) == "config.invalid"]


@pytest.mark.parametrize("method", ["changelog", "binlog"])
def test_capture_over_tls_verifies_the_database_and_streams_its_changes(
    engine: Engine, database: str, datahub: DataHubEmulator, tmp_path: Path, certificates: Certificates, method: str
) -> None:
    config = tls_config(engine, database, datahub, tmp_path, certificates.ca, method=method)
    if method == "changelog":
        apply_ddl(config, change_log_ddl(config))
    verified = Database(config.source)
    verified.connect()
    ((_, tls_version),) = verified.query("SHOW SESSION STATUS LIKE 'Ssl_version'")
    verified.close()
    assert str(tls_version).startswith("TLSv1."), tls_version
    agent = RunningAgent(config)
    try:
        with engine.connect(database) as conn, conn.cursor() as cur:
            cur.execute("INSERT INTO orders (id, status) VALUES (1, 'OVER_TLS')")

        def captured() -> list[ChangeEvent] | None:
            found = [e for e in read_topic(config) if e.source.table == "orders"]
            return found or None

        events: list[ChangeEvent] = wait_for(captured, timeout=20)
    finally:
        agent.stop()
    assert [(e.op, e.after["status"] if e.after else None, e.source.method) for e in events] == [
        ("c", "OVER_TLS", method)
    ]


@pytest.mark.parametrize("trusted", ["another CA", "the public CAs"])
def test_an_untrusted_database_certificate_stops_the_agent_at_start_saying_what_to_set(
    engine: Engine,
    database: str,
    datahub: DataHubEmulator,
    tmp_path: Path,
    certificates: Certificates,
    caplog: pytest.LogCaptureFixture,
    trusted: str,
) -> None:
    """Exit 2 (a setting to change, not an outage to wait out), the fault naming source.ca_file, nothing
    installed or sent; ``obflow capture install`` says the same."""
    ca_file = certificates.other_ca if trusted == "another CA" else None
    config = tls_config(engine, database, datahub, tmp_path, ca_file)
    assert run_agent(config) == 2
    (refused,) = refusals(caplog)
    assert "the database at 127.0.0.1" in refused and "set source.ca_file" in refused, refused
    assert (f"the CAs in source.ca_file ({ca_file})" if ca_file else "the public CAs (certifi)") in refused
    assert datahub.stats.records_stored == 0

    with pytest.raises(DRIVER_ERRORS) as caught:
        apply_ddl(config, change_log_ddl(config))
    assert "set source.ca_file" in describe(caught.value, config.source)


def test_a_database_certificate_for_another_host_is_refused_though_its_ca_is_trusted(
    engine: Engine,
    database: str,
    datahub: DataHubEmulator,
    tmp_path: Path,
    certificates: Certificates,
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = tls_config(engine, database, datahub, tmp_path, certificates.ca)
    with engine.connect() as conn, conn.cursor() as cur:
        serve_certificate(engine.base_dir, certificates.wrong_host)
        cur.execute("FLUSH SSL")
        try:
            assert run_agent(config) == 2
        finally:
            serve_certificate(engine.base_dir, certificates.server)
            cur.execute("FLUSH SSL")
    (refused,) = refusals(caplog)
    assert "make sure the certificate names 127.0.0.1" in refused, refused
    trusted = Database(config.source)
    trusted.connect()  # the right certificate again
    trusted.close()


def test_the_binlog_stream_verifies_the_database_certificate_too(
    engine: Engine, database: str, datahub: DataHubEmulator, tmp_path: Path, certificates: Certificates
) -> None:
    """The binlog is read over a connection of its own (python-mysql-replication's): it gets the same
    verification, shown by the same stream refusing a CA that did not sign the certificate."""
    with engine.connect() as conn, conn.cursor() as cur:
        cur.execute("SHOW MASTER STATUS")
        log_file, log_pos = cur.fetchone()[:2]
    position = {"method": "binlog", "log_file": log_file, "log_pos": log_pos, "tables": {}}
    for ca_file, refused in ((certificates.ca, False), (certificates.other_ca, True)):
        config = tls_config(engine, database, datahub, tmp_path, ca_file, method="binlog")
        capture = BinlogCapture(config, Database(config.source), [])
        try:
            if refused:
                with pytest.raises(ConnectionLostError, match="certificate verify failed"):
                    capture.poll(position)
            else:
                assert capture.poll(position).events == []
        finally:
            capture.close()


def test_tls_asked_of_a_database_without_it_stops_the_agent_naming_source_tls(
    mariadb: Engine, datahub: DataHubEmulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The package's plain MariaDB (no certificate): the agent does not fall back to a clear connection."""
    with mariadb.connect() as conn, conn.cursor() as cur:
        cur.execute("CREATE DATABASE IF NOT EXISTS tls_refused")
    config = tls_config(mariadb, "tls_refused", datahub, tmp_path, None)
    caplog.set_level(logging.INFO)
    assert run_agent(config) == 2
    (refused,) = refusals(caplog)
    assert "does not offer TLS" in refused and "source.tls: false" in refused, refused
