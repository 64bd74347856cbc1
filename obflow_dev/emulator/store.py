"""The emulator's durable state: projects, topics, shards of records, subscriptions and offsets.

Layout under the data directory:

* ``meta.json`` — projects, topics (type, schema, shard count), subscriptions and their offsets.
  Rewritten atomically (write to a temporary file, fsync, rename) on every change.
* ``<project>/<topic>/<shard>.log`` — one JSON line per record, appended in sequence order:
  ``[system_time_ms, data, attributes]`` where ``data`` is the list of field texts (TUPLE) or the
  base64 of the bytes (BLOB). A record's sequence is its line number, from 0.

Durability: a put is acknowledged after its lines are written to the operating system (flushed),
so records survive a crash of the emulator process (``kill -9``); with ``fsync=True`` they are also
fsynced before the acknowledgement and survive a crash of the machine. A torn last line (a crash
mid-write) is cut off at start-up.
"""

from __future__ import annotations

import base64
import bisect
import os
import threading
import time
import uuid
import zlib
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from obflow.config import DATAHUB_NAME, DATAHUB_PROJECT_LENGTH, DATAHUB_TOPIC_LENGTH

MAX_SHARDS = 256
INT_BOUNDS = {"tinyint": 8, "smallint": 16, "integer": 32, "bigint": 64}
FIELD_TYPES = {
    "tinyint",
    "smallint",
    "integer",
    "bigint",
    "string",
    "boolean",
    "timestamp",
    "float",
    "double",
    "decimal",
}


class DataHubError(Exception):
    """An error the emulator answers with DataHub's error code and HTTP status."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def not_found(code: str, what: str) -> DataHubError:
    return DataHubError(404, code, f"{what} does not exist")


def invalid(message: str) -> DataHubError:
    return DataHubError(400, "InvalidParameter", message)


# a name becomes a folder under the data directory: checked before it touches a path
def check_name(kind: str, name: Any, length: tuple[int, int]) -> None:
    """DataHub's InvalidParameter unless ``name`` is a valid DataHub project or topic name."""
    low, high = length
    if not isinstance(name, str) or not DATAHUB_NAME.fullmatch(name) or not low <= len(name) <= high:
        raise invalid(
            f"{kind} name {name!r} is invalid: it must start with a letter and hold only letters, digits and _, "
            f"{low} to {high} characters"
        )


@dataclass
class StoredRecord:
    system_time: int
    data: list[str | None] | bytes
    attributes: dict[str, str] | None


@dataclass
class Shard:
    shard_id: str
    path: Path
    system_times: list[int] = field(default_factory=list)
    lines: list[bytes] = field(default_factory=list)
    json_records: list[bytes] = field(default_factory=list)
    """Each record as a GetRecords JSON response carries it, encoded once when it is stored: serving a
    read is then a join of these, not a decode and an encode of every record (the benchmarks read
    hundreds of thousands of records a second through the emulator)."""
    file: BinaryIO | None = None
    expired: int = 0
    """Records before this sequence have expired (:meth:`Store.expire`): no longer held or readable."""

    @property
    def end(self) -> int:
        """The sequence the next record will get."""
        return len(self.lines)

    def record(self, sequence: int, blob: bool) -> StoredRecord:
        system_time, data, attributes = orjson.loads(self.lines[sequence])
        return StoredRecord(system_time, base64.b64decode(data) if blob else data, attributes)


@dataclass
class Topic:
    name: str
    record_type: str  # "TUPLE" or "BLOB"
    schema: list[dict[str, Any]] | None
    shard_count: int
    lifecycle: int
    comment: str
    create_time: int
    modify_time: int
    shards: list[Shard] = field(default_factory=list)
    checks: list[FieldCheck] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.checks = field_checks(self.schema) if self.schema else []

    def meta(self) -> dict[str, Any]:
        return {
            "RecordType": self.record_type,
            "RecordSchema": self.schema,
            "ShardCount": self.shard_count,
            "Lifecycle": self.lifecycle,
            "Comment": self.comment,
            "CreateTime": self.create_time,
            "LastModifyTime": self.modify_time,
        }

    def shard(self, shard_id: str) -> Shard:
        if shard_id.isdigit() and int(shard_id) < len(self.shards):
            return self.shards[int(shard_id)]
        raise not_found("NoSuchShard", f"shard {shard_id!r} of topic {self.name!r}")


@dataclass
class Offset:
    sequence: int = -1
    timestamp: int = -1
    version: int = 0
    session_id: int | None = None


@dataclass
class Subscription:
    sub_id: str
    topic: str
    comment: str
    state: int
    create_time: int
    modify_time: int
    offsets: dict[str, Offset] = field(default_factory=dict)


