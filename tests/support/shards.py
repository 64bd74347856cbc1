"""Shard workers outside Flink for a test: one shard's config, a worker, a drain to the end, the ids in the output."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flink_job.shard import ShardWorker
from obflow.config import ObflowConfig
from obflow.datahub.client import make_client
from obflow.deadletter import DeadLetterQueue
from obflow_dev.emulator import DataHubEmulator
from tests.support.job import job_config


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[DataHubEmulator]:
    from tests.support.datahub import ACCESS_ID, ACCESS_KEY

    emu = DataHubEmulator(str(tmp_path / "datahub"), access_id=ACCESS_ID, access_key=ACCESS_KEY).start()
    yield emu
    emu.stop()


def worker(config: ObflowConfig, shard: str = "0", faults: Any = None) -> ShardWorker:
    client = make_client(config.datahub, protocol="json", reader=True)
    started = ShardWorker(config, client, shard, DeadLetterQueue(config), faults=faults)
    started.open()
    return started


def drain(config: ObflowConfig, shards: int = 1, faults: Any = None, rounds: int = 3) -> None:
    """Every shard read to its end and every file committed, as a job that runs for a while does."""
    for shard in range(shards):
        one = worker(config, str(shard), faults)
        for _ in range(rounds):
            one.poll(10)
        one._commit_all(list(one.files))


def one_shard(tmp_path: Path, endpoint: str, fmt: str = "parquet", max_size: str = "1GiB") -> ObflowConfig:
    tmp_path.mkdir(parents=True, exist_ok=True)
    config, _ = job_config(tmp_path, endpoint, fmt=fmt, shards=1, max_size=max_size)
    return config


def ids_of(rows: list[dict[str, Any]]) -> list[str]:
    return [str(row["_event_id"]) for row in rows]
