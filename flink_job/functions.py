"""The job's Python functions: the subtask that works its shards, and event time.

Per record there is only Arrow and numpy work (flink_job.shard); per tick and shard, one Python call
from Flink and a handful of metric calls into Java. The payloads never cross into the JVM: the only
elements Flink carries are the ticks and one small progress element per shard and poll.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from pyflink.common.watermark_strategy import TimestampAssigner
from pyflink.datastream import ProcessFunction, RuntimeContext

from flink_job.reading import decode_json
from flink_job.shard import ShardMetrics, ShardWorker
from obflow.config import load_config
from obflow.datahub.client import make_client
from obflow.deadletter import DeadLetterQueue
from obflow.faults import from_env
from obflow.job_graph import METRIC_GROUP

log = logging.getLogger("obflow.flink")

READ_AHEAD_THREADS = 2
"""Threads per subtask that read and decode its shards' next fetches (flink_job.reading.ShardFetcher):
two keep a request in flight while another's answer is decoded."""
READ_AHEAD_FETCHES = 16
"""Fetches read ahead per subtask, shared by its shards (at least one each): what one batch of
processing takes (flink_job.shard.BATCH_RECORDS) for two shards, at most twice that held (≈ 0.7 MB a
fetch of the sample table), so memory stays bounded whatever the backlog."""

Progress = tuple[str, int]
"""One per shard and poll that read something: (shard, newest commit time read, ms)."""

LATENCY_BUCKETS = (1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600)
"""Upper bounds (whole seconds) of the end-to-end latency histogram: database commit → row in a committed
file. Flink's reporter turns every character of a label value but letters, digits, ``:`` and ``_`` into
``_``: whole numbers stay numbers for ``histogram_quantile``, and the last bucket is ``le="Inf"``,
which Prometheus reads as +Inf."""


class SetGauge:
    """A gauge the subtask sets, held in a Flink Counter moved by the difference: Flink's Prometheus
    reporter exports a Counter as a gauge of the same name. A Python gauge (``group.gauge(name, f)``)
    is evaluated on the reporter's own thread, which calls into the embedded interpreter from a thread
    pemja does not manage: in thread mode that crashed the JVM (in _PyEval_EvalFrameDefault, on
    "prometheus-http-1-2"). Counters are only ever moved from the task's own thread."""

    def __init__(self, group: Any, name: str) -> None:
        self.counter, self.value = group.counter(name), 0

    def set(self, value: int) -> None:
        if value != self.value:
            self.counter.inc(value - self.value)
            self.value = value


