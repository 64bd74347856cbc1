"""DataHub in tests: the emulator's test credentials, SDK clients for both wire protocols, the emulator as a
process of its own, and its admin endpoint (faults, the put log)."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import httpx
from datahub import DataHub
from datahub.core import DatahubProtocolType
from datahub.models import CompressFormat

from obflow.config import DataHubConfig, RetryConfig
from obflow.net import free_port
from obflow_dev.emulator import start_process

ACCESS_ID = "test-id"
ACCESS_KEY = "test-key-123"


def sdk(
    endpoint: str, protocol: str = "pb", key: str = ACCESS_KEY, access_id: str = ACCESS_ID, lz4: bool = True
) -> DataHub:
    return DataHub(
        access_id,
        key,
        endpoint,
        protocol_type=DatahubProtocolType.PB if protocol == "pb" else DatahubProtocolType.JSON,
        compress_format=CompressFormat.LZ4 if lz4 else CompressFormat.NONE,
        user_agent="obflow-tests",
        retry_times=0,
    )


def datahub_config(endpoint: str, protocol: str = "pb", shards: int = 4, interval: float = 2.0) -> DataHubConfig:
    return DataHubConfig(
        endpoint=endpoint,
        access_id=ACCESS_ID,
        access_key=ACCESS_KEY,
        shards=shards,
        protocol=protocol,
        retry=RetryConfig(attempts=3, interval=interval),
    )


def set_faults(endpoint: str, **faults: object) -> None:
    httpx.post(f"{endpoint}/_admin/faults", json=faults, timeout=5).raise_for_status()


def put_log(endpoint: str) -> list[dict[str, object]]:
    puts: list[dict[str, object]] = httpx.get(f"{endpoint}/_admin/stats", timeout=5).json()["puts"]
    return puts


class EmulatorProcess:
    """`obflow datahub-emulator` as a separate process that tests can kill and restart."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> EmulatorProcess:
        self.proc, _ = start_process(self.data_dir, port=self.port, access=(ACCESS_ID, ACCESS_KEY), admin=True)
        return self

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def terminate(self) -> int:
        assert self.proc is not None
        self.proc.terminate()
        return self.proc.wait(10)
