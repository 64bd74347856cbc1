"""Real database engines for the capture tests, started by the tests themselves.

* seekdb: a real OceanBase engine (MySQL mode), the ``seekdb`` server bundled in the PyPI wheel.
* MariaDB: Debian's ``mariadbd`` in a private data directory with row-based binlog.

Both live as long as the capture tests (package scope: they stop before the slower modules run) and
can be killed and restarted on the same port and data (for the reconnect tests). Each test works in a
database of its own.
"""

from __future__ import annotations

import itertools
import shutil
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from datahub.exceptions import ResourceNotFoundException

from capture_agent.agent import CaptureAgent
from capture_agent.install import apply_ddl, change_log_ddl
from obflow.config import ObflowConfig
from obflow.datahub.client import make_client
from obflow.datahub.consumer import ShardReader, decode_events
from obflow.events import ChangeEvent
from obflow_dev.emulator import DataHubEmulator
from obflow_dev.localdb import MARIADBD, Engine
from tests.datahub.conftest import ACCESS_ID, ACCESS_KEY


@pytest.fixture(scope="package")
def seekdb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    engine = Engine("seekdb", tmp_path_factory.mktemp("seekdb")).start()
    yield engine
    engine.kill()


@pytest.fixture(scope="package")
def mariadb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    if not Path(MARIADBD).exists() or shutil.which("mariadb-install-db") is None:
        pytest.skip("MariaDB is not installed (scripts/bootstrap.sh installs mariadb-server)")
    engine = Engine("mariadb", tmp_path_factory.mktemp("mariadb")).start()
    yield engine
    engine.kill()


@pytest.fixture(params=["seekdb", "mariadb"])
def engine(request: pytest.FixtureRequest) -> Engine:
    engine: Engine = request.getfixturevalue(str(request.param))
    if engine.proc is None or engine.proc.poll() is not None:
        engine.start()  # a previous test killed it
    return engine


_counter = itertools.count()

ORDERS_DDL = (
    "CREATE TABLE orders (id BIGINT PRIMARY KEY, status VARCHAR(20) NOT NULL, amount DECIMAL(12,2), "
    "note VARCHAR(100) NULL, created DATETIME(6), paid_at TIMESTAMP(6) NULL)"
)
LINES_DDL = (
    "CREATE TABLE order_lines (order_id BIGINT, line_no INT, sku VARCHAR(20), qty INT, PRIMARY KEY (order_id, line_no))"
)


@pytest.fixture
def database(engine: Engine) -> str:
    """A fresh database with the sample tables."""
    name = f"t{next(_counter)}_{uuid.uuid4().hex[:6]}"
    with engine.connect() as conn, conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name}")
        cur.execute(f"USE {name}")
        cur.execute(ORDERS_DDL)
        cur.execute(LINES_DDL)
    return name


def capture_config(engine: Engine, database: str, state_dir: Path, endpoint: str, **capture: Any) -> ObflowConfig:
    return ObflowConfig(
        source={"engine": "oceanbase" if engine.kind == "seekdb" else "mariadb", "mode": "mysql",
                "host": "127.0.0.1", "port": engine.port, "user": "root", "database": database,
                "tables": ["orders", "order_lines"], "reconnect_max_backoff": "2s", "heartbeat_interval": "1s"},
        datahub={"endpoint": endpoint, "access_id": ACCESS_ID, "access_key": ACCESS_KEY, "shards": 2,
                 "topic": f"cdc_{database}", "retry": {"attempts": 3, "interval": "200ms"}},
        capture={"state_dir": str(state_dir), "poll_interval": "50ms", "http_port": 0, **capture},
    )  # fmt: skip


@pytest.fixture
def datahub(tmp_path: Path) -> Iterator[DataHubEmulator]:
    emu = DataHubEmulator(str(tmp_path / "datahub"), access_id=ACCESS_ID, access_key=ACCESS_KEY, admin=True).start()
    yield emu
    emu.stop()


class RunningAgent:
    """A capture agent running in a thread of the test process."""

    def __init__(self, config: ObflowConfig) -> None:
        self.config = config
        self.agent = CaptureAgent(config)
        self.agent.start()
        self.thread = threading.Thread(target=self.agent.run, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.agent.stop()
        self.thread.join(30)
        self.agent.close()


def read_topic(config: ObflowConfig) -> list[ChangeEvent]:
    client = make_client(config.datahub)
    events: list[ChangeEvent] = []
    try:
        shards = [s.shard_id for s in client.list_shard(config.datahub.project, config.datahub.topic).shards]
    except ResourceNotFoundException:
        return []  # the agent has not created the topic yet
    for shard in shards:
        for batch in ShardReader(client, config.datahub.project, config.datahub.topic, shard).read_all():
            events += decode_events(batch.records)
    return events


def start_capture(
    engine: Engine, database: str, datahub: DataHubEmulator, tmp_path: Path, **capture: Any
) -> tuple[ObflowConfig, RunningAgent]:
    """Change capture installed on the sample tables and an agent streaming them (no snapshot)."""
    config = capture_config(engine, database, tmp_path / "state", datahub.endpoint, **{"snapshot": False, **capture})
    apply_ddl(config, change_log_ddl(config))
    return config, RunningAgent(config)
