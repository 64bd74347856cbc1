"""A local DataHub-compatible server (like LocalStack for AWS): ``obflow datahub-emulator``."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

import httpx

from obflow.net import free_port
from obflow_dev.emulator.faults import Faults
from obflow_dev.emulator.server import DataHubEmulator, server_tls_context

__all__ = ["DataHubEmulator", "Faults", "serve", "server_tls_context", "start_process"]


def start_process(
    data_dir: str | Path,
    port: int | None = None,
    access: tuple[str, str] | None = None,
    log_path: Path | None = None,
    timeout: float = 30,
    admin: bool = False,
) -> tuple[subprocess.Popen[bytes], str]:
    """``obflow datahub-emulator`` as its own process: (process, endpoint) once ``/healthz`` answers.

    ``port`` defaults to a free one; ``access`` is (access id, access key); output goes to ``log_path``
    (appended) or is discarded; ``admin``: with its ``/_admin/`` endpoint on.
    """
    port = port or free_port()
    cmd = [sys.executable, "-m", "obflow.cli", "datahub-emulator", "--port", str(port), "--data-dir", str(data_dir)]
    if access:
        cmd += ["--access-id", access[0], "--access-key", access[1]]
    if admin:
        cmd.append("--admin")
    log = log_path.open("ab") if log_path else subprocess.DEVNULL
    try:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    finally:
        if log_path:
            log.close()  # type: ignore[union-attr]
    endpoint = f"http://127.0.0.1:{port}"
    where = f"; see {log_path}" if log_path else ""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the DataHub emulator exited with {proc.returncode}{where}")
        try:
            httpx.get(f"{endpoint}/healthz", timeout=1).raise_for_status()
            return proc, endpoint
        except httpx.HTTPError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"the DataHub emulator did not become ready within {timeout:g}s{where}")


def serve(emulator: DataHubEmulator) -> int:
    """Run ``emulator`` in the foreground until SIGTERM or SIGINT; prints the endpoint when ready."""

    def stop(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    emulator.start()
    print(f"DataHub emulator ready at {emulator.endpoint} (data in {emulator.store.data_dir})", flush=True)
    try:
        signal.pause() if hasattr(signal, "pause") else emulator.serve_forever()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        emulator.stop()
    print("DataHub emulator stopped", file=sys.stderr, flush=True)
    return 0
