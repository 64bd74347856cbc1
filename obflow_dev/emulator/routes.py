"""The routing table: a DataHub path and method to the project, topic, shard, record or subscription that answers it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import orjson

from obflow_dev.emulator.records import HASH_SPACE, get_records, open_cursor, put_records
from obflow_dev.emulator.request import Request, bad_method, unsupported, whole
from obflow_dev.emulator.store import (
    DataHubError,
    Store,
    Topic,
)
from obflow_dev.emulator.subscriptions import offsets_resource, subscription_resource, subscriptions_resource

if TYPE_CHECKING:
    from obflow_dev.emulator.server import DataHubEmulator

MAX_LIFECYCLE_DAYS = 3650


def dispatch(
    emulator: DataHubEmulator, method: str, path: str, body: bytes, headers: dict[str, str]
) -> tuple[int, Any]:
    """Answer one authenticated, decompressed DataHub request: (HTTP status, JSON data or PB bytes)."""
    lowered = {k.lower(): v for k, v in headers.items()}
    pb = lowered.get("content-type", "").startswith("application/x-protobuf")
    return _route(emulator, Request(method, path, body, pb, lowered))


def _route(emulator: DataHubEmulator, req: Request) -> tuple[int, Any]:
    parts = [unquote(p) for p in req.path.strip("/").split("/")]
    store = emulator.store
    if not parts or parts[0] != "projects":
        raise DataHubError(400, "InvalidUriSpec", f"unknown resource {req.path!r}")
    if len(parts) == 1:
        if req.method == "GET":
            return 200, {"ProjectNames": sorted(store.projects)}
        raise bad_method(req)
    project = parts[1]
    if len(parts) == 2:
        return _project(store, req, project)
    if parts[2] != "topics":
        raise DataHubError(400, "InvalidUriSpec", f"unknown resource {req.path!r}")
    if len(parts) == 3:
        if req.method == "GET":
            return 200, {"TopicNames": sorted(store.project(project).topics)}
        raise bad_method(req)
    topic = parts[3]
    if len(parts) == 4:
        return _topic(store, req, project, topic)
    if parts[4] == "shards" and len(parts) == 5:
        return _shards(emulator, req, project, topic)
    if parts[4] == "shards" and len(parts) == 6:
        return _shard(emulator, req, project, topic, parts[5])
    if parts[4] == "subscriptions" and len(parts) == 5:
        return subscriptions_resource(store, req, project, topic)
    if parts[4] == "subscriptions" and len(parts) == 6:
        return subscription_resource(store, req, project, topic, parts[5])
    if parts[4] == "subscriptions" and len(parts) == 7 and parts[6] == "offsets":
        return offsets_resource(store, req, project, topic, parts[5])
    raise DataHubError(400, "InvalidUriSpec", f"unknown resource {req.path!r}")


def _project(store: Store, req: Request, name: str) -> tuple[int, Any]:
    if req.method == "POST":
        store.create_project(name, str(req.json().get("Comment", "")))
        return 201, None
    if req.method == "GET":
        p = store.project(name)
        return 200, {"Comment": p.comment, "CreateTime": p.create_time, "LastModifyTime": p.modify_time}
    if req.method == "PUT":
        store.update_project(name, str(req.json().get("Comment", "")))
        return 200, None
    store.delete_project(name)
    return 200, None


def _topic(store: Store, req: Request, project: str, name: str) -> tuple[int, Any]:
    if req.method == "POST":
        body = req.json()
        action = body.get("Action")
        if action == "AppendField":
            store.append_field(project, name, str(body.get("FieldName")), str(body.get("FieldType")))
            return 200, None
        if action:
            raise unsupported(str(action), req)
        schema = body.get("RecordSchema")
        if isinstance(schema, str):
            try:
                schema = orjson.loads(schema)
            except orjson.JSONDecodeError:
                raise DataHubError(400, "InvalidSchema", "RecordSchema is not valid JSON") from None
        fields = schema.get("fields") if isinstance(schema, dict) else None
        store.create_topic(
            project,
            name,
            str(body.get("RecordType", "")),
            fields,
            body.get("ShardCount"),  # type: ignore[arg-type]
            whole(body, "Lifecycle", 7, 1, MAX_LIFECYCLE_DAYS),
            str(body.get("Comment", "")),
        )
        return 201, None
    if req.method == "GET":
        meta = store.topic(project, name).meta()
        if meta["RecordSchema"] is not None:
            meta["RecordSchema"] = orjson.dumps({"fields": meta["RecordSchema"]}).decode()
        else:
            del meta["RecordSchema"]
        return 200, meta
    if req.method == "PUT":
        body = req.json()
        store.update_topic(
            project, name, whole(body, "Lifecycle", 7, 1, MAX_LIFECYCLE_DAYS), str(body.get("Comment", ""))
        )
        return 200, None
    store.delete_topic(project, name)
    return 200, None


def _shards(emulator: DataHubEmulator, req: Request, project: str, topic_name: str) -> tuple[int, Any]:
    topic = emulator.store.topic(project, topic_name)
    if req.method == "GET":
        return 200, {
            "Shards": [_shard_info(topic, i) for i in range(topic.shard_count)],
            "Protocol": "http1.1",
            "Interval": 500,
        }
    action = req.action()
    if req.method == "POST" and action == "pub":
        return put_records(emulator, req, topic, None)
    raise unsupported(action, req)


def _shard_info(topic: Topic, index: int) -> dict[str, Any]:
    width = HASH_SPACE // topic.shard_count
    begin = index * width
    end = HASH_SPACE if index == topic.shard_count - 1 else (index + 1) * width
    return {
        "ShardId": str(index),
        "State": "ACTIVE",
        "ClosedTime": "",
        "BeginHashKey": f"{begin:032X}",
        "EndHashKey": f"{end:032X}"[-32:] if end < HASH_SPACE else "F" * 32,
        "ParentShardIds": [],
        "LeftShardId": str(index - 1) if index else "4294967295",
        "RightShardId": str(index + 1) if index + 1 < topic.shard_count else "4294967295",
    }


def _shard(emulator: DataHubEmulator, req: Request, project: str, topic_name: str, shard_id: str) -> tuple[int, Any]:
    topic = emulator.store.topic(project, topic_name)
    shard = topic.shard(shard_id)
    action = req.action()
    if req.method != "POST":
        raise bad_method(req)
    if action == "cursor":
        return 200, open_cursor(emulator.store, topic, shard, req.json())
    if action == "sub":
        return get_records(emulator, req, topic, shard)
    if action == "pub":
        return put_records(emulator, req, topic, shard)
    raise unsupported(action, req)
