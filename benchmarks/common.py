"""Helpers shared by the benchmarks: the machine, a job under test, and /proc figures of its processes."""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import pyarrow.parquet as pq
import yaml

from flink_job.output import output_files
from obflow.config import ObflowConfig
from obflow.datahub.client import ensure_change_topic, make_client
from obflow.datahub.producer import Producer
from obflow.events import ChangeEvent
from obflow.net import free_port
from obflow_dev.emulator import DataHubEmulator, start_process
from obflow_dev.emulator.store import EncodedRecords, StoredRecord, encode
from obflow_dev.supervise import Component, Supervisor, obflow_command, readyz, stop_process_group
from tests.support.standalone import StandaloneFlink

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, {platform.platform()}"


@dataclass(frozen=True)
class GroupProcess:
    """A live process of a process group, from /proc/<pid>/stat."""

    pid: int
    name: str
    cpu: float
    """User + system CPU seconds."""
    rss: int
    """Resident bytes."""

    @property
    def fds(self) -> int:
        """Open file descriptors (0 once it is gone)."""
        try:
            return sum(1 for _ in Path(f"/proc/{self.pid}/fd").iterdir())
        except OSError:
            return 0


def group_processes(pgid: int) -> list[GroupProcess]:
    """Every live process in process group ``pgid``, and their descendants in sessions of their own
    (PyFlink's Python workers in process mode)."""
    found: dict[int, tuple[int, GroupProcess]] = {}  # pid -> (parent, process)
    members: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            name, rest = (entry / "stat").read_text().split(" (", 1)[1].rsplit(")", 1)
        except (OSError, ValueError):
            continue
        fields = rest.split()  # from stat field 3: state, parent, process group, ...
        cpu = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime
        found[int(entry.name)] = (int(fields[1]), GroupProcess(int(entry.name), name, cpu, int(fields[21]) * PAGE))
        if int(fields[2]) == pgid:
            members.add(int(entry.name))
    while True:
        children = {pid for pid, (parent, _) in found.items() if parent in members} - members
        if not children:
            return [found[pid][1] for pid in sorted(members)]
        members |= children


def group_usage(pgid: int) -> tuple[float, int]:
    """(user + system CPU seconds, resident bytes) of every live process in process group ``pgid``."""
    processes = group_processes(pgid)
    return sum(p.cpu for p in processes), sum(p.rss for p in processes)


