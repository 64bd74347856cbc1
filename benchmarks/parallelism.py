"""The largest parallelism the Flink job runs at on this machine, and what it costs (R2.6, R6.5).

For each parallelism: a change topic with as many shards (so every subtask has a shard to read),
``obflow job run`` (local mini-cluster, thread mode: one Python interpreter in the TaskManager JVM
shared by every subtask), a batch of changes, and the measurements: seconds to RUNNING, seconds until
every change is committed, exactly-once (distinct ids = changes), peak resident memory of the job's
process group (JVM + runner) and the number of subtasks that wrote files.

Run: ``python -m benchmarks.parallelism [--parallelism 10,32,64,128] [--records 20000]``.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pyarrow.parquet as pq
import yaml

from benchmarks.common import machine
from obflow.config import ObflowConfig
from obflow.datahub.client import ensure_change_topic, make_client
from obflow.datahub.emulator import start_process
from obflow.datahub.producer import Producer
from obflow.net import free_port
from obflow.sample import SAMPLE_COLUMNS, change_stream

PAGE = os.sysconf("SC_PAGE_SIZE")


def group_rss_bytes(pgid: int) -> int:
    total = 0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[2]) == pgid:
                    total += int(fields[21]) * PAGE  # field 24 of stat: resident pages
            except OSError:
                continue
    return total


@dataclass
class Run:
    parallelism: int
    started_s: float = 0.0
    committed_s: float = 0.0
    rows: int = 0
    distinct: int = 0
    peak_rss: int = 0
    writers: int = 0
    error: str = ""


def run_at(parallelism: int, records: int, tmp: Path) -> Run:
    result = Run(parallelism)
    emulator, endpoint = start_process(str(tmp / "datahub"))
    port = free_port()
    data: dict[str, Any] = {
        "source": {"database": "TRADE", "tables": [{"name": "ORDERS", "columns": SAMPLE_COLUMNS}]},
        "datahub": {"endpoint": endpoint, "shards": min(parallelism, 256)},
        "capture": {"poll_interval": "1s"},
        "flink": {"parallelism": parallelism, "max_parallelism": max(128, parallelism)},
        "checkpoint": {"interval": "10s", "dir": str(tmp / "ck"), "savepoint_dir": str(tmp / "sp")},
        "output": {"path": str(tmp / "out"), "metrics_port": port, "rolling": {"max_span": "5s"}},
    }
    path = tmp / "job.yaml"
    path.write_text(yaml.safe_dump(data))
    config = ObflowConfig(**data)
    client = make_client(config.datahub)
    ensure_change_topic(client, config.datahub)
    log = (tmp / "job.log").open("ab")
    started = time.monotonic()
    job = subprocess.Popen(
        [sys.executable, "-m", "obflow.cli", "job", "run", "--config", str(path)],
        stdout=log, stderr=log, start_new_session=True, env={**os.environ, "FLINK_LOG_DIR": str(tmp / "log")},
    )  # fmt: skip
    stop = threading.Event()

    def sample_memory() -> None:
        while not stop.wait(0.5):
            result.peak_rss = max(result.peak_rss, group_rss_bytes(job.pid))

    threading.Thread(target=sample_memory, daemon=True).start()
    try:
        while not ready(port):
            if job.poll() is not None or time.monotonic() - started > 600:
                result.error = "did not reach RUNNING (see job.log)"
                return result
            time.sleep(0.5)
        result.started_s = time.monotonic() - started
        producer = Producer(client, config.datahub.project, config.datahub.topic, config.datahub.retry)
        sent_at = time.monotonic()
        producer.send(change_stream(records, rows=records))
        producer.close()
        while committed_ids(tmp / "out")[0] < records and time.monotonic() - sent_at < 600:
            time.sleep(1)
        result.committed_s = time.monotonic() - sent_at
        result.rows, result.distinct, result.writers = committed_ids(tmp / "out")
        if os.environ.get("OBFLOW_BENCH_KEEP"):
            import shutil

            shutil.copytree(tmp / "out", os.environ["OBFLOW_BENCH_KEEP"], dirs_exist_ok=True)
        return result
    finally:
        stop.set()
        job.send_signal(signal.SIGTERM)
        try:
            job.wait(120)
        except subprocess.TimeoutExpired:
            os.killpg(job.pid, signal.SIGKILL)
        os.kill(emulator.pid, signal.SIGTERM)


def committed_ids(root: Path) -> tuple[int, int, int]:
    """(rows, distinct event ids, subtasks that wrote files) of the committed Parquet files."""
    files = [f for f in root.rglob("*.parquet") if not f.name.startswith(".") and ".staging" not in f.parts]
    ids: list[str] = []
    for file in files:
        ids += pq.read_table(file, columns=["_event_id"]).column(0).to_pylist()
    return len(ids), len(set(ids)), len({f.name.split("-st")[1].split("-")[0] for f in files})


def ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--parallelism", default="10,32,64,128")
    parser.add_argument("--records", type=int, default=20_000)
    args = parser.parse_args(argv)
    runs = []
    for parallelism in (int(p) for p in args.parallelism.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            runs.append(run_at(parallelism, args.records, Path(tmp)))
    print(f"Flink job at high parallelism: {args.records} changes, shards = parallelism, thread mode, one TaskManager")
    print(f"machine: {machine()}")
    print(f"{'parallelism':>11} {'to RUNNING s':>12} {'committed s':>11} {'rows':>7} {'distinct':>8} "
          f"{'writers':>7} {'peak RSS MiB':>12}  note")  # fmt: skip
    for r in runs:
        print(f"{r.parallelism:11} {r.started_s:12.1f} {r.committed_s:11.1f} {r.rows:7} {r.distinct:8} "
              f"{r.writers:7} {r.peak_rss / 2**20:12.0f}  {r.error}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