class FlinkShardMetrics(ShardMetrics):
    """A worker's figures on the subtask's Flink metric group ``obflow`` (exported by Flink's reporter)."""

    def __init__(self, group: Any, subtask_workers: dict[str, ShardWorker]) -> None:
        self.group = group
        self.records_in = group.meter("records_in", time_span_in_seconds=60)  # R7.2
        self.duplicates = group.counter("duplicates_dropped")
        self.dead_letter_counts: dict[str, Any] = {}
        self.write_failures = group.counter("output_write_failures")
        self.records_expired = group.counter("records_expired")  # unread when DataHub expired them
        self.subtask_workers = subtask_workers
        self.read_latency_ms = SetGauge(group, "read_latency_ms")  # commit → read by the job
        self.last_commit_s = SetGauge(group, "output_last_commit_timestamp_seconds")
        self.state_bytes = SetGauge(group, "state_bytes")
        self.open_files = SetGauge(group, "open_files")
        latency = group.add_group("end_to_end_latency_seconds")
        self.latency_buckets = [latency.add_group("le", str(bound)).counter("bucket") for bound in LATENCY_BUCKETS]
        self.latency_buckets.append(latency.add_group("le", "Inf").counter("bucket"))
        self.latency_sum_ms = latency.counter("sum_ms")
        self.latency_count = latency.counter("count")
        self.files: dict[str, Any] = {}
        self.rows: dict[str, Any] = {}
        self.shard_lag_ms: dict[str, SetGauge] = {}

    def refresh(self) -> None:
        """Set what the subtask's workers hold now (after each tick, on the task's thread)."""
        self.state_bytes.set(sum(w.state_bytes for w in self.subtask_workers.values()))
        self.open_files.set(sum(len(w.files) for w in self.subtask_workers.values()))

    def for_shard(self, shard: str) -> ShardMetrics:
        lag = self.shard_lag_ms[shard] = SetGauge(self.group.add_group("shard", shard), "lag_ms")
        outer = self

        class OneShard(ShardMetrics):
            def read(self, records: int, duplicates: int, lag_ms: int) -> None:
                if records:
                    outer.records_in.mark_event(records)
                    outer.read_latency_ms.set(lag_ms)
                    lag.set(lag_ms)
                else:  # read up to the end of the shard: no lag
                    lag.set(0)
                if duplicates:
                    outer.duplicates.inc(duplicates)

            def dead_letters(self, stage: str, count: int) -> None:
                outer.dead_letters(stage, count)

            def committed(
                self, table: str, rows: int, latency: np.ndarray[Any, Any], counts: np.ndarray[Any, Any]
            ) -> None:
                outer.committed(table, rows, latency, counts)

            def write_failed(self, table: str) -> None:
                outer.write_failures.inc(1)

            def expired(self, records: int) -> None:
                outer.records_expired.inc(records)

        return OneShard()

    def dead_letters(self, stage: str, count: int) -> None:
        if stage not in self.dead_letter_counts:
            self.dead_letter_counts[stage] = self.group.add_group("stage", stage).counter("dead_letters")
        self.dead_letter_counts[stage].inc(count)

    def committed(self, table: str, rows: int, latency: np.ndarray[Any, Any], counts: np.ndarray[Any, Any]) -> None:
        if table not in self.files:
            group = self.group.add_group("table", table)
            self.files[table], self.rows[table] = group.counter("output_files"), group.counter("output_rows")
        self.files[table].inc(1)
        self.rows[table].inc(rows)
        per_bucket = np.bincount(
            np.searchsorted(LATENCY_BUCKETS, latency), weights=counts, minlength=len(LATENCY_BUCKETS) + 1
        )
        cumulative = np.cumsum(per_bucket).astype(np.int64)
        for counter, count in zip(self.latency_buckets, cumulative.tolist(), strict=True):
            if count:
                counter.inc(count)
        self.latency_sum_ms.inc(int(float((latency * counts).sum()) * 1000))
        self.latency_count.inc(int(counts.sum()))
        self.last_commit_s.set(int(time.time()))


