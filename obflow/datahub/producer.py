"""Ships change envelopes to a DataHub change topic: per-row order, bounded retries, nothing dropped.

Guarantees, given ``send(events)`` with events in commit order:

* **Routing (R9.4).** A change goes to shard ``hash(table, primary key) mod shards``: every change
  to one row lands in one shard.
* **Order within a row.** DataHub reports failures per record, so a failed record could be overtaken
  by its successor and stored after it. A put request therefore never carries two changes of the same
  row; a row changed several times in one batch goes out in successive waves, each sent only after the
  previous one was fully accepted.
* **Retries (R1.5).** Failed records — and only those — are sent again, at most ``retry.attempts``
  times, ``retry.interval`` apart. A whole failed request (HTTP error, connection refused) counts as
  every record in it failing.
* **Concurrency.** The requests of one wave go out in parallel (``concurrency`` at a time): a wave
  holds at most one change per row, so nothing orders them.
* **Nothing dropped.** When retries run out :class:`DeliveryError` is raised; events after the
  failure are not sent. The caller must not advance its source position past what ``send`` returned.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from datahub import DataHub
from datahub.exceptions import DatahubException
from datahub.models import RecordSchema, TupleRecord
from prometheus_client import Counter, Histogram
from requests.exceptions import RequestException

from obflow.config import RetryConfig
from obflow.datahub.client import change_topic_schema
from obflow.events import ChangeEvent
from obflow.log import Fault, log_fault

log = logging.getLogger("obflow.datahub.producer")

RECORDS_SENT = Counter("obflow_datahub_records_sent", "Records accepted by DataHub", ["topic"])
BYTES_SENT = Counter("obflow_datahub_bytes_sent", "Payload bytes accepted by DataHub", ["topic"])
RETRIES = Counter("obflow_datahub_put_retries", "Put attempts that resent failed records", ["topic"])
FAILURES = Counter("obflow_datahub_put_failures", "Records given up on after all retries", ["topic"])
BATCH_LATENCY = Histogram(
    "obflow_datahub_batch_latency_seconds",
    "Time for a batch to be fully accepted, retries included",
    ["topic"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


def shard_index(qualified_table: str, key_json: str, shard_count: int) -> int:
    """Stable shard of a row: the same table and primary key always give the same shard."""
    digest = hashlib.blake2b(f"{qualified_table}\x1f{key_json}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % shard_count


class DeliveryError(Exception):
    """DataHub did not accept every event within the retry budget.

    ``delivered`` events (a prefix of each row's changes, in order) were accepted; the rest were not.
    """

    def __init__(self, message: str, delivered: int, undelivered: int) -> None:
        super().__init__(message)
        self.delivered = delivered
        self.undelivered = undelivered


def _tuple_record(schema: RecordSchema, values: list[Any]) -> TupleRecord:
    """A TupleRecord without the SDK's per-field re-validation.

    The values come from a validated :class:`ChangeEvent` and match the change-topic schema by
    construction (strings and ints); the SDK's check costs more than building the rest of the request.
    tests/datahub/test_producer.py proves the request bytes equal those of a validated record.
    """
    record = TupleRecord(schema=schema)
    record._values = list(values)
    return record


@dataclass
class _Outcome:
    records: int = 0
    requests: int = 0
    retries: int = 0
    error: str | None = None


@dataclass
class SendReport:
    records: int
    requests: int
    retries: int
    seconds: float


class Producer:
    """Sends envelopes to ``project/topic`` through the SDK ``client``."""

    def __init__(
        self,
        client: DataHub,
        project: str,
        topic: str,
        retry: RetryConfig,
        batch_size: int = 500,
        sleep: Callable[[float], None] = time.sleep,
        concurrency: int = 4,
    ) -> None:
        self.client = client
        self.project = project
        self.topic = topic
        self.retry = retry
        self.batch_size = batch_size
        self._sleep = sleep
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="datahub-put")
        self._schema: RecordSchema = change_topic_schema()
        self.shard_ids: list[str] = [str(s.shard_id) for s in client.list_shard(project, topic).shards]
        if not self.shard_ids:
            raise ValueError(f"topic {project}/{topic} has no shards")

    def shard_for(self, event: ChangeEvent) -> str:
        return self.shard_ids[shard_index(event.source.qualified_table, event.key_json, len(self.shard_ids))]

    def send(self, events: Sequence[ChangeEvent]) -> SendReport:
        """Deliver ``events`` (in commit order) or raise :class:`DeliveryError`; see the module doc."""
        started = time.perf_counter()
        report = SendReport(0, 0, 0, 0.0)
        for wave in self._waves(events):
            chunks = [wave[start : start + self.batch_size] for start in range(0, len(wave), self.batch_size)]
            outcomes = list(self._pool.map(self._deliver, chunks))
            for outcome in outcomes:
                report.records += outcome.records
                report.requests += outcome.requests
                report.retries += outcome.retries
            failed = [o for o in outcomes if o.error is not None]
            if failed:
                raise DeliveryError(str(failed[0].error), report.records, len(events) - report.records)
        report.seconds = time.perf_counter() - started
        return report

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def _waves(self, events: Sequence[ChangeEvent]) -> list[list[TupleRecord]]:
        """Records grouped so that no wave holds two changes of one row, order kept per row."""
        waves: list[list[TupleRecord]] = []
        seen: dict[tuple[str, str], int] = {}
        for event in events:
            row = (event.source.qualified_table, event.key_json)
            wave = seen.get(row, -1) + 1
            seen[row] = wave
            if wave == len(waves):
                waves.append([])
            record = _tuple_record(self._schema, event.to_datahub_values())
            record.shard_id = self.shard_for(event)
            waves[wave].append(record)
        return waves

    def _deliver(self, batch: list[TupleRecord]) -> _Outcome:
        report = _Outcome()
        started = time.perf_counter()
        pending = batch
        for attempt in range(self.retry.attempts + 1):
            if attempt:
                report.retries += 1
                RETRIES.labels(self.topic).inc()
                self._sleep(self.retry.interval)
            report.requests += 1
            failed, reason = self._put(pending)
            accepted = len(pending) - len(failed)
            report.records += accepted
            RECORDS_SENT.labels(self.topic).inc(accepted)
            if not failed:
                BATCH_LATENCY.labels(self.topic).observe(time.perf_counter() - started)
                return report
            log_fault(
                log,
                Fault.DATAHUB_PUT_FAILED,
                f"DataHub rejected {len(failed)} of {len(pending)} records: {reason}",
                topic=self.topic,
                attempt=attempt + 1,
                failed=len(failed),
            )
            pending = failed
        FAILURES.labels(self.topic).inc(len(pending))
        message = (
            f"DataHub did not accept {len(pending)} records after {self.retry.attempts} retries "
            f"{self.retry.interval:g}s apart; the source position must not advance"
        )
        log_fault(log, Fault.DATAHUB_RETRIES_EXHAUSTED, message, level=logging.ERROR, topic=self.topic)
        report.error = message
        return report

    def _put(self, records: list[TupleRecord]) -> tuple[list[TupleRecord], str]:
        """The records DataHub did not accept, and why."""
        try:
            result = self.client.put_records(self.project, self.topic, records)
        except (DatahubException, RequestException, OSError) as exc:
            return records, f"{type(exc).__name__}: {exc}"
        failed_indexes = {f.index for f in result.failed_records} if result.failed_record_count else set()
        accepted = (r for i, r in enumerate(records) if i not in failed_indexes)
        BYTES_SENT.labels(self.topic).inc(sum(len(str(r.values[-1])) for r in accepted))
        if not failed_indexes:
            return [], ""
        first = result.failed_records[0]
        return [records[i] for i in sorted(failed_indexes)], f"{first.error_code}: {first.error_message}"