@dataclass
class Project:
    name: str
    comment: str
    create_time: int
    modify_time: int
    topics: dict[str, Topic] = field(default_factory=dict)
    subscriptions: dict[str, Subscription] = field(default_factory=dict)


@dataclass(frozen=True)
class FieldCheck:
    index: int
    name: str
    kind: str
    notnull: bool


def field_checks(schema: list[dict[str, Any]]) -> list[FieldCheck]:
    """The checks a record of ``schema`` needs: STRING fields that allow NULL need none."""
    checks = []
    for index, spec in enumerate(schema):
        kind, notnull = spec["type"].lower(), bool(spec.get("notnull"))
        if kind != "string" or notnull:
            checks.append(FieldCheck(index, spec["name"], kind, notnull))
    return checks


def validate_values(values: list[str | None], width: int, checks: list[FieldCheck]) -> str | None:
    """Why ``values`` (field texts) do not fit the schema, or None when they do."""
    if len(values) != width:
        return f"record has {len(values)} values, the topic schema has {width} fields"
    for check in checks:
        value, name, kind = values[check.index], check.name, check.kind
        if value is None:
            if check.notnull:
                return f"field {name!r} is not nullable"
            continue
        try:
            if kind in INT_BOUNDS:
                bits = INT_BOUNDS[kind]
                if not -(2 ** (bits - 1)) <= int(value) < 2 ** (bits - 1):
                    return f"field {name!r}: {value!r} out of range for {kind}"
            elif kind == "timestamp":
                int(value)
            elif kind in ("float", "double"):
                float(value)
            elif kind == "decimal":
                Decimal(value)
            elif kind == "boolean" and value.lower() not in ("true", "false"):
                return f"field {name!r}: {value!r} is not a boolean"
        except (ValueError, InvalidOperation):
            return f"field {name!r}: {value!r} is not a valid {kind}"
    return None


