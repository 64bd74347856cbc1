"""The dead-letter queue: records that could not be processed, with the reason, kept and readable (R2.7).

Entries go to a DataHub TUPLE topic (``datahub.dead_letter_topic``, one shard, created on first use);
while DataHub cannot take them (after ``datahub.retry``), to JSON-lines files under
``output.dead_letter_path`` instead, so nothing is lost either way. ``obflow dlq read --config F``
prints both, one JSON object per line. Delivery is at least once: an entry may repeat after a crash,
and ``event_id`` plus ``location`` identify it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import orjson

from obflow.config import ObflowConfig
from obflow.log import Fault, log_fault

log = logging.getLogger("obflow.deadletter")

Stage = Literal["decode", "route", "map", "write"]

DEAD_LETTER_FIELDS = (
    ("time", "STRING"),
    ("stage", "STRING"),
    ("error", "STRING"),
    ("table_name", "STRING"),
    ("event_id", "STRING"),
    ("location", "STRING"),
    ("payload", "STRING"),
)


@dataclass(frozen=True)
class DeadLetter:
    """A record that failed: its original payload, what went wrong, at which stage, and when."""

    payload: str
    error: str
    stage: Stage
    table: str = ""
    event_id: str = ""
    location: dict[str, Any] = field(default_factory=dict)
    """Where the record was: shard and sequence, or the file it was read from."""
    time: str = field(default_factory=lambda: datetime.now(UTC).isoformat())

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def from_json(cls, line: bytes | str) -> DeadLetter:
        return cls(**orjson.loads(line))

    def values(self) -> list[str]:
        location = orjson.dumps(self.location).decode()
        return [self.time, self.stage, self.error, self.table, self.event_id, location, self.payload]

    @classmethod
    def from_values(cls, values: Sequence[Any]) -> DeadLetter:
        time_, stage, error, table, event_id, location, payload = (str(v) if v is not None else "" for v in values)
        stage_ = stage if stage in ("decode", "route", "map", "write") else "decode"
        return cls(payload, error, stage_, table, event_id, orjson.loads(location or "{}"), time_)  # type: ignore[arg-type]


class DeadLetterQueue:
    """Sends dead letters to the DataHub dead-letter topic, or to files when DataHub cannot take them."""

    def __init__(self, config: ObflowConfig) -> None:
        self.config = config
        self.files = Path(config.output.dead_letter_path)
        self._client: Any = None
        self._file_counter = 0

    def send(self, letters: Sequence[DeadLetter]) -> Literal["topic", "files", "none"]:
        """Store ``letters``; returns where they went."""
        if not letters:
            return "none"
        for letter in letters:
            log_fault(log, Fault.RECORD_DEAD_LETTERED, f"at {letter.stage}: {letter.error}", level=logging.WARNING)
        retry = self.config.datahub.retry
        for attempt in range(retry.attempts + 1):
            try:
                self._put(letters)
                return "topic"
            except Exception as exc:  # the SDK raises many kinds; any of them means: not stored
                log_fault(
                    log,
                    Fault.DATAHUB_UNREACHABLE,
                    f"dead-letter topic not writable: {exc}",
                    attempt=attempt + 1,
                    level=logging.WARNING,
                )
                self._client = None
                if attempt < retry.attempts:
                    time.sleep(retry.interval)
        self._write_file(letters)
        return "files"

    def _put(self, letters: Sequence[DeadLetter]) -> None:
        from datahub.models import TupleRecord

        if self._client is None:
            self._client = self._connect()
        schema = dead_letter_schema()
        records = []
        for letter in letters:
            record = TupleRecord(schema=schema, values=letter.values())
            record.shard_id = "0"
            records.append(record)
        result = self._client.put_records(self.config.datahub.project, self.config.datahub.dead_letter_topic, records)
        if result.failed_record_count:
            raise RuntimeError(f"{result.failed_record_count} of {len(records)} dead letters refused")

    def _connect(self) -> Any:
        from datahub.exceptions import ResourceExistException

        from obflow.datahub.client import make_client

        client = make_client(self.config.datahub)
        project, topic = self.config.datahub.project, self.config.datahub.dead_letter_topic
        with contextlib.suppress(ResourceExistException):
            client.create_project(project, "obflow change data")
        with contextlib.suppress(ResourceExistException):
            client.create_tuple_topic(project, topic, 1, 7, dead_letter_schema(), "obflow dead letters")
        client.wait_shards_ready(project, topic)
        return client

    def _write_file(self, letters: Sequence[DeadLetter]) -> Path:
        self.files.mkdir(parents=True, exist_ok=True)
        self._file_counter += 1
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        target = self.files / f"dead-letters-{stamp}-{os.getpid()}-{self._file_counter}.jsonl"
        tmp = target.with_name(f".{target.name}.tmp")
        with tmp.open("wb") as out:
            out.write(b"".join(letter.to_json() + b"\n" for letter in letters))
            out.flush()
            os.fsync(out.fileno())
        tmp.replace(target)
        log_fault(log, Fault.FILE_WRITE_FAILED, f"{len(letters)} dead letters kept in {target} (DataHub unreachable)")
        return target

    def read(self) -> Iterator[DeadLetter]:
        """Every dead letter: the topic's (oldest first), then the files' (when any)."""
        yield from self._read_topic()
        yield from read_dead_letter_files(self.files)

    def _read_topic(self) -> Iterator[DeadLetter]:
        from datahub.exceptions import ResourceNotFoundException
        from datahub.models import CursorType

        try:
            client = self._client or self._connect()
        except Exception as exc:
            log_fault(log, Fault.DATAHUB_UNREACHABLE, f"dead-letter topic not readable: {exc}")
            return
        project, topic = self.config.datahub.project, self.config.datahub.dead_letter_topic
        schema = dead_letter_schema()
        try:
            shards = client.list_shard(project, topic).shards
        except ResourceNotFoundException:
            return
        for shard in shards:
            cursor = client.get_cursor(project, topic, shard.shard_id, CursorType.OLDEST).cursor
            while True:
                result = client.get_tuple_records(project, topic, shard.shard_id, schema, cursor, 1000)
                for record in result.records:
                    yield DeadLetter.from_values(record.values)
                if not result.records:
                    break
                cursor = result.next_cursor


def read_dead_letter_files(folder: Path) -> Iterator[DeadLetter]:
    if not folder.is_dir():
        return
    for file in sorted(folder.rglob("*.jsonl")):
        if not file.name.startswith("."):
            for line in file.read_bytes().splitlines():
                if line.strip():
                    yield DeadLetter.from_json(line)


def dead_letter_schema() -> Any:
    from datahub.models import FieldType, RecordSchema

    return RecordSchema.from_lists(
        [name for name, _ in DEAD_LETTER_FIELDS], [FieldType(kind.lower()) for _, kind in DEAD_LETTER_FIELDS]
    )
