"""Reads change events back from a DataHub shard through the SDK: cursor from a stored sequence,
bounded batches, events as models. For tools and tests (``obflow dlq read``, the capture tests); the
Flink job reads into Arrow instead (flink_job.reading).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson
from datahub import DataHub
from datahub.exceptions import InvalidCursorException, SeekOutOfRangeException
from datahub.models import CursorType

from obflow.datahub.client import change_topic_schema
from obflow.events import EVENT_ID_INDEX, PAYLOAD_INDEX, ChangeEvent


@dataclass(frozen=True)
class FetchedRecord:
    sequence: int
    system_time: int
    values: tuple[Any, ...]

    @property
    def event_id(self) -> str:
        return str(self.values[EVENT_ID_INDEX])

    @property
    def payload(self) -> str:
        return str(self.values[PAYLOAD_INDEX])


@dataclass(frozen=True)
class Batch:
    shard_id: str
    records: list[FetchedRecord]
    next_sequence: int
    """The sequence to resume from after this batch (store it in checkpointed state)."""


def open_cursor(client: DataHub, project: str, topic: str, shard_id: str, sequence: int) -> tuple[str, int]:
    """A cursor at ``sequence`` of the shard, and the sequence it is at: the oldest record the shard
    still has when the records before ``sequence`` expired (or the shard is shorter)."""
    try:
        result = client.get_cursor(project, topic, shard_id, CursorType.SEQUENCE, sequence)
    except SeekOutOfRangeException:
        result = client.get_cursor(project, topic, shard_id, CursorType.OLDEST)
    return str(result.cursor), max(sequence, int(result.sequence))


class ShardReader:
    """Sequential reader of one shard of a change topic."""

    def __init__(self, client: DataHub, project: str, topic: str, shard_id: str, next_sequence: int = 0) -> None:
        self.client = client
        self.project = project
        self.topic = topic
        self.shard_id = shard_id
        self.next_sequence = next_sequence
        self._schema = change_topic_schema()
        self._cursor: str | None = None

    def _open(self) -> str:
        at = self.next_sequence
        cursor, self.next_sequence = open_cursor(self.client, self.project, self.topic, self.shard_id, at)
        return cursor

    def fetch(self, limit: int = 1000) -> Batch:
        """Up to ``limit`` records from ``next_sequence`` on; an empty batch when none arrived yet."""
        if self._cursor is None:
            self._cursor = self._open()
        try:
            result = self.client.get_tuple_records(
                self.project, self.topic, self.shard_id, self._schema, self._cursor, limit
            )
        except InvalidCursorException:
            self._cursor = self._open()
            result = self.client.get_tuple_records(
                self.project, self.topic, self.shard_id, self._schema, self._cursor, limit
            )
        records = [FetchedRecord(int(r.sequence), int(r.system_time), tuple(r.values)) for r in result.records]
        if records:
            self.next_sequence = records[-1].sequence + 1
        self._cursor = str(result.next_cursor)
        return Batch(self.shard_id, records, self.next_sequence)

    def read_all(self, limit: int = 1000) -> Iterator[Batch]:
        """Batches until the shard has nothing more right now."""
        while True:
            batch = self.fetch(limit)
            if not batch.records:
                return
            yield batch


def decode_payloads(records: list[FetchedRecord]) -> list[dict[str, Any]]:
    """The envelopes of ``records`` as plain dicts: the fast path (no model validation)."""
    return [orjson.loads(r.payload) for r in records]


def decode_events(records: list[FetchedRecord]) -> list[ChangeEvent]:
    """The envelopes of ``records`` as validated :class:`ChangeEvent` models."""
    return [ChangeEvent.from_json(r.payload) for r in records]
