"""The job's Python functions: the checkpointed shard poller and the per-table router."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from pyflink.common import Types
from pyflink.common.time import Time
from pyflink.datastream import KeyedProcessFunction, OutputTag, ProcessFunction, RuntimeContext
from pyflink.datastream.state import MapStateDescriptor, StateTtlConfig, ValueStateDescriptor

from obflow.config import load_config
from obflow.datahub.client import make_client
from obflow.datahub.consumer import ShardReader
from obflow.events import DATAHUB_FIELDS

log = logging.getLogger("obflow.flink")

TABLE_INDEX = [name for name, _ in DATAHUB_FIELDS].index("table_name")
COMMIT_INDEX = [name for name, _ in DATAHUB_FIELDS].index("commit_ts_ms")
FETCH_LIMIT = 1000


class ShardPoller(KeyedProcessFunction):  # type: ignore[misc]
    """Keyed by shard id: on every tick reads the next batch of that shard from DataHub.

    State per shard, checkpointed with everything else: the next sequence to read, and the event ids
    seen within ``flink.dedup_window`` (expired by TTL, which bounds the state). Emits one
    ``(table, newline-joined payloads)`` element per table and batch: per-record framework cost is what
    limits PyFlink, so the data moves in batches.
    """

    def __init__(self, config_path: str) -> None:
        self.config_path = config_path

    def open(self, runtime_context: RuntimeContext) -> None:
        config = load_config(self.config_path)
        self.project, self.topic = config.datahub.project, config.datahub.topic
        self.client = make_client(config.datahub)
        self.readers: dict[str, ShardReader] = {}
        self.next_sequence = runtime_context.get_state(ValueStateDescriptor("next_sequence", Types.LONG()))
        seen = MapStateDescriptor("seen_event_ids", Types.STRING(), Types.BOOLEAN())
        ttl = StateTtlConfig.new_builder(Time.milliseconds(int(config.flink.dedup_window * 1000))).build()
        seen.enable_time_to_live(ttl)
        self.seen = runtime_context.get_map_state(seen)
        self.fault = _FaultHook.from_env()
        metrics = runtime_context.get_metrics_group().add_group("obflow")
        self.records_in = metrics.meter("records_in", time_span_in_seconds=60)  # rate: R7.2
        self.duplicates = metrics.counter("duplicates_dropped")
        self.dead_letters = metrics.counter("dead_letters")
        # commit in the database -> written by this job, ms (R7.3); and how far behind the newest read is
        self.latency = metrics.distribution("end_to_end_latency_ms")
        self.lag_ms = 0
        metrics.gauge("source_lag_ms", lambda: self.lag_ms)

    def process_element(self, value: Any, ctx: KeyedProcessFunction.Context) -> Iterator[tuple[str, str]]:
        shard = str(ctx.get_current_key())
        start = self.next_sequence.value() or 0
        reader = self.readers.get(shard)
        if reader is None or reader.next_sequence != start:  # first tick, or restored from a checkpoint
            reader = self.readers[shard] = ShardReader(self.client, self.project, self.topic, shard, start)
        batch = reader.fetch(FETCH_LIMIT)
        if not batch.records:
            return
        by_table: dict[str, list[str]] = {}
        for record in batch.records:
            if self.seen.contains(record.event_id):
                self.duplicates.inc()
                continue
            self.seen.put(record.event_id, True)
            problem = payload_problem(record.payload, record.event_id)
            if problem:
                self.dead_letters.inc()
                entry = dead_letter(record.payload, problem, "decode", shard=shard, sequence=record.sequence)
                by_table.setdefault(DEAD_LETTERS, []).append(entry)
            else:
                by_table.setdefault(str(record.values[TABLE_INDEX]), []).append(record.payload)
        self.next_sequence.update(batch.next_sequence)
        self.fault.count(len(batch.records))
        self.records_in.mark_event(len(batch.records))
        now_ms = int(time.time() * 1000)
        for record in batch.records:
            self.latency.update(max(now_ms - int(record.values[COMMIT_INDEX]), 0))
        self.lag_ms = max(now_ms - int(batch.records[-1].values[COMMIT_INDEX]), 0)
        for table, payloads in by_table.items():
            yield table, "\n".join(payloads)


class TableRouter(ProcessFunction):  # type: ignore[misc]
    """Sends each table's batch to that table's side output; unknown tables to the dead letters."""

    def __init__(self, tags: dict[str, OutputTag], dead_letters: OutputTag) -> None:
        self.tags = tags
        self.dead_letters = dead_letters

    def process_element(self, value: tuple[str, str], ctx: ProcessFunction.Context) -> Iterator[Any]:
        table, payloads = value
        tag = self.tags.get(table)
        if table == DEAD_LETTERS:
            yield self.dead_letters, payloads
        elif tag is None:
            reason = f"table {table} is not in source.tables"
            yield self.dead_letters, "\n".join(dead_letter(p, reason, "route") for p in payloads.split("\n"))
        else:
            yield tag, payloads


DEAD_LETTERS = "\x00dead-letters"
"""The pseudo-table of records that failed processing."""


def payload_problem(payload: str, event_id: str) -> str | None:
    """Why ``payload`` is not a usable change envelope, or None."""
    try:
        envelope = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        return f"payload is not JSON: {exc}"
    if not isinstance(envelope, dict) or not isinstance(envelope.get("source"), dict):
        return "payload is not a change envelope (no source)"
    if envelope.get("event_id") != event_id:
        return f"payload event_id {envelope.get('event_id')!r} differs from the record's {event_id!r}"
    if envelope.get("op") not in ("c", "u", "d", "r"):
        return f"unknown op {envelope.get('op')!r}"
    return None


def dead_letter(payload: str, error: str, stage: str, **where: Any) -> str:
    """One dead-letter line: the original payload, what went wrong, at which stage, and when (R2.7)."""
    log.warning("dead letter at %s: %s", stage, error, extra={"event": "record.dead_lettered", "fault": True})
    return orjson.dumps(
        {"error": error, "stage": stage, "time": datetime.now(UTC).isoformat(), **where, "payload": payload}
    ).decode()


class _FaultHook:
    """Fails the job once, after a number of records, when the test hook is set (see job.FAULT_ENV)."""

    def __init__(self, marker: Path | None, after: int) -> None:
        self.marker, self.after, self.seen = marker, after, 0

    @classmethod
    def from_env(cls) -> _FaultHook:
        spec = os.environ.get("OBFLOW_FLINK_FAIL_ONCE", "")
        if not spec:
            return cls(None, 0)
        marker, _, after = spec.rpartition(":")
        return cls(Path(marker), int(after))

    def count(self, records: int) -> None:
        if self.marker is None:
            return
        self.seen += records
        if self.seen >= self.after and not self.marker.exists():
            self.marker.write_text("failed once")
            raise RuntimeError(f"injected fault after {self.seen} records (test hook)")
