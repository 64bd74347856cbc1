"""Helpers shared by the benchmarks: the machine, a job under test, and /proc figures of its processes."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import pyarrow.parquet as pq
import yaml

from flink_job.output import output_files
from obflow.config import ObflowConfig
from obflow.datahub.client import ensure_change_topic, make_client
from obflow.datahub.emulator import DataHubEmulator, start_process
from obflow.datahub.emulator.store import StoredRecord
from obflow.datahub.producer import Producer
from obflow.events import ChangeEvent
from obflow.net import free_port
from obflow.supervise import Component, Supervisor, obflow_command, readyz

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, {platform.platform()}"


def group_usage(pgid: int) -> tuple[float, int]:
    """(user + system CPU seconds, resident bytes) of every live process in process group ``pgid``."""
    cpu, rss = 0, 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # stat field 5: process group
            cpu += int(fields[11]) + int(fields[12])  # utime, stime
            rss += int(fields[21]) * PAGE  # resident pages
    return cpu / CLOCK_TICKS, rss


class JobUnderTest:
    """A DataHub emulator process and ``obflow job run`` on config ``data`` (its DataHub endpoint and
    runner port filled in), the job ready on entry; both stopped on exit. Logs in ``tmp``."""

    def __init__(
        self,
        tmp: Path,
        data: dict[str, Any],
        env: dict[str, str] | None = None,
        timeout: float = 180,
        in_process_emulator: bool = False,
    ) -> None:
        self.tmp, self.env, self.timeout = tmp, env or {}, timeout
        self.local_emulator: DataHubEmulator | None = None
        if in_process_emulator:  # its store can be filled directly, much faster than through HTTP
            self.local_emulator = DataHubEmulator(str(tmp / "datahub")).start()
            endpoint = self.local_emulator.endpoint
        else:
            self.emulator, endpoint = start_process(str(tmp / "datahub"))
        self.port = free_port()
        self.ready = readyz(self.port)
        data["datahub"] = {**data.get("datahub", {}), "endpoint": endpoint}
        data["output"] = {**data.get("output", {}), "metrics_port": self.port}
        self.config_path = tmp / "job.yaml"
        self.config_path.write_text(yaml.safe_dump(data))
        self.config = ObflowConfig(**data)
        self.client = make_client(self.config.datahub)
        ensure_change_topic(self.client, self.config.datahub)
        self.supervisor = Supervisor(tmp / "logs")
        self.job = Component("job", obflow_command("job", "run", "--config", str(self.config_path)), self.ready)
        self.job.env = {"FLINK_LOG_DIR": str(tmp / "logs" / "flink"), **self.env}
        self.job.stop_timeout = 120

    @property
    def pgid(self) -> int:
        assert self.job.proc is not None
        return self.job.proc.pid

    def __enter__(self) -> JobUnderTest:
        try:
            self.supervisor.start(self.job, self.timeout)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self.supervisor.stop_all()
        if self.local_emulator is not None:
            self.local_emulator.stop()
        else:
            self.emulator.terminate()
            self.emulator.wait(10)

    def preload(self, events: list[ChangeEvent]) -> None:
        """Append ``events`` to the change topic's shards directly in the in-process emulator's store,
        each in the shard the producer would choose."""
        assert self.local_emulator is not None, "in_process_emulator=True"
        datahub = self.config.datahub
        producer = Producer(self.client, datahub.project, datahub.topic, datahub.retry)
        topic = self.local_emulator.store.topic(datahub.project, datahub.topic)
        by_shard: dict[str, list[StoredRecord]] = {}
        now_ms = int(time.time() * 1000)
        for event in events:
            values = [None if v is None else str(v) for v in event.to_datahub_values()]
            by_shard.setdefault(producer.shard_for(event), []).append(StoredRecord(now_ms, values, None))
        producer.close()
        for shard_id, records in by_shard.items():
            self.local_emulator.store.append(topic.shard(shard_id), records)

    def committed_rows(self) -> int:
        """Rows in the committed output files."""
        rows = 0
        for _, file in output_files(self.config):
            if file.suffix == ".parquet":
                rows += pq.ParquetFile(file).metadata.num_rows
            else:
                rows += file.read_bytes().count(b"\n") - (1 if file.suffix == ".csv" else 0)
        return rows