class Store:
    """All emulator state, safe to use from many request threads."""

    def __init__(self, data_dir: str | Path, fsync: bool = False) -> None:
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.fsync = fsync
        self.lock = threading.RLock()
        self.projects: dict[str, Project] = {}
        self._next_session = 1
        self._load()

    # ---- projects -------------------------------------------------------------------------

    def project(self, name: str) -> Project:
        try:
            return self.projects[name]
        except KeyError:
            raise not_found("NoSuchProject", f"project {name!r}") from None

    def create_project(self, name: str, comment: str) -> None:
        check_name("project", name, DATAHUB_PROJECT_LENGTH)
        with self.lock:
            if name in self.projects:
                raise DataHubError(400, "ProjectAlreadyExist", f"project {name!r} already exists")
            now = _now_s()
            self.projects[name] = Project(name, comment, now, now)
            self._save_meta()

    def update_project(self, name: str, comment: str) -> None:
        with self.lock:
            project = self.project(name)
            project.comment, project.modify_time = comment, _now_s()
            self._save_meta()

    def delete_project(self, name: str) -> None:
        with self.lock:
            project = self.project(name)
            if project.topics:
                raise DataHubError(400, "InvalidOperation", f"project {name!r} still has topics")
            del self.projects[name]
            self._save_meta()

    # ---- topics ---------------------------------------------------------------------------

    def topic(self, project: str, name: str) -> Topic:
        try:
            return self.project(project).topics[name]
        except KeyError:
            raise not_found("NoSuchTopic", f"topic {project}/{name}") from None

    def create_topic(
        self,
        project_name: str,
        name: str,
        record_type: str,
        schema: list[dict[str, Any]] | None,
        shard_count: int,
        lifecycle: int,
        comment: str,
    ) -> None:
        check_name("topic", name, DATAHUB_TOPIC_LENGTH)
        if record_type not in ("TUPLE", "BLOB"):
            raise invalid(f"RecordType must be TUPLE or BLOB, not {record_type!r}")
        if not isinstance(shard_count, int) or not 1 <= shard_count <= MAX_SHARDS:
            raise invalid(f"ShardCount must be between 1 and {MAX_SHARDS}")
        if record_type == "TUPLE":
            if not schema:
                raise DataHubError(400, "InvalidSchema", "a TUPLE topic needs a RecordSchema with fields")
            bad = [f for f in schema if not isinstance(f, dict) or str(f.get("type", "")).lower() not in FIELD_TYPES]
            if bad:
                raise DataHubError(400, "InvalidSchema", f"unknown field type in {bad[0]!r}")
        with self.lock:
            project = self.project(project_name)
            if name in project.topics:
                raise DataHubError(400, "TopicAlreadyExist", f"topic {project_name}/{name} already exists")
            now = _now_s()
            topic = Topic(name, record_type, schema, shard_count, lifecycle, comment, now, now)
            self._open_shards(project_name, topic)
            project.topics[name] = topic
            self._save_meta()

    def update_topic(self, project: str, name: str, lifecycle: int, comment: str) -> None:
        with self.lock:
            topic = self.topic(project, name)
            topic.lifecycle, topic.comment, topic.modify_time = lifecycle, comment, _now_s()
            self._save_meta()

    def delete_topic(self, project_name: str, name: str) -> None:
        with self.lock:
            topic = self.topic(project_name, name)
            for shard in topic.shards:
                if shard.file:
                    shard.file.close()
                shard.path.unlink(missing_ok=True)
            project = self.project(project_name)
            del project.topics[name]
            for sub_id in [s for s, sub in project.subscriptions.items() if sub.topic == name]:
                del project.subscriptions[sub_id]
            self._save_meta()

    def append_field(self, project: str, name: str, field_name: str, field_type: str) -> None:
        with self.lock:
            topic = self.topic(project, name)
            if topic.schema is None:
                raise DataHubError(400, "InvalidOperation", "a BLOB topic has no schema")
            if field_type.lower() not in FIELD_TYPES:
                raise DataHubError(400, "InvalidSchema", f"unknown field type {field_type!r}")
            topic.schema.append({"name": field_name, "type": field_type.lower(), "comment": ""})
            topic.checks = field_checks(topic.schema)
            self._save_meta()

    # ---- records --------------------------------------------------------------------------

    def append(self, shard: Shard, records: list[StoredRecord]) -> list[int]:
        """Append ``records`` durably (see module doc) and return their sequences."""
        with self.lock:
            return self.append_encoded(shard, encode(shard, shard.end, records))

    def append_encoded(self, shard: Shard, records: EncodedRecords) -> list[int]:
        """Append records encoded by :func:`encode` for the shard's end (a benchmark encodes a large
        batch before it times the job reading it: the append itself is then a write)."""
        with self.lock:
            assert shard.file is not None
            first = shard.end
            if records.first != first:
                raise ValueError(f"records encoded for sequence {records.first}, the shard ends at {first}")
            shard.file.write(b"".join(line + b"\n" for line in records.lines))
            shard.file.flush()
            if self.fsync:
                os.fsync(shard.file.fileno())
            shard.lines.extend(records.lines)
            shard.json_records.extend(records.json_records)
            shard.system_times.extend(records.system_times)
            return list(range(first, shard.end))

    def expire(self, shard: Shard, before: int) -> None:
        """The records before sequence ``before`` expire, as DataHub's lifecycle expires old records:
        their memory is freed and reading them is an error. (In memory only: a restarted emulator holds
        them again from its files. A long benchmark calls it for what its reader has committed.)"""
        with self.lock:
            before = min(before, shard.end)
            for sequence in range(shard.expired, before):
                shard.lines[sequence] = shard.json_records[sequence] = b""
            shard.expired = max(shard.expired, before)

    @staticmethod
    def first_at_or_after(shard: Shard, system_time: int) -> int:
        return max(bisect.bisect_left(shard.system_times, system_time), shard.expired)

    # ---- subscriptions --------------------------------------------------------------------

    def subscription(self, project: str, topic: str, sub_id: str) -> Subscription:
        sub = self.project(project).subscriptions.get(sub_id)
        if sub is None or sub.topic != topic:
            raise not_found("NoSuchSubscription", f"subscription {sub_id!r} of topic {project}/{topic}")
        return sub

    def create_subscription(self, project: str, topic: str, comment: str) -> str:
        with self.lock:
            self.topic(project, topic)
            sub_id = f"{int(time.time() * 1000)}{uuid.uuid4().hex[:6]}"
            now = _now_s()
            self.project(project).subscriptions[sub_id] = Subscription(sub_id, topic, comment, 1, now, now)
            self._save_meta()
            return sub_id

    def delete_subscription(self, project: str, topic: str, sub_id: str) -> None:
        with self.lock:
            self.subscription(project, topic, sub_id)
            del self.project(project).subscriptions[sub_id]
            self._save_meta()

    def save(self) -> None:
        with self.lock:
            self._save_meta()

    def new_session(self) -> int:
        with self.lock:
            session = self._next_session
            self._next_session += 1
            return session

    def close(self) -> None:
        with self.lock:
            for project in self.projects.values():
                for topic in project.topics.values():
                    for shard in topic.shards:
                        if shard.file:
                            shard.file.close()
                            shard.file = None

    # ---- persistence ----------------------------------------------------------------------

    def _open_shards(self, project: str, topic: Topic) -> None:
        folder = self.data_dir / project / topic.name
        folder.mkdir(parents=True, exist_ok=True)
        topic.shards = [Shard(str(i), folder / f"{i}.log") for i in range(topic.shard_count)]
        for shard in topic.shards:
            _load_shard(shard)
            shard.file = shard.path.open("ab")

    def _save_meta(self) -> None:
        meta = {
            "next_session": self._next_session,
            "projects": {
                name: {
                    "comment": p.comment,
                    "create_time": p.create_time,
                    "modify_time": p.modify_time,
                    "topics": {t.name: t.meta() for t in p.topics.values()},
                    "subscriptions": {
                        s.sub_id: {
                            "topic": s.topic,
                            "comment": s.comment,
                            "state": s.state,
                            "create_time": s.create_time,
                            "modify_time": s.modify_time,
                            "offsets": {k: vars(v) for k, v in s.offsets.items()},
                        }
                        for s in p.subscriptions.values()
                    },
                }
                for name, p in self.projects.items()
            },
        }
        tmp = self.data_dir / "meta.json.tmp"
        with tmp.open("wb") as out:
            out.write(orjson.dumps(meta, option=orjson.OPT_INDENT_2))
            out.flush()
            os.fsync(out.fileno())
        tmp.replace(self.data_dir / "meta.json")

    def _load(self) -> None:
        path = self.data_dir / "meta.json"
        if not path.exists():
            return
        meta = orjson.loads(path.read_bytes())
        self._next_session = meta.get("next_session", 1)
        for name, p in meta["projects"].items():
            project = Project(name, p["comment"], p["create_time"], p["modify_time"])
            for topic_name, t in p["topics"].items():
                topic = Topic(
                    topic_name,
                    t["RecordType"],
                    t["RecordSchema"],
                    t["ShardCount"],
                    t["Lifecycle"],
                    t["Comment"],
                    t["CreateTime"],
                    t["LastModifyTime"],
                )
                self._open_shards(name, topic)
                project.topics[topic_name] = topic
            for sub_id, s in p["subscriptions"].items():
                offsets = {k: Offset(**v) for k, v in s["offsets"].items()}
                project.subscriptions[sub_id] = Subscription(
                    sub_id, s["topic"], s["comment"], s["state"], s["create_time"], s["modify_time"], offsets
                )
            self.projects[name] = project


