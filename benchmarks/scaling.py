"""The same input through the Flink job at parallelism 1, 2 and 4: does the work per record stay flat as
subtasks are added, and does every reading subtask do its share?

For each parallelism: the harness of benchmarks.job_throughput (the job warmed up on other records,
then ``--records`` changes over 8 shards appended at once, Parquet), and from the job's process group
its records per CPU-second and per wall-second, and the CPU share of each of its processes; from
Flink's reporter, the rows each reading subtask committed (its share of the records, against an
even share). Flat is the goal: rec/CPU-s within 15 % of parallelism 1.

By default one TaskManager process: the local mini-cluster, in thread mode (one interpreter for
every subtask, so one core of Python at most whatever the parallelism; ``--mode process`` gives each
subtask a Python worker process of its own). ``--taskmanagers N``: a standalone cluster of a JobManager
and N TaskManager processes (tests/support/standalone.py), the job submitted with ``flink run``, each
TaskManager with its own interpreter; the CPU share of every process is printed, JobManager and runner
included.

Run: ``python -m benchmarks.scaling [--records 400000] [--parallelism 1,2,4] [--mode thread|process]
[--taskmanagers 2]``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.common import JobUnderTest, group_processes, machine, reporter_samples
from benchmarks.job_throughput import SOURCE_RATE, WARM_UP, job_data
from benchmarks.soak import JOB_METRIC
from flink_job.output import output_files
from obflow.net import free_port
from obflow_dev.sample import change_stream

SHARDS = 8


@dataclass
class Scaled:
    parallelism: int
    rows: int = 0
    cpu: float = 0.0
    wall: float = 0.0
    process_cpu: dict[str, float] = field(default_factory=dict)
    subtask_rows: dict[str, float] = field(default_factory=dict)


def process_cpu(groups: dict[str, int]) -> dict[str, float]:
    """CPU seconds of each live process of the job's process groups, as ``group/command``."""
    usage: dict[str, float] = {}
    for group, pgid in groups.items():
        for process in group_processes(pgid):
            key = f"{group}/{process.name}"
            usage[key] = usage.get(key, 0.0) + process.cpu
    return usage


def subtask_rows(ports: range) -> dict[str, float]:
    """Rows committed by each reading subtask, from Flink's reporter (each process on its own port)."""
    rows: dict[str, float] = {}
    for port in ports:
        for name, labels, value in reporter_samples(port, JOB_METRIC):
            if name == "table_output_rows":
                index = labels.get("subtask_index", "?")
                rows[index] = rows.get(index, 0.0) + value
    return rows


def run(tmp: Path, records: int, parallelism: int, mode: str, taskmanagers: int) -> Scaled:
    first_port = free_port()
    ports = range(first_port, first_port + (taskmanagers + 1 if taskmanagers else 1))
    data = job_data(tmp, "parquet", "pb", shards=SHARDS)
    reporter = f"{ports.start}-{ports.stop - 1}" if len(ports) > 1 else str(ports.start)
    data["flink"] = {**data["flink"], "parallelism": parallelism, "metrics_port": reporter, "execution_mode": mode}
    job = JobUnderTest(tmp, data, in_process_emulator=True, taskmanagers=taskmanagers, timeout=300)
    job.preload(change_stream(WARM_UP, rows=WARM_UP, first_position=10**9))
    result = Scaled(parallelism)
    with job:
        deadline = time.time() + 900
        while job.committed_rows() < WARM_UP and time.time() < deadline:
            time.sleep(0.1)
        stored = job.stored(change_stream(records, rows=records, per_second=SOURCE_RATE))
        time.sleep(3)
        before_rows = subtask_rows(ports)
        groups = job.process_groups()
        before, started = process_cpu(groups), time.time()
        job.append(stored)
        while job.committed_rows() < WARM_UP + records and time.time() < deadline:
            time.sleep(0.5)
        after = process_cpu(groups)
        result.wall = max(file.stat().st_mtime for _, file in output_files(job.config)) - started
        time.sleep(6)  # Flink's reporter has the last counts
        result.subtask_rows = {k: v - before_rows.get(k, 0.0) for k, v in subtask_rows(ports).items()}
        result.process_cpu = {name: after[name] - before.get(name, 0.0) for name in after}
        result.cpu = sum(result.process_cpu.values())
        result.rows = job.committed_rows() - WARM_UP
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--records", type=int, default=400_000)
    parser.add_argument("--parallelism", default="1,2,4")
    parser.add_argument("--mode", choices=["thread", "process"], default="thread", help="flink.execution_mode")
    parser.add_argument(
        "--taskmanagers", type=int, default=0, help="TaskManager processes of a standalone cluster (0: mini-cluster)"
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        runs = [
            run(Path(tmp) / f"p{p}", args.records, int(p), args.mode, args.taskmanagers)
            for p in args.parallelism.split(",")
        ]
    where = (
        f"{args.taskmanagers} TaskManager processes (standalone cluster"
        if args.taskmanagers
        else "one TaskManager (mini-cluster"
    )
    print(f"Scaling: {args.records:,} changes over {SHARDS} shards, {where}, {args.mode} mode)")
    print(f"machine: {machine()}")
    print(f"{'parallelism':>11} {'rec/CPU-s':>10} {'vs p=1':>7} {'rec/s':>8} {'cores':>6}  "
          f"{'CPU share by process (group/command)':60} subtask share of records (even = 1.00)")  # fmt: skip
    base = runs[0].rows / runs[0].cpu if runs[0].cpu else 0.0
    for r in runs:
        rate = r.rows / r.cpu if r.cpu else 0.0
        shares = " ".join(f"{name} {cpu / r.cpu:.0%}" for name, cpu in sorted(r.process_cpu.items()) if cpu > 0.05)
        total = sum(r.subtask_rows.values()) or 1.0
        even = total / max(len(r.subtask_rows), 1)
        subtasks = " ".join(f"{v / even:.2f}" for _, v in sorted(r.subtask_rows.items()))
        print(f"{r.parallelism:>11} {rate:10,.0f} {rate / base if base else 0:7.2f} {r.rows / r.wall:8,.0f} "
              f"{r.cpu / r.wall:6.2f}  {shares:60} {subtasks}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
