"""Putting records into a shard and getting them out: routing by shard, hash or partition key, the values'
checks, cursors."""

from __future__ import annotations

import base64
import hashlib
import random
import time
from typing import TYPE_CHECKING, Any

import orjson
from cprotobuf.internal import encode_data
from datahub.proto.datahub_record_proto_pb import (
    GetRecordsRequest,
    GetRecordsResponse,
    PutRecordsRequest,
    PutRecordsResponse,
)

from obflow_dev.emulator.faults import PutLogEntry
from obflow_dev.emulator.request import Request, pb_frame
from obflow_dev.emulator.store import (
    DataHubError,
    Shard,
    Store,
    StoredRecord,
    Topic,
    cursor_text,
    invalid,
    validate_values,
)

if TYPE_CHECKING:
    from obflow_dev.emulator.server import DataHubEmulator

MAX_GET_LIMIT = 1000
MAX_RESPONSE_BYTES = 4 * 1024 * 1024
HASH_SPACE = 1 << 128


def _route_record(topic: Topic, shard_id: str | None, hash_key: str | None, partition_key: str | None) -> Shard:
    if shard_id:
        return topic.shard(shard_id)
    if hash_key:
        try:
            point = int(hash_key, 16)
        except ValueError:
            raise invalid(f"HashKey {hash_key!r} is not hexadecimal") from None
    elif partition_key:
        point = int.from_bytes(hashlib.md5(partition_key.encode()).digest(), "big")
    else:
        point = random.getrandbits(128)
    return topic.shards[min(point * topic.shard_count // HASH_SPACE, topic.shard_count - 1)]


def put_records(emulator: DataHubEmulator, req: Request, topic: Topic, fixed_shard: Shard | None) -> tuple[int, Any]:
    faults = emulator.faults
    incoming: list[tuple[Shard, StoredRecord]] = []
    failures: list[tuple[int, str, str]] = []
    now_ms = int(time.time() * 1000)
    blob = topic.record_type == "BLOB"
    if req.pb:
        message = PutRecordsRequest()
        try:
            message.ParseFromString(req.pb_message())
        except Exception as exc:  # cprotobuf raises plain exceptions on malformed input
            raise invalid(f"malformed protobuf PutRecordsRequest: {exc}") from None
        entries: list[tuple[Any, Any, Any, Any, Any]] = [
            (
                e.shard_id,
                e.hash_key,
                e.partition_key,
                [d.__dict__.get("value") for d in e.data.data] if e.data else [],
                {a.key: a.value for a in e.attributes.attributes} if e.attributes else None,
            )
            for e in message.records
        ]
    else:
        records = req.json().get("Records")
        if not isinstance(records, list):
            raise invalid("Records must be a list")
        entries = []
        for r in records:
            if not isinstance(r, dict):
                raise DataHubError(400, "MalformedRecord", "each record must be a JSON object")
            entries.append(
                (
                    r.get("ShardId"),
                    r.get("HashKey"),
                    r.get("PartitionKey"),
                    r.get("Data"),
                    r.get("Attributes"),
                )
            )
    if not entries:
        raise invalid("no records to put")
    if faults.fail_next_puts > 0 or faults.rng.random() < faults.put_request_failure_rate:
        faults.fail_next_puts = max(faults.fail_next_puts - 1, 0)
        emulator.stats.puts.append(PutLogEntry(time.time(), [], len(entries), len(entries), True))
        raise DataHubError(500, "InternalServerError", "injected fault: the whole put request failed")
    for index, (shard_id, hash_key, partition_key, data, attributes) in enumerate(entries):
        try:
            _check_record_keys(shard_id, hash_key, partition_key, attributes)
            shard = fixed_shard or _route_record(topic, shard_id, hash_key, partition_key)
            values = _decode_values(data, blob, req.pb, topic)
        except DataHubError as exc:
            failures.append((index, exc.code, exc.message))
            continue
        if faults.reject_record(values):
            failures.append((index, "LimitExceeded", "injected fault: record rejected, retry it"))
            continue
        incoming.append((shard, StoredRecord(now_ms, values, attributes or None)))
    by_shard: dict[str, list[StoredRecord]] = {}
    shards: dict[str, Shard] = {}
    for shard, record in incoming:
        by_shard.setdefault(shard.shard_id, []).append(record)
        shards[shard.shard_id] = shard
    for shard_id, records in by_shard.items():
        emulator.store.append(shards[shard_id], records)
    emulator.stats.records_stored += len(incoming)
    emulator.stats.puts.append(PutLogEntry(time.time(), sorted(by_shard), len(entries), len(failures), False))
    if fixed_shard is not None:
        if failures:
            raise DataHubError(400, failures[0][1], failures[0][2])
        return 200, None
    if req.pb:
        response = {
            "failed_count": len(failures),
            "failed_records": [{"index": i, "error_code": c, "error_message": m} for i, c, m in failures],
        }
        return 200, pb_frame(encode_data(PutRecordsResponse, response))
    return 200, {
        "FailedRecordCount": len(failures),
        "FailedRecords": [{"Index": i, "ErrorCode": c, "ErrorMessage": m} for i, c, m in failures],
    }


def _check_record_keys(shard_id: Any, hash_key: Any, partition_key: Any, attributes: Any) -> None:
    """A record's routing keys are texts (or absent), its attributes an object of texts; else MalformedRecord."""
    for name, value in (("ShardId", shard_id), ("HashKey", hash_key), ("PartitionKey", partition_key)):
        if value is not None and not isinstance(value, str):
            raise DataHubError(400, "MalformedRecord", f"record {name} must be text, not {value!r:.40}")
    if attributes is not None and not (
        isinstance(attributes, dict) and all(isinstance(v, str) for v in attributes.values())
    ):
        raise DataHubError(
            400, "MalformedRecord", f"record Attributes must be an object of texts, not {attributes!r:.40}"
        )


def _decode_values(data: Any, blob: bool, pb: bool, topic: Topic) -> list[str | None] | bytes:
    if blob:
        if pb:
            if not data or data[0] is None:
                raise DataHubError(400, "MalformedRecord", "BLOB record without data")
            return bytes(data[0])
        if not isinstance(data, str):
            raise DataHubError(400, "MalformedRecord", "BLOB record Data must be a base64 string")
        try:
            return base64.b64decode(data, validate=True)
        except ValueError:
            raise DataHubError(400, "MalformedRecord", "BLOB record Data is not valid base64") from None
    if not isinstance(data, list):
        raise DataHubError(400, "MalformedRecord", "TUPLE record Data must be a list of field values")
    try:
        values = [None if v is None else (v.decode("utf-8") if isinstance(v, bytes) else str(v)) for v in data]
    except UnicodeDecodeError:
        raise DataHubError(400, "MalformedRecord", "TUPLE field value is not UTF-8") from None
    assert topic.schema is not None
    problem = validate_values(values, len(topic.schema), topic.checks)
    if problem:
        raise DataHubError(400, "MalformedRecord", problem)
    return values


def _parse_cursor(shard: Shard, cursor: Any) -> int:
    if not isinstance(cursor, str) or len(cursor) != 32:
        raise DataHubError(400, "InvalidCursor", "the cursor is malformed")
    try:
        sequence = int(cursor[:16], 16)
    except ValueError:
        raise DataHubError(400, "InvalidCursor", "the cursor is malformed") from None
    if cursor_text(shard, sequence) != cursor:
        raise DataHubError(400, "InvalidCursor", "the cursor does not belong to this shard")
    if sequence > shard.end:
        raise DataHubError(400, "InvalidCursor", "the cursor points past the end of the shard")
    if sequence < shard.expired:
        raise DataHubError(400, "InvalidCursor", f"the cursor's record has expired (oldest: {shard.expired})")
    return sequence


def open_cursor(store: Store, topic: Topic, shard: Shard, body: dict[str, Any]) -> dict[str, Any]:
    kind = body.get("Type")
    if kind == "OLDEST":
        sequence = shard.expired
    elif kind == "LATEST":
        sequence = max(shard.end - 1, 0)
    elif kind == "SYSTEM_TIME":
        at = body.get("SystemTime")
        if not isinstance(at, int) or at < 0:
            raise invalid("SystemTime must be a non-negative integer (ms)")
        if at > int(time.time() * 1000) + 1000:
            raise DataHubError(400, "SeekOutOfRange", f"SystemTime {at} is in the future")
        sequence = store.first_at_or_after(shard, at)
    elif kind == "SEQUENCE":
        requested = body.get("Sequence")
        if not isinstance(requested, int) or requested < 0:
            raise invalid("Sequence must be a non-negative integer")
        sequence = requested
        if sequence > shard.end:
            raise DataHubError(400, "SeekOutOfRange", f"sequence {sequence} is past the end ({shard.end})")
        if sequence < shard.expired:
            raise DataHubError(400, "SeekOutOfRange", f"sequence {sequence} has expired (oldest: {shard.expired})")
    else:
        raise invalid(f"cursor Type must be OLDEST, LATEST, SYSTEM_TIME or SEQUENCE, not {kind!r}")
    record_time = shard.system_times[sequence] if sequence < shard.end else int(time.time() * 1000)
    return {"Cursor": cursor_text(shard, sequence), "RecordTime": record_time, "Sequence": sequence}


def get_records(emulator: DataHubEmulator, req: Request, topic: Topic, shard: Shard) -> tuple[int, Any]:
    if req.pb:
        message = GetRecordsRequest()
        try:
            message.ParseFromString(req.pb_message())
        except Exception as exc:
            raise invalid(f"malformed protobuf GetRecordsRequest: {exc}") from None
        cursor, limit = message.cursor, message.limit
    else:
        body = req.json()
        cursor, limit = body.get("Cursor"), body.get("Limit", 1)
    if not isinstance(limit, int) or limit < 1:
        raise invalid("Limit must be a positive integer")
    start = _parse_cursor(shard, cursor)
    blob = topic.record_type == "BLOB"
    sequences: list[int] = []
    size = 0
    with emulator.store.lock:
        if start < shard.expired:  # expired since the cursor was checked
            raise DataHubError(400, "InvalidCursor", f"the cursor's record has expired (oldest: {shard.expired})")
        end = min(start + min(limit, MAX_GET_LIMIT), shard.end)
        for sequence in range(start, end):
            size += len(shard.lines[sequence])
            sequences.append(sequence)
            if size >= MAX_RESPONSE_BYTES:
                break
        fragments = shard.json_records[start : start + len(sequences)] if not req.pb else []
        stored = [shard.record(sequence, blob) for sequence in sequences] if req.pb else []
    emulator.stats.records_read += len(sequences)
    next_cursor = cursor_text(shard, start + len(sequences))
    if req.pb:
        response = {
            "next_cursor": next_cursor,
            "record_count": len(sequences),
            "start_sequence": start,
            "records": [
                {
                    "sequence": seq,
                    "system_time": r.system_time,
                    "cursor": cursor_text(shard, seq),
                    "next_cursor": cursor_text(shard, seq + 1),
                    "data": {"data": _pb_values(r.data)},
                    **(
                        {"attributes": {"attributes": [{"key": k, "value": v} for k, v in r.attributes.items()]}}
                        if r.attributes
                        else {}
                    ),
                }
                for seq, r in zip(sequences, stored, strict=True)
            ],
        }
        return 200, pb_frame(encode_data(GetRecordsResponse, response))
    head = orjson.dumps({"NextCursor": next_cursor, "RecordCount": len(sequences), "StartSeq": start})
    return 200, orjson.Fragment(head[:-1] + b',"Records":[' + b",".join(fragments) + b"]}")


def _pb_values(data: list[str | None] | bytes) -> list[dict[str, bytes]]:
    if isinstance(data, bytes):
        return [{"value": data}]
    return [{} if v is None else {"value": v.encode("utf-8")} for v in data]
