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
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from obflow_dev.emulator import DataHubEmulator
from obflow_dev.localdb import MARIADBD, Engine
from tests.support.datahub import ACCESS_ID, ACCESS_KEY


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


@pytest.fixture
def datahub(tmp_path: Path) -> Iterator[DataHubEmulator]:
    emu = DataHubEmulator(str(tmp_path / "datahub"), access_id=ACCESS_ID, access_key=ACCESS_KEY, admin=True).start()
    yield emu
    emu.stop()
