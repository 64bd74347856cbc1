"""The job's Python functions: the checkpointed shard poller and the per-table router.

Everything here works on batches: PyFlink's framework cost is ≈ 8 µs per element and every state
or metric call crosses into Java, so per record there is only list work in Python, and per batch a
handful of state and metric calls.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pyflink.common import Types
from pyflink.common.watermark_strategy import TimestampAssigner
from pyflink.datastream import KeyedProcessFunction, OutputTag, RuntimeContext
from pyflink.datastream.state import MapStateDescriptor, ValueStateDescriptor

from obflow.config import load_config
from obflow.datahub.client import make_client
from obflow.datahub.consumer import ShardReader
from obflow.deadletter import DeadLetter
from obflow.events import DATAHUB_FIELDS
from obflow.job_graph import METRIC_GROUP

log = logging.getLogger("obflow.flink")

_FIELDS = [name for name, _ in DATAHUB_FIELDS]
EVENT_ID, TABLE, COMMIT, PAYLOAD = (_FIELDS.index(f) for f in ("event_id", "table_name", "commit_ts_ms", "payload"))
SEQUENCE = _FIELDS.index("position")
FETCH_LIMIT = 1000
DEAD_LETTERS = "_dead_letter"
"""The pseudo-table of records the job cannot route; its staging files go to the dead-letter queue."""

FAULT_ENV = "OBFLOW_FLINK_FAIL_ONCE"
"""Test hook ``<marker file>:<records>``: fail the job once after that many records, then never again."""

Progress = tuple[str, int]
"""The poller's main output, one per fetched batch: (shard, newest commit time in ms)."""


class SeenIds:
    """The event ids of one shard read within the dedup window, mirrored from keyed ``MapState``.

    State: one map entry per fetched batch, ``first sequence → "<read time ms>\\n<id>\\n<id>..."``,
    so a batch costs one state write however many records it has. Entries older than the window are
    removed as new batches arrive: the state holds at most the ids read in one window (R9.3). After a
    restore the mirror is rebuilt from the restored entries.
    """

    def __init__(self, state: Any, window_ms: int) -> None:
        self.state, self.window_ms = state, window_ms
        self.ids: set[str] = set()
        self.batches: deque[tuple[int, int, list[str]]] = deque()
        restored = []
        for first_sequence, entry in state.items():
            read_ms, *ids = entry.split("\n")
            restored.append((int(first_sequence), int(read_ms), ids))
        for batch in sorted(restored):
            self.batches.append(batch)
            self.ids.update(batch[2])

    def remember(self, first_sequence: int, ids: list[str], now_ms: int) -> None:
        while self.batches and self.batches[0][1] < now_ms - self.window_ms:
            old_sequence, _, old_ids = self.batches.popleft()
            self.ids.difference_update(old_ids)
            self.state.remove(old_sequence)
        if ids:
            self.batches.append((first_sequence, now_ms, ids))
            self.ids.update(ids)
            self.state.put(first_sequence, "\n".join([str(now_ms), *ids]))


