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
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from benchmarks.common import JobUnderTest, group_usage, machine
from flink_job.output import output_files
from obflow.datahub.producer import Producer
from obflow_dev.sample import SAMPLE_COLUMNS, change_stream


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
    data: dict[str, Any] = {
        "source": {"database": "TRADE", "tables": [{"name": "ORDERS", "columns": SAMPLE_COLUMNS}]},
        "datahub": {"shards": min(parallelism, 256)},
        "capture": {"poll_interval": "1s"},
        "flink": {"parallelism": parallelism, "max_parallelism": max(128, parallelism)},
        "checkpoint": {"interval": "10s", "dir": str(tmp / "ck"), "savepoint_dir": str(tmp / "sp")},
        "output": {"path": str(tmp / "out"), "rolling": {"max_span": "5s"}},
    }
    job = JobUnderTest(tmp, data, timeout=600)
    stop = threading.Event()

    def sample_memory() -> None:
        while not stop.wait(0.5):
            if job.job.proc is not None:
                result.peak_rss = max(result.peak_rss, group_usage(job.pgid)[1])

    threading.Thread(target=sample_memory, daemon=True).start()
    started = time.monotonic()
    try:
        with job:
            result.started_s = time.monotonic() - started
            datahub = job.config.datahub
            producer = Producer(job.client, datahub.project, datahub.topic, datahub.retry)
            sent_at = time.monotonic()
            producer.send(change_stream(records, rows=records))
            producer.close()
            while committed_ids(job)[0] < records and time.monotonic() - sent_at < 600:
                time.sleep(1)
            result.committed_s = time.monotonic() - sent_at
            result.rows, result.distinct, result.writers = committed_ids(job)
    except RuntimeError as exc:  # not ready in time, or exited: the supervisor names the log
        result.error = str(exc)
    finally:
        stop.set()
    return result


def committed_ids(job: JobUnderTest) -> tuple[int, int, int]:
    """(rows, distinct event ids, subtasks that wrote files) of the committed Parquet files."""
    files = [file for _, file in output_files(job.config)]
    ids: list[str] = []
    for file in files:
        ids += pq.read_table(file, columns=["_event_id"]).column(0).to_pylist()
    return len(ids), len(set(ids)), len({f.name.split("-st")[1].split("-")[0] for f in files})


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
