"""How long the Flink job takes to recover from a task failure (R4.3: within 10 minutes).

A steady stream of changes goes into DataHub while the job (``obflow job run``, mini-cluster) runs
with the production restart strategy (fixed delay, ``flink.restart_delay``); the test hook fails a
task once, mid-stream. Measured from the failure (the hook's marker file):

- to RUNNING again (the runner's ``/readyz``),
- to recovered: every change sent before the failure is in the committed files, and the output
  keeps up again (the rows sent in the last seconds are committed within a few seconds).

After a restart each shard resumes from its committed positions: it reads again what its open files
held (at most ``output.rolling.max_span`` of changes, or ``max_size`` of output, per file). So the job
is back where it was after: restart + the re-read of one span of input at its catch-up rate; the rows
become visible when their files roll, as without a failure. The table prints that bound for the
default span (1 hour, capped by 1 GiB of output per file).

Run: ``python -m benchmarks.recovery [--rate 1000] [--max-span 5s]``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.common import JobUnderTest, machine
from obflow.config import ObflowConfig
from obflow.datahub.client import make_client
from obflow.datahub.producer import Producer
from obflow.events import ChangeEvent
from obflow.units import parse_duration
from obflow_dev.sample import SAMPLE_COLUMNS, change_stream

DEFAULT_SPAN = 3600.0
DEFAULT_FILE_BYTES = 1024**3
ROW_BYTES = 250  # an output row of the sample table, Parquet (measured: benchmarks.job_throughput files)


class SteadyProducer(threading.Thread):
    """Puts ``events`` into DataHub at ``rate`` per second, in tenths of a second."""

    def __init__(self, config: ObflowConfig, events: list[ChangeEvent], rate: int) -> None:
        super().__init__(daemon=True)
        self.config, self.events, self.step = config, events, max(rate // 10, 1)
        self.sent = 0
        self.stop_event = threading.Event()

    def run(self) -> None:
        datahub = self.config.datahub
        producer = Producer(make_client(datahub), datahub.project, datahub.topic, datahub.retry)
        while self.sent < len(self.events) and not self.stop_event.is_set():
            started = time.monotonic()
            producer.send(self.events[self.sent : self.sent + self.step])
            self.sent = min(self.sent + self.step, len(self.events))
            time.sleep(max(0.1 - (time.monotonic() - started), 0))
        producer.close()


def measure(tmp: Path, args: argparse.Namespace) -> tuple[float, float]:
    """Seconds from the injected failure to RUNNING again, and to every earlier change committed."""
    marker = tmp / "failed"
    data = job_config(tmp, args.restart_delay, args.checkpoint_interval, args.max_span)
    with JobUnderTest(tmp, data, {"OBFLOW_FAULT": f"records:fail:{marker}:{args.fail_after}"}) as job:
        total = args.fail_after * 3
        events = change_stream(total, rows=total, commit_ts_ms=int(time.time() * 1000))
        producer = SteadyProducer(job.config, events, args.rate)
        try:
            producer.start()
            wait_until(marker.exists, 600)
            failed_at, sent_before = marker.stat().st_mtime, producer.sent
            wait_until(lambda: not job.ready(), 30)  # the runner notices within a second
            wait_until(job.ready, 600)
            running_at = time.time()
            wait_until(lambda: job.committed_rows() >= sent_before, 900)
            return running_at - failed_at, time.time() - failed_at
        finally:
            producer.stop_event.set()


def wait_until(condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not within {timeout}s")
        time.sleep(0.1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rate", type=int, default=1000, help="changes per second into DataHub")
    parser.add_argument("--checkpoint-interval", default="30s")
    parser.add_argument("--max-span", default="5s", help="output.rolling.max_span (the default is 1h)")
    parser.add_argument("--restart-delay", default="10s", help="flink.restart_delay (the default is 10s)")
    parser.add_argument("--fail-after", type=int, default=20_000, help="records read before the failure")
    parser.add_argument(
        "--max-rate", type=int, default=10_000, help="the job's catch-up rate for the bound (job_throughput: more)"
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp_dir:
        restart, recovered = measure(Path(tmp_dir), args)
    span = parse_duration(args.max_span)
    print(f"Flink job recovery from a task failure: {args.rate} changes/s in, parallelism 2")
    print(f"machine: {machine()}")
    print(f"{'step':66} {'seconds':>8}")
    print(f"{'failure -> job RUNNING again (restart delay ' + args.restart_delay + ')':66} {restart:8.1f}")
    print(f"{f'failure -> every earlier change committed (files roll every {span:g}s)':66} {recovered:8.1f}")
    # what an open file held is read again after the restart
    default_span = min(DEFAULT_SPAN, DEFAULT_FILE_BYTES / ROW_BYTES / max(args.rate, 1))
    bound = restart + default_span * args.rate / args.max_rate
    what = f"bound at the default span ({default_span:.0f}s at this rate): restart + re-read"
    print(f"{what:66} {bound:8.1f}")
    verdict = "met" if recovered < 600 and bound < 600 else "NOT met"
    print(f"R4.3 (within 600 s): {verdict}")
    return 0


def job_config(tmp: Path, restart_delay: str, interval: str, max_span: str) -> dict[str, Any]:
    return {
        "source": {"database": "TRADE", "tables": [{"name": "ORDERS", "columns": SAMPLE_COLUMNS}]},
        "datahub": {"shards": 4},
        "flink": {"parallelism": 2, "restart_delay": restart_delay},
        "checkpoint": {"interval": interval, "dir": str(tmp / "ck"), "savepoint_dir": str(tmp / "sp")},
        "output": {"path": str(tmp / "out"), "rolling": {"max_span": max_span}},
    }


if __name__ == "__main__":
    sys.exit(main())
