"""A long stream through the Flink job, sampled as it goes: memory, state and open files must
stay flat, nothing growing per record (R6.1).

The records: ``--records`` change envelopes of the sample table, a new primary key and event id
each, appended to the change topic at ``--rate`` records a second (straight into the in-process
emulator's store, as benchmarks.job_throughput does). What every shard has committed (its positions
file, less the ids a new worker reads again) expires from the emulator as it goes, as DataHub's
lifecycle expires old records, so the emulator's memory stays flat too. The job: ``obflow job run``
(mini-cluster, parallelism 2, 4 shards, Parquet, a checkpoint every 2 s), its JVM's heap fixed and
touched at start (``JOB_JVM_ARGS``). A JVM left to size its own heap may grow it, by GC pressure, up
to a quarter of the machine's memory: in one CI run the job's resident memory rose 200 MiB over 750,000
records where the same code stayed flat on an idle machine. With the heap fixed, what the samples can
see rise is what lives outside it: the Python, Arrow's buffers, the JVM's native memory.

Every ``--every`` seconds a sample: records fed and committed, resident memory and open file
descriptors of the job's process group (runner, JVM, the Python in the TaskManager), the duplicate
filter's state (``obflow_state_bytes``), output files open, the newest checkpoint's size on disk,
and committed output files.

Run: ``python -m benchmarks.soak [--records 20000000] [--rate 20000] [--every 60]``; the CI-sized
run is tests/flink/test_soak.py.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import JobUnderTest, group_processes, group_usage, machine, reporter_samples
from flink_job.files import PositionsFile
from obflow.events import ChangeEvent, SourceInfo
from obflow.net import free_port
from obflow_dev.emulator.store import StoredRecord
from obflow_dev.sample import SAMPLE_COLUMNS

SHARDS = 4
JOB_METRIC = "flink_taskmanager_job_task_operator_obflow_"
JOB_JVM_ARGS = "-Xms1g -Xmx1g -XX:+AlwaysPreTouch"


@dataclass(frozen=True)
class Sample:
    elapsed_s: float
    fed: int
    committed: int
    rss_bytes: int
    fds: int
    state_bytes: int
    open_files: int
    checkpoint_bytes: int
    files: int


class RecordMaker:
    """The stored values of change ``n`` (an insert of row ``n``, committed at ``first_commit_ms + n``),
    made from one event's encoding by filling in its numbers: a few µs a record, so a feeder keeps up
    with the job without taking its cores."""

    ROW, POSITION, COMMIT, EVENT = 987_654_321, "555555555", 1_111_111_111_111, "e" * 32

    def __init__(self, first_commit_ms: int) -> None:
        source = SourceInfo(method="changelog", database="trade", db_schema="TRADE", table="ORDERS",
                            position=self.POSITION, txid=None, commit_ts_ms=self.COMMIT)  # fmt: skip
        after = {"ID": self.ROW, "STATUS": "NEW", "AMOUNT": "12.50", "CREATED_AT": "2026-12-01T00:00:00.000000Z",
                 "NOTE": None, "V": 1}  # fmt: skip
        event = ChangeEvent.create("c", key={"ID": self.ROW}, after=after, source=source, ts_ms=self.COMMIT)
        event = event.model_copy(update={"event_id": self.EVENT})
        self.first_commit_ms = first_commit_ms
        self.templates = [None if v is None else self._template(str(v)) for v in event.to_datahub_values()]

    def _template(self, text: str) -> str:
        text = text.replace("{", "{{").replace("}", "}}")
        for marker, field in ((self.EVENT, "{e}"), (str(self.ROW), "{n}"), (self.POSITION, "{n}"),
                              (str(self.COMMIT), "{c}")):  # fmt: skip
            text = text.replace(marker, field)
        return text

    def values(self, n: int) -> list[str | None]:
        fields = {"e": f"{n:032x}", "n": n, "c": self.first_commit_ms + n}
        return [None if t is None else t.format(**fields) for t in self.templates]


class Feeder(threading.Thread):
    """Appends ``total`` records to the shards at ``rate`` a second, and expires what is committed."""

    def __init__(self, job: JobUnderTest, total: int, rate: int) -> None:
        super().__init__(daemon=True, name="feeder")
        assert job.local_emulator is not None
        self.store = job.local_emulator.store
        self.topic = self.store.topic(job.config.datahub.project, job.config.datahub.topic)
        self.positions = [
            PositionsFile(Path(job.config.output.path), job.config.datahub.topic, str(shard)) for shard in range(SHARDS)
        ]
        self.window = job.config.flink.dedup_records  # a new worker reads these again before it resumes
        self.total, self.rate, self.fed = total, rate, 0
        self.maker = RecordMaker(int(time.time() * 1000))
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            started, step = time.monotonic(), 0.2
            while self.fed < self.total:
                # what is due by the end of the next step, at most one step's worth: a feeder that fell
                # behind keeps streaming instead of building one huge batch
                due = min(int((time.monotonic() - started + step) * self.rate), self.fed + int(self.rate * step),
                          self.total)  # fmt: skip
                now_ms = int(time.time() * 1000)
                by_shard: list[list[StoredRecord]] = [[] for _ in range(SHARDS)]
                for n in range(self.fed, due):
                    by_shard[n % SHARDS].append(StoredRecord(now_ms, self.maker.values(n), None))
                for shard, records in enumerate(by_shard):
                    if records:
                        self.store.append(self.topic.shard(str(shard)), records)
                self.fed = due
                self.expire_committed()
                time.sleep(max(started + self.fed / self.rate - step - time.monotonic(), 0.0))
        except BaseException as exc:  # reported by the soak, which stops
            self.error = exc

    def expire_committed(self) -> None:
        for shard, positions in enumerate(self.positions):
            if positions.path.exists():
                self.store.expire(self.topic.shard(str(shard)), positions.load().resume - self.window)


def job_figures(port: int) -> dict[str, float]:
    """The job's own metrics (summed over subtasks) from Flink's reporter; empty while unreachable."""
    figures: dict[str, float] = {}
    for name, _, value in reporter_samples(port, JOB_METRIC):
        figures[name] = figures.get(name, 0.0) + value
    return figures


def newest_checkpoint_bytes(checkpoints: Path) -> int:
    done = [c for c in checkpoints.glob("*/chk-*") if (c / "_metadata").exists()]
    if not done:
        return 0
    newest = max(done, key=lambda c: int(c.name.removeprefix("chk-")))
    return sum(f.stat().st_size for f in newest.rglob("*") if f.is_file())


def soak(
    tmp: Path, records: int, rate: int, every: float, on_sample: Callable[[Sample], None] = lambda _: None
) -> list[Sample]:
    """Feed ``records`` at ``rate`` through a job and sample it every ``every`` seconds until every
    record is committed (or the feeding is 10 minutes behind the rate)."""
    metrics_port = free_port()
    data: dict[str, Any] = {
        "source": {"database": "TRADE", "tables": [{"name": "ORDERS", "columns": SAMPLE_COLUMNS}]},
        "datahub": {"shards": SHARDS},
        "capture": {"poll_interval": "100ms"},
        "flink": {"parallelism": 2, "metrics_port": str(metrics_port)},
        "checkpoint": {"interval": "2s", "dir": str(tmp / "ck"), "savepoint_dir": str(tmp / "sp")},
        "output": {"format": "parquet", "path": str(tmp / "out"), "rolling": {"max_span": "10s"}},
    }
    samples: list[Sample] = []
    with JobUnderTest(tmp, data, env={"JVM_ARGS": JOB_JVM_ARGS}, in_process_emulator=True) as job:
        feeder = Feeder(job, records, rate)
        feeder.start()
        started = time.monotonic()
        deadline = started + records / rate + 600
        committed = 0
        for _ in _ticks(every):
            figures = job_figures(metrics_port)
            committed = int(figures.get("table_output_rows", committed))
            _, rss = group_usage(job.pgid)
            sample = Sample(
                elapsed_s=time.monotonic() - started,
                fed=feeder.fed,
                committed=committed,
                rss_bytes=rss,
                fds=sum(p.fds for p in group_processes(job.pgid)),
                state_bytes=int(figures.get("state_bytes", 0)),
                open_files=int(figures.get("open_files", 0)),
                checkpoint_bytes=newest_checkpoint_bytes(tmp / "ck"),
                files=sum(1 for _ in (tmp / "out").rglob("*.parquet")),
            )
            samples.append(sample)
            on_sample(sample)
            if feeder.error is not None:
                raise RuntimeError("the feeder failed") from feeder.error
            if committed >= records or time.monotonic() > deadline:
                break
    return samples


def _ticks(every: float) -> Iterator[None]:
    next_at = time.monotonic() + every
    while True:
        time.sleep(max(next_at - time.monotonic(), 0.0))
        next_at += every
        yield


def after_warm_up(samples: list[Sample]) -> list[Sample]:
    """The samples from the one where a third of the records were committed: the JVM, the interpreter
    and the duplicate filter (full once it holds ``flink.dedup_records`` ids a shard) have warmed up."""
    total = samples[-1].committed
    return [s for s in samples if s.committed >= total / 3]


def growth(samples: list[Sample], figure: str) -> int:
    """How much ``figure`` rose, at most, after the warm-up over its value at the end of the warm-up."""
    steady = after_warm_up(samples)
    first = int(getattr(steady[0], figure))
    return max(int(getattr(s, figure)) for s in steady) - first


def trend(samples: list[Sample], figure: str) -> float:
    """How much ``figure`` rose after the warm-up: its mean over the last half of the samples less its
    mean over the first half, which the ups and downs of a garbage-collected heap do not move much, and
    a cost per record does (by the records between the halves' middles times the cost)."""
    steady = after_warm_up(samples)
    half = len(steady) // 2
    first, last = steady[:half], steady[half:]
    if not first:
        return 0.0

    def mean(part: list[Sample]) -> float:
        return float(sum(getattr(s, figure) for s in part)) / len(part)

    return mean(last) - mean(first)


MIB = 1024**2


def row(sample: Sample) -> str:
    return (f"{sample.elapsed_s:8.0f} {sample.fed:11,} {sample.committed:11,} {sample.rss_bytes / MIB:8.0f} "
            f"{sample.fds:6} {sample.state_bytes / MIB:9.2f} {sample.open_files:6} "
            f"{sample.checkpoint_bytes / 1024:8.1f} {sample.files:7}")  # fmt: skip


HEADER = (f"{'seconds':>8} {'fed':>11} {'committed':>11} {'RSS MiB':>8} {'fds':>6} {'state MiB':>9} "
          f"{'open':>6} {'ckpt KiB':>8} {'files':>7}")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--records", type=int, default=20_000_000)
    parser.add_argument("--rate", type=int, default=20_000, help="records fed per second")
    parser.add_argument("--every", type=float, default=60, help="seconds between samples")
    args = parser.parse_args(argv)
    print(f"Soak: {args.records:,} records fed at {args.rate:,}/s into a job at parallelism 2, 4 shards, Parquet")
    print(f"machine: {machine()}")
    print(HEADER)
    with tempfile.TemporaryDirectory() as tmp:
        samples = soak(Path(tmp), args.records, args.rate, args.every, lambda s: print(row(s), flush=True))
    last = samples[-1]
    print(f"committed {last.committed:,} of {args.records:,} in {last.elapsed_s:.0f} s "
          f"({last.committed / last.elapsed_s:,.0f} rec/s)")  # fmt: skip
    steady = after_warm_up(samples)
    rss, peak = trend(samples, "rss_bytes") / MIB, growth(samples, "rss_bytes") / MIB
    print(f"after the warm-up ({steady[0].committed:,} committed), rise of the figures:")
    print(f"  RSS {rss:.1f} MiB (mean of the last half of the samples over the first; at most {peak:.0f} MiB)")
    print(f"  descriptors {growth(samples, 'fds')}, state {growth(samples, 'state_bytes')} bytes, "
          f"checkpoint {growth(samples, 'checkpoint_bytes')} bytes; output files open at most "
          f"{max(s.open_files for s in steady)}")  # fmt: skip
    return 0 if last.committed >= args.records else 1


if __name__ == "__main__":
    sys.exit(main())
