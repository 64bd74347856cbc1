"""Local database servers for the demo, the tests and the benchmarks, started from what is installed.

* ``seekdb``: a real OceanBase engine (MySQL mode), the server bundled in the ``seekdb`` PyPI wheel.
* ``mariadb``: Debian's ``mariadbd`` in a private data directory, with row binlog and full row metadata.

Each can be killed and started again on the same port and data (for fault tests).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pymysql

from obflow.net import free_port

MARIADBD = "/usr/sbin/mariadbd"


class Engine:
    """A database server process the tests control."""

    def __init__(self, kind: str, base_dir: Path, server_args: Sequence[str] = ()) -> None:
        """``server_args``: more options for the server (MariaDB's, e.g. TLS)."""
        self.kind = kind
        self.base_dir = base_dir
        self.server_args = list(server_args)
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        if self.kind == "seekdb":
            import pylibseekdb

            binary = Path(pylibseekdb.__file__).parent / "seekdb"
            return [str(binary), "--nodaemon", "--port", str(self.port), "--base-dir", str(self.base_dir)]
        return [
            MARIADBD, "--no-defaults", f"--datadir={self.base_dir / 'data'}", f"--socket={self.base_dir / 'sock'}",
            f"--port={self.port}", "--bind-address=127.0.0.1", "--user=root", "--skip-name-resolve",
            f"--log-bin={self.base_dir / 'data' / 'binlog'}", "--binlog-format=ROW",
            "--binlog-row-image=FULL", "--binlog-row-metadata=FULL",
            "--server-id=1", "--innodb-buffer-pool-size=64M", "--max-connections=200", *self.server_args,
        ]  # fmt: skip

    def start(self) -> Engine:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        if self.kind == "mariadb" and not (self.base_dir / "data" / "mysql").exists():
            subprocess.run(
                ["mariadb-install-db", "--no-defaults", f"--datadir={self.base_dir / 'data'}", "--user=root",
                 "--auth-root-authentication-method=normal", "--skip-test-db"],
                check=True, capture_output=True,
            )  # fmt: skip
        log = (self.base_dir / "server.log").open("ab")
        self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                self.connect().close()
                return self
            except pymysql.err.OperationalError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self.kind} exited; see {self.base_dir / 'server.log'}") from None
                time.sleep(0.2)
        raise RuntimeError(f"{self.kind} did not accept connections within 60s")

    def accepts_connections(self) -> bool:
        try:
            self.connect().close()
            return True
        except pymysql.err.OperationalError:
            return False

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)
        # the port must be free before a restart
        time.sleep(0.5)

    def connect(self, database: str | None = None) -> Any:
        return pymysql.connect(
            host="127.0.0.1",
            port=self.port,
            user="root",
            password="",
            database=database,
            autocommit=True,
            connect_timeout=5,
        )
