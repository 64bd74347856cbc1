"""Records per CPU-second through the Flink job (DataHub emulator → dedup → Parquet), next to a ceiling
measured in the same run on the same records: decode + write with pyarrow alone, no Flink.

The ceiling: the records' JSON payloads, ``pyarrow.json.read_json`` per 1000-record batch, then one
Parquet file per batch, in this process (CPU time). The job: ``obflow job run`` (mini-cluster, thread
mode, output parquet) already running and idle; the records are then put into DataHub and the CPU time
of the job's whole process group (runner and JVM) is taken from /proc until every record is committed.
That includes reading through the pydatahub SDK, duplicate removal, the exactly-once file sink and
the Parquet conversion. Goal (issue 5): at least 0.8 of the ceiling.

Run: ``python -m benchmarks.job_throughput [--records 20000]`` (or ``make bench``).
"""

from __future__ import annotations

import argparse
import io
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pyarrow.json as pa_json
import pyarrow.parquet as pq
import yaml

from benchmarks.common import machine
from obflow.config import ObflowConfig
from obflow.datahub.client import ensure_change_topic, make_client
from obflow.datahub.emulator import start_process
from obflow.datahub.producer import Producer
from obflow.sample import change_stream

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU of every live process in process group ``pgid``."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # field 5 of stat: process group
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLOCK_TICKS


def ceiling(payloads: list[bytes], out: Path) -> float:
    """Records per CPU-second for pyarrow alone: JSON decode per 1000 records + Parquet write."""
    started = time.process_time()
    for index, start in enumerate(range(0, len(payloads), 1000)):
        table = pa_json.read_json(io.BytesIO(b"\n".join(payloads[start : start + 1000])))
        pq.write_table(table, out / f"ceiling-{index}.parquet", compression="zstd")
    return len(payloads) / (time.process_time() - started)


def committed_rows(root: Path) -> int:
    return sum(pq.ParquetFile(f).metadata.num_rows for f in root.rglob("*.parquet") if not f.name.startswith("."))


def run(count: int, protocol: str) -> None:
    events = change_stream(count, rows=count)
    payloads = [e.to_json() for e in events]
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        (tmp / "ceiling").mkdir()
        ceiling_rate = ceiling(payloads, tmp / "ceiling")
        proc, endpoint = start_process(str(tmp / "datahub"))
        data: dict[str, Any] = {
            "source": {"database": "TRADE", "tables": ["ORDERS"]},
            "datahub": {"endpoint": endpoint, "shards": 4, "protocol": protocol},
            "capture": {"poll_interval": "100ms"},
            "flink": {"parallelism": 2},
            "checkpoint": {"interval": "2s", "dir": str(tmp / "ck"), "savepoint_dir": str(tmp / "sp")},
            "output": {
                "format": "parquet",
                "path": str(tmp / "out"),
                "rolling": {"max_span": "2s", "check_interval": "1s"},
            },
        }
        path = tmp / "job.yaml"
        path.write_text(yaml.safe_dump(data))
        config = ObflowConfig(**data)
        client = make_client(config.datahub)
        ensure_change_topic(client, config.datahub)
        log = (tmp / "job.log").open("ab")
        job = subprocess.Popen(
            [sys.executable, "-m", "obflow.cli", "job", "run", "--config", str(path)],
            stdout=log, stderr=log, start_new_session=True,
        )  # fmt: skip
        try:
            time.sleep(25)  # the job is up and idle
            cpu_before = group_cpu_seconds(job.pid)
            started = time.time()
            producer = Producer(client, config.datahub.project, config.datahub.topic, config.datahub.retry)
            producer.send(events)
            producer.close()
            deadline = time.time() + 600
            while committed_rows(tmp / "out") < count and time.time() < deadline:
                time.sleep(0.5)
            cpu = group_cpu_seconds(job.pid) - cpu_before
            wall = time.time() - started
            rows = committed_rows(tmp / "out")
        finally:
            job.send_signal(signal.SIGTERM)
            job.wait(60)
            if job.poll() is None:
                os.killpg(job.pid, signal.SIGKILL)
            os.kill(proc.pid, signal.SIGTERM)
            proc.wait(10)
    job_rate = rows / cpu if cpu else 0.0
    print(f"Flink job throughput: {count} change envelopes -> Parquet, parallelism 2, thread mode, {protocol}")
    print(f"machine: {machine()}")
    print(f"{'stage':52} {'records':>8} {'rec/CPU-s':>10} {'ratio':>7}")
    print(f"{'ceiling: pyarrow json decode + Parquet, no Flink':52} {count:8} {ceiling_rate:10,.0f} {1.0:7.2f}")
    label = f"job: SDK read, dedup, sink, convert ({wall:.0f}s wall)"
    print(f"{label:52} {rows:8} {job_rate:10,.0f} {job_rate / ceiling_rate:7.2f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--protocol", choices=["pb", "json"], default="pb", help="DataHub wire protocol")
    args = parser.parse_args(argv)
    run(args.records, args.protocol)
    return 0


if __name__ == "__main__":
    sys.exit(main())