def _load_shard(shard: Shard) -> None:
    if not shard.path.exists():
        return
    raw = shard.path.read_bytes()
    good_until = 0
    for line in raw.split(b"\n"):
        end = good_until + len(line) + 1
        if end > len(raw):  # last piece without a newline: torn write
            break
        try:
            system_time, data, attributes = orjson.loads(line)
        except (orjson.JSONDecodeError, ValueError, TypeError):
            break
        shard.json_records.append(json_record(shard, len(shard.lines), system_time, data, attributes))
        shard.lines.append(line)
        shard.system_times.append(system_time)
        good_until = end
    if good_until < len(raw):
        with shard.path.open("r+b") as file:
            file.truncate(good_until)


def cursor_text(shard: Shard, sequence: int) -> str:
    """The cursor of ``sequence`` in ``shard``: the sequence and a check, as 32 hex digits."""
    check = zlib.crc32(f"{shard.path}:{sequence}".encode()) & 0xFFFFFFFF
    return f"{sequence:016x}{check:08x}{0:08x}"


@dataclass(frozen=True)
class EncodedRecords:
    """Records as a shard stores them from sequence ``first`` on: lines of its file, GetRecords' JSON."""

    first: int
    lines: list[bytes]
    json_records: list[bytes]
    system_times: list[int]


def encode(shard: Shard, first: int, records: list[StoredRecord]) -> EncodedRecords:
    lines, answers = [], []
    for sequence, record in enumerate(records, first):
        data = base64.b64encode(record.data).decode() if isinstance(record.data, bytes) else record.data
        lines.append(orjson.dumps([record.system_time, data, record.attributes]))
        answers.append(json_record(shard, sequence, record.system_time, data, record.attributes))
    return EncodedRecords(first, lines, answers, [r.system_time for r in records])


def json_record(
    shard: Shard, sequence: int, system_time: int, data: list[str | None] | str, attributes: dict[str, str] | None
) -> bytes:
    """The record at ``sequence`` as GetRecords' JSON lists it (``Data``: the TUPLE values, or a BLOB's
    base64 text, as stored)."""
    record = {
        "Sequence": sequence,
        "SystemTime": system_time,
        "Cursor": cursor_text(shard, sequence),
        "NextCursor": cursor_text(shard, sequence + 1),
        "Data": data,
        **({"Attributes": attributes} if attributes else {}),
    }
    return orjson.dumps(record)


def _now_s() -> int:
    return int(time.time())
