"""Helpers shared by the benchmarks."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time

import httpx

from obflow.localdb import free_port


def start_emulator(data_dir: str) -> tuple[subprocess.Popen[bytes], str]:
    """``obflow datahub-emulator`` as its own process; (process, endpoint) once it is ready."""
    port = free_port()
    cmd = [sys.executable, "-m", "obflow.cli", "datahub-emulator", "--port", str(port), "--data-dir", data_dir]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            httpx.get(f"{endpoint}/healthz", timeout=1)
            return proc, endpoint
        except httpx.TransportError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("the emulator did not start")


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, {platform.platform()}"
