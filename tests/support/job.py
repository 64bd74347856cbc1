"""Running the Flink job on a local emulator for a test: its config, its input, its output rows, its metrics."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from flink_job.output import read_output
from obflow.config import ObflowConfig
from obflow.datahub.client import ensure_change_topic, make_client
from obflow.datahub.producer import Producer
from obflow.events import ChangeEvent
from obflow_dev.emulator import DataHubEmulator
from obflow_dev.sample import SAMPLE_COLUMNS
from tests.support.datahub import ACCESS_ID, ACCESS_KEY


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[DataHubEmulator]:
    emu = DataHubEmulator(str(tmp_path / "datahub"), access_id=ACCESS_ID, access_key=ACCESS_KEY).start()
    yield emu
    emu.stop()


def job_config(
    tmp_path: Path,
    endpoint: str,
    parallelism: int = 2,
    fmt: str = "json",
    out: str = "out",
    backend: str = "hashmap",
    shards: int = 4,
    poll_interval: str = "100ms",
    **rolling: str,
) -> tuple[ObflowConfig, Path]:
    data: dict[str, Any] = {
        "source": {"database": "TRADE", "tables": [{"name": "ORDERS", "columns": SAMPLE_COLUMNS}]},
        "datahub": {"endpoint": endpoint, "access_id": ACCESS_ID, "shards": shards, "retry": {"interval": "100ms"}},
        "capture": {"poll_interval": poll_interval},
        "flink": {"parallelism": parallelism, "restart_delay": "1s"},
        "checkpoint": {
            "interval": "1s",
            "dir": str(tmp_path / f"ck-{out}"),
            "savepoint_dir": str(tmp_path / f"sp-{out}"),
            "backend": backend,
        },
        "output": {
            "format": fmt,
            "path": str(tmp_path / out),
            "dead_letter_path": str(tmp_path / f"{out}-dead-letters"),
            "metrics_port": 0,
            "rolling": {"max_span": "2s", **rolling},
        },
    }
    path = tmp_path / f"job-{out}.yaml"
    path.write_text(yaml.safe_dump(data))
    # the file holds no secret: the job reads the key from OBFLOW_DATAHUB__ACCESS_KEY (see run_job)
    return ObflowConfig(**{**data, "datahub": {**data["datahub"], "access_key": ACCESS_KEY}}), path


def output_rows(config: ObflowConfig) -> list[dict[str, Any]]:
    """Rows of every visible output file, read back with the table's schema, whatever the format."""
    return [row for _, _, rows in read_output(config) for row in rows]


def send(config: ObflowConfig, events: list[ChangeEvent]) -> None:
    client = make_client(config.datahub)
    ensure_change_topic(client, config.datahub)
    producer = Producer(client, config.datahub.project, config.datahub.topic, config.datahub.retry)
    producer.send(events)
    producer.close()


def wait_for_rows(
    config: ObflowConfig, count: int, proc: subprocess.Popen[bytes], timeout: float = 180
) -> list[dict[str, Any]]:
    """The committed output rows once there are ``count`` (and a few checkpoints later: extras would show)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the job process exited"
        if len(output_rows(config)) >= count:
            time.sleep(3)
            return output_rows(config)
        time.sleep(0.5)
    raise AssertionError(f"only {len(output_rows(config))} of {count} rows committed within {timeout}s")


def scrape(port: int) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Prometheus text from ``port`` as {metric name: [(labels, value)]}."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples
