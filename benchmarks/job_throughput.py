"""Records per CPU-second through the Flink job (DataHub emulator → dedup → output files), next to a
ceiling measured in the same run on the same records: decode + write with pyarrow alone, no Flink.

The ceiling: the records' JSON payloads, ``pyarrow.json.read_json`` per 1000-record batch, then one
Parquet file per batch, in this process (CPU time). The job: ``obflow job run`` (mini-cluster, thread
mode, typed sample columns) started and idle; the records are then appended to the change topic at
once (straight into the in-process emulator's store, so the job reads as fast as it can) and the CPU
time of the job's whole process group (runner, JVM, finalizer) is taken from /proc until every record
is committed. That includes reading DataHub over HTTP with the SDK, duplicate removal, the
exactly-once staging sink, mapping and the output write. The job's idle cost (JVM, ticks polling
every shard at the full rate, checkpoints) over the same wall time is measured first and shown on
its own line. Goal (issue 5): at least 0.8 of the ceiling.

Run: ``python -m benchmarks.job_throughput [--records 100000] [--formats parquet,json,csv]`` (or ``make bench``).
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.json as pa_json
import pyarrow.parquet as pq

from benchmarks.common import JobUnderTest, group_usage, machine
from obflow.events import ChangeEvent
from obflow.sample import SAMPLE_COLUMNS, change_stream


def ceiling(payloads: list[bytes], out: Path) -> float:
    """Records per CPU-second for pyarrow alone: JSON decode per 1000 records + Parquet write."""
    started = time.process_time()
    for index, start in enumerate(range(0, len(payloads), 1000)):
        table = pa_json.read_json(io.BytesIO(b"\n".join(payloads[start : start + 1000])))
        pq.write_table(table, out / f"ceiling-{index}.parquet", compression="zstd")
    return len(payloads) / (time.process_time() - started)


@dataclass
class JobRun:
    rows: int
    cpu: float
    wall: float
    idle_cpu_per_s: float


def run_job(tmp: Path, events: list[ChangeEvent], fmt: str, protocol: str) -> JobRun:
    data: dict[str, Any] = {
        "source": {"database": "TRADE", "tables": [{"name": "ORDERS", "columns": SAMPLE_COLUMNS}]},
        "datahub": {"shards": 4, "protocol": protocol},
        "capture": {"poll_interval": "100ms"},
        # polled at the full rate even when idle, so the idle baseline is the polling cost under load
        "flink": {"parallelism": 2, "idle_poll_max": "100ms"},
        "checkpoint": {"interval": "2s", "dir": str(tmp / "ck"), "savepoint_dir": str(tmp / "sp")},
        "output": {"format": fmt, "path": str(tmp / "out"), "rolling": {"max_span": "2s", "check_interval": "1s"}},
    }
    with JobUnderTest(tmp, data, in_process_emulator=True) as job:
        time.sleep(10)  # settled: running and idle
        idle_before, idle_started = group_usage(job.pgid)[0], time.time()
        time.sleep(10)
        idle_cpu_per_s = (group_usage(job.pgid)[0] - idle_before) / (time.time() - idle_started)
        cpu_before, started = group_usage(job.pgid)[0], time.time()
        job.preload(events)  # all at once: the job reads as fast as it can
        deadline = time.time() + 900
        while job.committed_rows() < len(events) and time.time() < deadline:
            time.sleep(0.2)
        cpu, wall = group_usage(job.pgid)[0] - cpu_before, time.time() - started
        return JobRun(job.committed_rows(), cpu, wall, idle_cpu_per_s)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--formats", default="parquet", help="comma-separated: parquet,json,csv")
    parser.add_argument("--protocol", choices=["pb", "json"], default="pb", help="DataHub wire protocol")
    args = parser.parse_args(argv)
    events = change_stream(args.records, rows=args.records)
    with tempfile.TemporaryDirectory() as tmp_dir:
        (Path(tmp_dir) / "ceiling").mkdir()
        ceiling_rate = ceiling([e.to_json() for e in events], Path(tmp_dir) / "ceiling")
        runs = {fmt: run_job(Path(tmp_dir) / fmt, events, fmt, args.protocol) for fmt in args.formats.split(",")}
    print(f"Flink job throughput: {args.records} change envelopes, parallelism 2, thread mode, typed columns")
    print(f"machine: {machine()}")
    print(f"{'stage':58} {'records':>8} {'rec/CPU-s':>10} {'ratio':>6}")
    print(f"{'ceiling: pyarrow json decode + Parquet, no Flink':58} {args.records:8} {ceiling_rate:10,.0f} {1:6.2f}")
    for fmt, run in runs.items():
        rate = run.rows / run.cpu if run.cpu else 0.0
        busy = run.cpu - run.idle_cpu_per_s * run.wall
        print(f"{f'job -> {fmt}: read, dedup, stage, map, write ({run.wall:.0f}s wall)':58} "
              f"{run.rows:8} {rate:10,.0f} {rate / ceiling_rate:6.2f}")  # fmt: skip
        idle = f"  of which idle job ({run.idle_cpu_per_s:.2f} CPU-s/s x {run.wall:.0f}s)"
        print(f"{idle:58} {'':8} {'':>10} {(run.cpu - busy) / run.cpu if run.cpu else 0:6.0%}")
        busy_rate = run.rows / busy if busy > 0 else 0.0
        print(f"{'  without the idle cost':58} {run.rows:8} {busy_rate:10,.0f} {busy_rate / ceiling_rate:6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