class ShardPoller(KeyedProcessFunction):  # type: ignore[misc]
    """Keyed by shard id: on every tick reads what is new in that shard of the DataHub change topic.

    Checkpointed per shard: the next sequence to read (``ValueState``), so a restore neither skips
    nor repeats input (R2.1), and the recently seen event ids (:class:`SeenIds`) to drop replays
    (R9.3). Per fetch, each table's payloads go as one newline-joined text to that table's side
    output (its staging sink), led by a ``#<subtask>`` line; records of tables not in
    ``source.tables`` go to the dead-letter side output. The main output is one small
    :data:`Progress` element per fetch, which carries event time (the payload texts never pass
    through another Python operator: each crossing between Java and Python copies them). A tick reads
    while batches come back full, for at most half the poll interval, so polling never holds up a
    checkpoint barrier for long; a shard that had nothing new is asked again after a doubling pause,
    up to ``flink.idle_poll_max``, so idle shards cost little.
    """

    def __init__(self, config_path: str | None, tags: dict[str, OutputTag]) -> None:
        self.config_path = config_path
        self.tags = tags

    def open(self, runtime_context: RuntimeContext) -> None:
        config = load_config(self.config_path)
        self.project, self.topic = config.datahub.project, config.datahub.topic
        self.client = make_client(config.datahub, protocol="json", reader=True)
        self.budget_s = config.capture.poll_interval / 2
        self.poll_interval, self.idle_poll_max = config.capture.poll_interval, config.flink.idle_poll_max
        self.idle: dict[str, tuple[float, float]] = {}  # shard -> (poll again at, current backoff)
        self.window_ms = int(config.flink.dedup_window * 1000)
        self.subtask = subtask_index(runtime_context)
        self.readers: dict[str, ShardReader] = {}
        self.seen: dict[str, SeenIds] = {}
        self.next_sequence = runtime_context.get_state(ValueStateDescriptor("next_sequence", Types.LONG()))
        self.seen_batches = runtime_context.get_map_state(
            MapStateDescriptor("seen_event_ids", Types.LONG(), Types.STRING())
        )
        self.fault = _FaultHook.from_env()
        self.metrics = runtime_context.get_metrics_group().add_group(METRIC_GROUP)
        self.records_in = self.metrics.meter("records_in", time_span_in_seconds=60)  # rate: R7.2
        self.duplicates = self.metrics.counter("duplicates_dropped")
        self.dead_letters = self.metrics.counter("dead_letters")
        self.read_latency_ms = 0
        self.metrics.gauge("read_latency_ms", lambda: self.read_latency_ms)  # commit → read by the job
        self.shard_lag_ms: dict[str, int] = {}

    def process_element(self, value: Any, ctx: KeyedProcessFunction.Context) -> Iterator[Any]:
        shard = str(ctx.get_current_key())
        start = self.next_sequence.value() or 0
        reader = self.readers.get(shard)
        if reader is None or reader.next_sequence != start:  # first tick, or restored from a checkpoint
            reader = self.readers[shard] = ShardReader(self.client, self.project, self.topic, shard, start)
            self.seen[shard] = SeenIds(self.seen_batches, self.window_ms)
            if shard not in self.shard_lag_ms:
                self.shard_lag_ms[shard] = 0
                self.metrics.add_group("shard", shard).gauge("lag_ms", lambda: self.shard_lag_ms[shard])
        now = time.monotonic()
        poll_at, backoff = self.idle.get(shard, (0.0, 0.0))
        if now < poll_at:  # idle shard: skip this tick
            return
        deadline = now + self.budget_s
        while True:
            first = reader.next_sequence
            rows, next_sequence = reader.fetch_values(FETCH_LIMIT)
            if rows:
                self.idle.pop(shard, None)
                yield from self._batch(shard, first, rows)
                self.next_sequence.update(next_sequence)
                self.fault.count(len(rows))
            else:  # nothing new: wait twice as long before asking again, up to flink.idle_poll_max
                self.shard_lag_ms[shard] = 0  # read up to the end of the shard: no lag
                backoff = min(max(backoff * 2, self.poll_interval), self.idle_poll_max)
                self.idle[shard] = (now + backoff - self.poll_interval, backoff)
            if len(rows) < FETCH_LIMIT or time.monotonic() > deadline:
                return

    def _batch(self, shard: str, first_sequence: int, rows: list[list[Any]]) -> Iterator[Any]:
        seen = self.seen[shard]
        known = seen.ids
        fresh_ids: list[str] = []
        by_table: dict[str, list[str]] = {}
        duplicates = 0
        for row in rows:
            event_id = row[EVENT_ID]
            if event_id in known:
                duplicates += 1
                continue
            known.add(event_id)
            fresh_ids.append(event_id)
            table = row[TABLE]
            if table in by_table:
                by_table[table].append(row[PAYLOAD])
            else:
                by_table[table] = [row[PAYLOAD]]
        now_ms = int(time.time() * 1000)
        seen.remember(first_sequence, fresh_ids, now_ms)
        newest_commit = int(rows[-1][COMMIT])
        self.records_in.mark_event(len(rows))
        if duplicates:
            self.duplicates.inc(duplicates)
        self.read_latency_ms = self.shard_lag_ms[shard] = max(now_ms - newest_commit, 0)
        header = f"#{self.subtask}"
        for table, payloads in by_table.items():
            if table in self.tags:
                yield self.tags[table], "\n".join([header, *payloads])
            else:
                reason = f"table {table} is not in source.tables"
                letters = [
                    DeadLetter(p, reason, "route", table, location={"shard": shard}).to_json().decode()
                    for p in payloads
                ]
                self.dead_letters.inc(len(letters))
                yield self.tags[DEAD_LETTERS], "\n".join([header, *letters])
        yield shard, newest_commit


class CommitTime(TimestampAssigner):  # type: ignore[misc]
    """Event time of a fetched batch: the newest commit timestamp in it (R2.3)."""

    def extract_timestamp(self, value: Progress, record_timestamp: int) -> int:
        return value[1]


def subtask_index(runtime_context: RuntimeContext) -> int:
    """This subtask's index. In thread mode PyFlink 2.3 calls ``getIndexOfThisSubtask`` on Flink 2's
    RuntimeContext, which moved it to ``getTaskInfo()``; ask there."""
    try:
        return int(runtime_context.get_index_of_this_subtask())
    except AttributeError:
        return int(runtime_context._runtime_context.getTaskInfo().getIndexOfThisSubtask())


class _FaultHook:
    """Fails the job once, after a number of records, when the test hook :data:`FAULT_ENV` is set."""

    def __init__(self, marker: Path | None, after: int) -> None:
        self.marker, self.after, self.seen = marker, after, 0

    @classmethod
    def from_env(cls) -> _FaultHook:
        spec = os.environ.get(FAULT_ENV, "")
        if not spec:
            return cls(None, 0)
        marker, _, after = spec.rpartition(":")
        return cls(Path(marker), int(after))

    def count(self, records: int) -> None:
        if self.marker is None:
            return
        self.seen += records
        if self.seen >= self.after and not self.marker.exists():
            self.marker.write_text(f"failed once at {time.time()}")
            raise RuntimeError(f"injected fault after {self.seen} records (test hook)")