class ShardReaders(ProcessFunction):  # type: ignore[misc]
    """A subtask of the reading stage and the shards it owns: shard ``i`` of the topic belongs to subtask
    ``i mod parallelism``, as evenly as the counts allow (4 shards over 2 subtasks: 2 and 2). Every tick
    (broadcast to every subtask: one element per subtask and tick, however many shards) lets each of its
    shards' workers read what is new and write it to the output files (flink_job.shard). A restart or a
    rescale gives each shard a new worker, which resumes from the shard's committed positions.

    A tick works for at most ``capture.poll_interval`` (until the next tick), shared by the subtask's
    shards (each reads at least one fetch; the first shard to go turns round), round after round while
    a shard has more waiting, so a subtask with work waiting stays busy until the next tick and a
    checkpoint barrier waits at most that long. A shard that had
    nothing new is asked again after a doubling pause, up to ``flink.idle_poll_max``, so idle shards
    cost little."""

    def __init__(self, config_path: str | None, shard_ids: list[str]) -> None:
        self.config_path = config_path
        self.shard_ids = shard_ids

    def open(self, runtime_context: RuntimeContext) -> None:
        config = load_config(self.config_path)
        self.config = config
        self.client = make_client(config.datahub, protocol="json", reader=True)
        self.dead_letters = DeadLetterQueue(config)
        self.budget_s = config.capture.poll_interval
        self.poll_interval, self.idle_poll_max = config.capture.poll_interval, config.flink.idle_poll_max
        self.idle: dict[str, tuple[float, float]] = {}  # shard -> (poll again at, current pause)
        self.workers: dict[str, ShardWorker] = {}
        self.metrics = FlinkShardMetrics(runtime_context.get_metrics_group().add_group(METRIC_GROUP), self.workers)
        faults = from_env()
        warm_up()
        for chatty in ("urllib3", "datahub"):  # a debug line per request, each handed to Flink's log4j
            logging.getLogger(chatty).setLevel(logging.WARNING)
        index, count = task_position(runtime_context)
        self.read_ahead = ThreadPoolExecutor(READ_AHEAD_THREADS, thread_name_prefix="obflow-read-ahead")
        owned = [s for i, s in enumerate(self.shard_ids) if i % count == index]
        depth = max(READ_AHEAD_FETCHES // max(len(owned), 1), 1)
        for shard in owned:
            worker = ShardWorker(config, self.client, shard, self.dead_letters, self.metrics.for_shard(shard), faults,
                                 read_ahead=self.read_ahead, read_ahead_fetches=depth)  # fmt: skip
            worker.open()
            self.workers[shard] = worker
        self.shards = list(self.workers)
        self.first = 0  # the shard that goes first on the next tick

    def process_element(self, value: Any, ctx: ProcessFunction.Context) -> Iterator[Progress]:
        deadline = time.monotonic() + self.budget_s
        newest: dict[str, int] = {}
        count = len(self.shards)
        order = [self.shards[(self.first + turn) % count] for turn in range(count)]
        self.first = (self.first + 1) % max(count, 1)
        waiting = set(order)
        while True:  # round after round over the shards that have more waiting, while the tick has time left
            turns, waiting = [shard for shard in order if shard in waiting], set()
            for turn, shard in enumerate(turns):
                worker = self.workers[shard]
                now = time.monotonic()
                poll_at, pause = self.idle.get(shard, (0.0, 0.0))
                if now < poll_at:  # an idle shard: only files that are due roll
                    if worker.files:
                        worker.roll_due()
                    continue
                progress = worker.poll(max(deadline - now, 0.0) / (len(turns) - turn))
                if progress.records:
                    self.idle.pop(shard, None)
                else:  # nothing new: wait twice as long before asking again, up to flink.idle_poll_max
                    pause = min(max(pause * 2, self.poll_interval), self.idle_poll_max)
                    self.idle[shard] = (now + pause - self.poll_interval, pause)
                if progress.newest_commit_ms is not None:
                    newest[shard] = max(newest.get(shard, progress.newest_commit_ms), progress.newest_commit_ms)
                if progress.more:
                    waiting.add(shard)
            if not waiting or time.monotonic() >= deadline:
                break
        self.metrics.refresh()
        yield from newest.items()

    def close(self) -> None:
        for worker in self.workers.values():
            worker.close()
        self.read_ahead.shutdown(wait=False, cancel_futures=True)


def task_position(runtime_context: RuntimeContext) -> tuple[int, int]:
    """(this subtask's index, the number of parallel subtasks). In thread mode PyFlink 2.3 asks Flink 2's
    RuntimeContext for them where they no longer are (they moved to ``getTaskInfo()``): ask there."""
    try:
        return int(runtime_context.get_index_of_this_subtask()), int(runtime_context.get_number_of_parallel_subtasks())
    except AttributeError:
        info = runtime_context._runtime_context.getTaskInfo()
        return int(info.getIndexOfThisSubtask()), int(info.getNumberOfParallelSubtasks())


def warm_up() -> None:
    """Load what the first fetch would otherwise load while its shard waits: pyarrow's compute layer
    imports pandas on first use (over a second in the TaskManager's interpreter)."""
    decode_json(b'{"NextCursor": "", "Records": []}')


class CommitTime(TimestampAssigner):  # type: ignore[misc]
    """Event time of a poll: the newest commit timestamp it read (R2.3)."""

    def extract_timestamp(self, value: Progress, record_timestamp: int) -> int:
        return value[1]
