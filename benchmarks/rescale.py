"""Rescale downtime on a real standalone Flink cluster (JobManager and TaskManager processes from the
PyFlink wheel, adaptive scheduler) running the real job while changes stream into the DataHub
emulator, driven by the operator's own rescale step:

- in place: ``flink.inPlaceRescale``, the adaptive scheduler's resource requirements; the job and its
  processes stay, the tasks restart from the latest checkpoint at the new parallelism (the job keeps
  running at the old one while the scheduler waits for its resources to settle);
- savepoint: the operator's stop-with-savepoint, new TaskManager processes (a redeploy's new pods) and
  the job submitted again at the new parallelism from the savepoint.

Measured from the decision: every vertex RUNNING at the new parallelism (Flink's REST API), and the
downtime proper: the longest stretch in which the job read nothing from DataHub while changes kept
arriving (the emulator's count of records read, sampled every 50 ms; in steady state reads never
pause for more than a few poll intervals). The in-place figures are also shown as a ratio of the
savepoint ones from the same run. At the end every change must be in the committed output exactly
once.

    python -m benchmarks.rescale [--rate 200] [--from-parallelism 2] [--to-parallelism 3]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks.common import machine
from benchmarks.recovery import SteadyProducer
from obflow.datahub.client import ensure_change_topic, make_client
from obflow.flink_rest import FlinkRest, FlinkRestError
from obflow_dev.emulator import DataHubEmulator
from obflow_dev.sample import change_stream
from obflow_dev.supervise import stop_process_group
from obflow_operator.builders import Owner
from obflow_operator.outcome import OperatorSettings, Outcome
from obflow_operator.reconcile import stop_for_job_change
from obflow_operator.spec import DataPipelineSpec
from obflow_operator.status import DataPipelineStatus, Phase
from obflow_operator.validation import parse_spec
from tests.support.datahub import ACCESS_ID, ACCESS_KEY
from tests.support.job import job_config, wait_for_rows
from tests.support.pipelines import MINIMAL, spec_of
from tests.support.standalone import StandaloneFlink

RUNNER_ENV = {"OBFLOW_DATAHUB__ACCESS_KEY": ACCESS_KEY}
OWNER = Owner(name="bench", namespace="bench", uid="bench")
POLL = 0.1


def seconds_until(condition: Callable[[], bool], timeout: float = 180) -> float:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"not within {timeout:.0f}s")
        time.sleep(POLL)
    return time.monotonic() - started


def all_running(rest: FlinkRest, parallelism: int) -> bool:
    try:
        job = rest.current_job()
        return job is not None and rest.job(job.jid).all_running(parallelism)
    except FlinkRestError:
        return False


class ReadStalls(threading.Thread):
    """Samples how many records the job has read from the emulator, to find where reading paused."""

    def __init__(self, emulator: DataHubEmulator) -> None:
        super().__init__(daemon=True)
        self.emulator = emulator
        self.samples: list[tuple[float, int]] = []
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.wait(0.05):
            self.samples.append((time.monotonic(), self.emulator.stats.records_read))

    def longest(self, start: float, end: float) -> float:
        """The longest time within [start, end] in which the count of records read did not move."""
        longest, since, last = 0.0, start, -1
        for when, count in self.samples:
            if when < start or when > end:
                continue
            if count != last:
                longest, since, last = max(longest, when - since), when, count
        return max(longest, end - since)


def spec_at(parallelism: int, savepoints: str, in_place: bool) -> DataPipelineSpec:
    storage = {"savepointDir": savepoints}
    return parse_spec(spec_of(MINIMAL, storage=storage, flink__parallelism=parallelism, flink__inPlaceRescale=in_place))


def rescale(settings: OperatorSettings, savepoints: str, low: int, high: int, in_place: bool) -> tuple[Outcome, float]:
    """The operator's rescale step from ``low`` to ``high``; returns its outcome and how long it took."""
    outcome = Outcome(DataPipelineStatus(phase=Phase.RUNNING, job_state="RUNNING"))
    started = time.monotonic()
    stop_for_job_change(
        settings, OWNER, spec_at(low, savepoints, in_place), spec_at(high, savepoints, in_place), outcome
    )
    return outcome, time.monotonic() - started


