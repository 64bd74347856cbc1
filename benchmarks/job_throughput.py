"""Records per CPU-second through the Flink job (DataHub emulator → files), next to a ceiling measured
in the same run on the same records: decode + write with pyarrow alone, no Flink; and what an idle
job costs.

The records: ``--records`` inserts of the sample table, :data:`SOURCE_RATE` committed a second. The
ceiling: the records' JSON payloads, ``pyarrow.json.read_json`` per 1000-record batch, then one
Parquet file per batch, in this process (CPU time), the best of three rounds. The job: ``obflow job
run`` (mini-cluster, thread mode, typed sample columns) first reads 20,000 other records (its Python
workers started, warmed up) and idles; then the records are appended to the change topic at once
(straight into the in-process emulator's store) and, until every one is in a committed file, the
CPU time of the job's whole process group (runner, JVM, the Python in the TaskManager) is taken from
/proc. That includes reading DataHub over HTTP (the SDK's requests), decoding into Arrow, duplicate
removal, mapping, writing, committing files and Flink itself. Next to it: the wall-clock rate (until
the last file's commit) and the cores the job used meanwhile (2 here). Then the same job idles for
10 s (its cost per second, and ``without the idle cost``); and separately an idle job with 4 and
with 128 shards at the default ``flink.idle_poll_max``, nothing arriving.

Run: ``python -m benchmarks.job_throughput [--records 200000] [--formats parquet,json,csv] [--idle]``
(or ``make bench``).
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
from flink_job.output import output_files
from obflow.events import ChangeEvent
from obflow_dev.sample import SAMPLE_COLUMNS, change_stream


def ceiling(payloads: list[bytes], out: Path, rounds: int = 3) -> float:
    """Records per CPU-second for pyarrow alone: JSON decode per 1000 records + Parquet write; the best
    of ``rounds`` (this machine's speed varies from one second to the next: the best is the ceiling)."""
    rates = []
    for round_ in range(rounds):
        started = time.process_time()
        for index, start in enumerate(range(0, len(payloads), 1000)):
            table = pa_json.read_json(io.BytesIO(b"\n".join(payloads[start : start + 1000])))
            pq.write_table(table, out / f"ceiling-{round_}-{index}.parquet", compression="zstd")
        rates.append(len(payloads) / (time.process_time() - started))
    return max(rates)


@dataclass
class JobRun:
    rows: int
    cpu: float
    wall: float
    idle_cpu_per_s: float


def job_data(
    tmp: Path, fmt: str, protocol: str, shards: int = 4, idle_poll_max: str = "100ms", checkpoints: str = "2s"
) -> dict[str, Any]:
    return {
        "source": {"database": "TRADE", "tables": [{"name": "ORDERS", "columns": SAMPLE_COLUMNS}]},
        "datahub": {"shards": shards, "protocol": protocol},
        "capture": {"poll_interval": "100ms"},
        "flink": {"parallelism": 2, "idle_poll_max": idle_poll_max},
        "checkpoint": {"interval": checkpoints, "dir": str(tmp / "ck"), "savepoint_dir": str(tmp / "sp")},
        "output": {"format": fmt, "path": str(tmp / "out"), "rolling": {"max_span": "2s"}},
    }


WARM_UP = 20_000
SOURCE_RATE = 100_000
"""Changes per second of commit time in the records: the backlog of a source that writes at a rate of
the order the job is measured at, so that a file holds what ``output.rolling.max_span`` (2 s) of such
traffic holds. (At 1,000 a second a file would hold 500 rows, and the waits for the fsyncs of its
commit, not the CPU, would set the pace.)"""


def run_job(tmp: Path, events: list[ChangeEvent], fmt: str, protocol: str) -> JobRun:
    job = JobUnderTest(tmp, job_data(tmp, fmt, protocol), in_process_emulator=True)
    job.preload(change_stream(WARM_UP, rows=WARM_UP, first_position=10**9))
    with job:
        deadline = time.time() + 900
        while job.committed_rows() < WARM_UP and time.time() < deadline:
            time.sleep(0.1)
        stored = job.stored(events)
        time.sleep(3)  # warmed up (Python workers, pools, JIT): the job idles
        cpu_before, started = group_usage(job.pgid)[0], time.time()
        job.append(stored)  # all at once: the job reads as fast as it can
        while job.committed_rows() < WARM_UP + len(events) and time.time() < deadline:
            time.sleep(0.5)  # not more often: the emulator answering the job shares this interpreter
        cpu = group_usage(job.pgid)[0] - cpu_before
        wall = max(file.stat().st_mtime for _, file in output_files(job.config)) - started  # the last commit
        idle_before, idle_started = group_usage(job.pgid)[0], time.time()
        time.sleep(10)  # everything read: the job idles (polling every shard at the full rate)
        idle_cpu_per_s = (group_usage(job.pgid)[0] - idle_before) / (time.time() - idle_started)
        return JobRun(job.committed_rows() - WARM_UP, cpu, wall, idle_cpu_per_s)


def idle_cost(tmp: Path, shards: int, seconds: float = 30) -> float:
    """CPU-seconds per second of a job with nothing to read, at the default idle polling and checkpoints."""
    data = job_data(tmp, "parquet", "pb", shards=shards, idle_poll_max="2s", checkpoints="5m")
    with JobUnderTest(tmp, data, timeout=300) as job:
        time.sleep(30)  # settled: every shard polled and backed off, the JIT done with the hot paths
        before, started = group_usage(job.pgid)[0], time.time()
        time.sleep(seconds)
        return (group_usage(job.pgid)[0] - before) / (time.time() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--formats", default="parquet", help="comma-separated: parquet,json,csv")
    parser.add_argument("--protocol", choices=["pb", "json"], default="pb", help="DataHub wire protocol of the capture")
    parser.add_argument("--idle", action="store_true", help="also measure idle jobs with 4 and 128 shards")
    args = parser.parse_args(argv)
    events = change_stream(args.records, rows=args.records, per_second=SOURCE_RATE)
    with tempfile.TemporaryDirectory() as tmp_dir:
        (Path(tmp_dir) / "ceiling").mkdir()
        ceiling_rate = ceiling([e.to_json() for e in events], Path(tmp_dir) / "ceiling")
        runs = {fmt: run_job(Path(tmp_dir) / fmt, events, fmt, args.protocol) for fmt in args.formats.split(",")}
        idle = {n: idle_cost(Path(tmp_dir) / f"idle-{n}", n) for n in ((4, 128) if args.idle else ())}
    print(f"Flink job throughput: {args.records} change envelopes waiting, parallelism 2, thread mode, typed columns")
    print(f"machine: {machine()}")
    print(f"{'stage':52} {'records':>8} {'rec/CPU-s':>10} {'ratio':>6} {'rec/s':>8} {'cores':>6}")
    print(f"{'ceiling: pyarrow json decode + Parquet, no Flink':52} {args.records:8} {ceiling_rate:10,.0f} {1:6.2f}")
    for fmt, run in runs.items():
        rate = run.rows / run.cpu if run.cpu else 0.0
        figures = f"{rate:10,.0f} {rate / ceiling_rate:6.2f} {run.rows / run.wall:8,.0f} {run.cpu / run.wall:6.2f}"
        print(f"{f'job -> {fmt}: read, dedup, map, write ({run.wall:.0f}s wall)':52} {run.rows:8} {figures}")
        busy = run.cpu - run.idle_cpu_per_s * run.wall
        share = f"  of which idle job ({run.idle_cpu_per_s:.2f} CPU-s/s x {run.wall:.0f}s)"
        print(f"{share:52} {'':8} {'':>10} {(run.cpu - busy) / run.cpu if run.cpu else 0:6.0%}")
        busy_rate = run.rows / busy if busy > 0 else 0.0
        print(f"{'  without the idle cost':52} {run.rows:8} {busy_rate:10,.0f} {busy_rate / ceiling_rate:6.2f}")
    for shards, cost in idle.items():
        print(f"{f'idle job, {shards} shards (defaults): CPU-s per second':52} {'':8} {cost:10.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