def reporter_samples(port: int, prefix: str) -> list[tuple[str, dict[str, str], float]]:
    """(name less ``prefix``, labels, value) of each sample named ``prefix...`` on a Prometheus endpoint
    (Flink's reporter); empty while it does not answer."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    except httpx.HTTPError:
        return []
    return [
        (sample.name.removeprefix(prefix), sample.labels, sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.startswith(prefix)
    ]


class JobUnderTest:
    """A DataHub emulator process and ``obflow job run`` on config ``data`` (its DataHub endpoint and
    runner port filled in), the job ready on entry; both stopped on exit. Logs in ``tmp``.

    ``taskmanagers``: instead of ``obflow job run``'s mini-cluster, a standalone Flink cluster with that
    many TaskManager processes (tests/support/standalone.py: slots enough for ``flink.parallelism``), the
    job submitted with ``flink run`` (its runner then serves the readiness), Flink's reporter on
    ``flink.metrics_port`` (a range: one port for each process)."""

    def __init__(
        self,
        tmp: Path,
        data: dict[str, Any],
        env: dict[str, str] | None = None,
        timeout: float = 180,
        in_process_emulator: bool = False,
        taskmanagers: int = 0,
    ) -> None:
        self.tmp, self.env, self.timeout = tmp, env or {}, timeout
        self._rows_in: dict[tuple[str, int, int], int] = {}
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
        self.cluster: StandaloneFlink | None = None
        if taskmanagers:
            slots = -(-self.config.flink.parallelism // taskmanagers)
            reporter = {  # where the job's config says, as the job configures a mini-cluster
                "metrics.reporter.prom.factory.class": "org.apache.flink.metrics.prometheus.PrometheusReporterFactory",
                "metrics.reporter.prom.port": self.config.flink.metrics_port,
            }
            self.cluster = StandaloneFlink(tmp / "flink", slots, taskmanagers, extra_env=self.env, extra_conf=reporter)

    @property
    def pgid(self) -> int:
        """The process group of the job's runner (with ``obflow job run``: the whole job)."""
        proc = self.runner if self.cluster else self.job.proc
        assert proc is not None
        return proc.pid

    def process_groups(self) -> dict[str, int]:
        """Every process group of the job by name: the runner, and a cluster's JobManager and TaskManagers."""
        groups = {"runner": self.pgid}
        if self.cluster:
            groups["jobmanager"] = self.cluster.jobmanager.pid
            groups |= {f"taskmanager-{n}": p.pid for n, p in enumerate(self.cluster.taskmanager_processes)}
        return groups

    def __enter__(self) -> JobUnderTest:
        try:
            if self.cluster:
                self.cluster.start()
                self.runner = self.cluster.submit(self.config_path, self.tmp / "runner.log", self.env)
                deadline = time.monotonic() + self.timeout
                while not self.ready():
                    if self.runner.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"the job did not start on the cluster: see {self.tmp / 'runner.log'}")
                    time.sleep(0.5)
            else:
                self.supervisor.start(self.job, self.timeout)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self.supervisor.stop_all()
        if self.cluster:
            if hasattr(self, "runner"):
                stop_process_group(self.runner, timeout=120)
            self.cluster.stop()
        if self.local_emulator is not None:
            self.local_emulator.stop()
        else:
            self.emulator.terminate()
            self.emulator.wait(10)

    def preload(self, events: list[ChangeEvent]) -> None:
        """Append ``events`` to the change topic's shards directly in the in-process emulator's store,
        each in the shard the producer would choose."""
        self.append(self.stored(events))

    def stored(self, events: list[ChangeEvent]) -> dict[str, EncodedRecords]:
        """``events`` encoded as the emulator stores them, each for the end of the shard the producer
        would choose (the slow part of a preload, ≈ 15 µs a record, done before a measurement starts;
        nothing else may append to those shards until :meth:`append`)."""
        assert self.local_emulator is not None, "in_process_emulator=True"
        datahub = self.config.datahub
        producer = Producer(self.client, datahub.project, datahub.topic, datahub.retry)
        by_shard: dict[str, list[StoredRecord]] = {}
        now_ms = int(time.time() * 1000)
        for event in events:
            values = [None if v is None else str(v) for v in event.to_datahub_values()]
            by_shard.setdefault(producer.shard_for(event), []).append(StoredRecord(now_ms, values, None))
        producer.close()
        topic = self.local_emulator.store.topic(datahub.project, datahub.topic)
        return {
            shard_id: encode(topic.shard(shard_id), topic.shard(shard_id).end, records)
            for shard_id, records in by_shard.items()
        }

    def append(self, by_shard: dict[str, EncodedRecords]) -> None:
        """Append records encoded by :meth:`stored` to their shards in the in-process emulator's store."""
        assert self.local_emulator is not None, "in_process_emulator=True"
        datahub = self.config.datahub
        topic = self.local_emulator.store.topic(datahub.project, datahub.topic)
        for shard_id, records in by_shard.items():
            self.local_emulator.store.append_encoded(topic.shard(shard_id), records)

    def committed_rows(self) -> int:
        """Rows in the committed output files. Each file is counted once (a file committed again is a new
        inode): reading every text file again at each poll took CPU the measured job would otherwise have,
        more for JSON and CSV (megabytes a poll) than for Parquet (its footer)."""
        rows = 0
        for _, file in output_files(self.config):
            stat = file.stat()
            key = (str(file), stat.st_ino, stat.st_size)
            if key not in self._rows_in:
                self._rows_in[key] = _rows_in(file)
            rows += self._rows_in[key]
        return rows


def _rows_in(file: Path) -> int:
    if file.suffix == ".parquet":
        return int(pq.ParquetFile(file).metadata.num_rows)
    return file.read_bytes().count(b"\n") - (1 if file.suffix == ".csv" else 0)