def measure(tmp: Path, args: argparse.Namespace) -> list[tuple[str, float, float, float]]:
    emulator = DataHubEmulator(str(tmp / "datahub"), access_id=ACCESS_ID, access_key=ACCESS_KEY).start()
    flink = StandaloneFlink(tmp / "flink", slots=4, adaptive=True, extra_env=RUNNER_ENV)
    low, high = args.from_parallelism, args.to_parallelism
    config, path = job_config(tmp, emulator.endpoint, parallelism=low)
    savepoints = Path(config.checkpoint.savepoint_dir).resolve().as_uri()
    total = args.rate * 240
    ensure_change_topic(make_client(config.datahub), config.datahub)
    producer = SteadyProducer(config, change_stream(total, rows=total, commit_ts_ms=int(time.time() * 1000)), args.rate)
    rows: list[tuple[str, float, float, float]] = []
    stalls = ReadStalls(emulator)
    runners: list[subprocess.Popen[bytes]] = []
    try:
        flink.start()
        rest = FlinkRest(flink.url)
        settings = OperatorSettings(rest_url_template=flink.url)
        producer.start()
        stalls.start()
        runners.append(flink.submit(path, tmp / "runner-1.log", RUNNER_ENV))
        seconds_until(lambda: all_running(rest, low))
        for old, new in ((low, high), (high, low)):
            time.sleep(args.settle)
            decided = time.monotonic()
            _, step = rescale(settings, savepoints, old, new, in_place=True)
            seconds_until(lambda: all_running(rest, new))  # noqa: B023 (used before the loop moves on)
            running = time.monotonic() - decided
            time.sleep(args.settle)  # reading resumes after the tasks run; the stall ends within this
            rows.append((f"in place {old} -> {new}", step, running, stalls.longest(decided, time.monotonic())))

        time.sleep(args.settle)
        decided = time.monotonic()
        outcome, step = rescale(settings, savepoints, low, high, in_place=False)
        assert outcome.status.restore_path, [e.message for e in outcome.events]
        runners[-1].wait(60)
        flink.replace_taskmanagers()  # the redeploy's new pods
        env = {**RUNNER_ENV, "OBFLOW_FLINK__PARALLELISM": str(high)}
        runners.append(flink.submit(path, tmp / "runner-2.log", env, outcome.status.restore_path))
        seconds_until(lambda: all_running(rest, high))
        running = time.monotonic() - decided
        time.sleep(args.settle)
        rows.append((f"savepoint {low} -> {high}", step, running, stalls.longest(decided, time.monotonic())))

        producer.join()
        committed = wait_for_rows(config, total, runners[-1], timeout=300)
        ids = [str(row["_event_id"]) for row in committed]
        assert len(ids) == len(set(ids)) == total, f"{len(ids)} rows, {len(set(ids))} distinct, {total} sent"
    finally:
        producer.stop_event.set()
        stalls.stop_event.set()
        for runner in runners:
            stop_process_group(runner, timeout=60)
        flink.stop()
        emulator.stop()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=200, help="changes per second into DataHub")
    parser.add_argument("--from-parallelism", type=int, default=2)
    parser.add_argument("--to-parallelism", type=int, default=3)
    parser.add_argument("--settle", type=float, default=10.0, help="seconds of steady running before each rescale")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="obflow-bench-rescale-") as tmp:
        rows = measure(Path(tmp), args)
    print(f"Rescale downtime, real standalone Flink, {args.rate} changes/s streaming in ({machine()})")
    print(f"{'mode':<22} {'operator step s':>16} {'all running s':>14} {'read stall s':>13} {'vs savepoint':>13}")
    baseline = rows[-1][3]
    for name, step, running, stall in rows:
        print(f"{name:<22} {step:>16.1f} {running:>14.1f} {stall:>13.1f} {stall / baseline:>12.2f}x")
    print("every change committed exactly once across the three rescales")
    return 0


if __name__ == "__main__":
    sys.exit(main())
