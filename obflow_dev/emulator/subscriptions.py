"""Subscriptions and their offsets: create, list, get, update, delete; offsets opened, committed and reset."""

from __future__ import annotations

import time
from typing import Any

from obflow_dev.emulator.request import Request, unsupported, whole
from obflow_dev.emulator.store import (
    DataHubError,
    Offset,
    Store,
    invalid,
)


def _subscription_json(sub: Any) -> dict[str, Any]:
    return {
        "SubId": sub.sub_id,
        "TopicName": sub.topic,
        "Comment": sub.comment,
        "CreateTime": sub.create_time,
        "LastModifyTime": sub.modify_time,
        "IsOwner": True,
        "State": sub.state,
        "Type": 0,
    }


def subscriptions_resource(store: Store, req: Request, project: str, topic: str) -> tuple[int, Any]:
    body = req.json()
    action = body.get("Action")
    if req.method == "POST" and action == "create":
        return 201, {"SubId": store.create_subscription(project, topic, str(body.get("Comment", "")))}
    if req.method == "POST" and action == "list":
        store.topic(project, topic)
        subs = [s for s in store.project(project).subscriptions.values() if s.topic == topic]
        search = body.get("Search")
        if search is not None and not isinstance(search, str):
            raise invalid(f"Search must be text, not {search!r:.40}")
        if search:
            subs = [s for s in subs if search in s.comment or search in s.sub_id]
        page, size = whole(body, "PageIndex", 1, 1, 10**6), whole(body, "PageSize", 10, 1, 10**4)
        chosen = subs[(page - 1) * size : page * size]
        return 200, {"TotalCount": len(subs), "Subscriptions": [_subscription_json(s) for s in chosen]}
    raise unsupported(str(action), req)


def subscription_resource(store: Store, req: Request, project: str, topic: str, sub_id: str) -> tuple[int, Any]:
    sub = store.subscription(project, topic, sub_id)
    if req.method == "GET":
        return 200, _subscription_json(sub)
    if req.method == "DELETE":
        store.delete_subscription(project, topic, sub_id)
        return 200, None
    if req.method == "PUT":
        body = req.json()
        with store.lock:
            if "State" in body:
                if body["State"] not in (0, 1):
                    raise invalid("State must be 0 (INACTIVE) or 1 (ACTIVE)")
                sub.state = body["State"]
            if "Comment" in body:
                sub.comment = str(body["Comment"])
            sub.modify_time = int(time.time())
            store.save()
        return 200, None
    raise unsupported(str(req.json().get("Action")), req)


def _position(offset: dict[str, Any]) -> tuple[int, int]:
    """An offset's ``Sequence`` and ``Timestamp`` (-1: none yet), else InvalidParameter naming them."""
    return whole(offset, "Sequence", -1, -1, 2**63 - 1), whole(offset, "Timestamp", -1, -1, 2**63 - 1)


def offsets_resource(store: Store, req: Request, project: str, topic_name: str, sub_id: str) -> tuple[int, Any]:
    sub = store.subscription(project, topic_name, sub_id)
    topic = store.topic(project, topic_name)
    body = req.json()
    action = body.get("Action")
    with store.lock:
        if req.method == "POST" and action in ("open", "get"):
            shard_ids = body.get("ShardIds") or [s.shard_id for s in topic.shards]
            if not isinstance(shard_ids, list):
                raise invalid("ShardIds must be a list")
            result = {}
            for shard_id in shard_ids:
                topic.shard(str(shard_id))
                offset = sub.offsets.setdefault(str(shard_id), Offset())
                if action == "open":
                    offset.session_id = store.new_session()
                result[str(shard_id)] = {
                    "Sequence": offset.sequence,
                    "Timestamp": offset.timestamp,
                    "Version": offset.version,
                    "SessionId": offset.session_id,
                    "BatchIndex": 0,
                }
            if action == "open":
                store.save()
            return 200, {"Offsets": result}
        if req.method == "PUT" and action in ("commit", "reset"):
            offsets = body.get("Offsets")
            if not isinstance(offsets, dict) or not offsets:
                raise invalid("Offsets must be a non-empty object keyed by shard id")
            if action == "commit" and sub.state != 1:
                raise DataHubError(400, "SubscriptionOffline", f"subscription {sub_id} is inactive")
            for shard_id, value in offsets.items():
                topic.shard(shard_id)
                if not isinstance(value, dict):
                    raise invalid(f"offset of shard {shard_id} must be an object")
                current = sub.offsets.setdefault(shard_id, Offset())
                if action == "commit":
                    if value.get("Version", 0) != current.version:
                        raise DataHubError(400, "OffsetReseted", f"offset of shard {shard_id} was reset; open it again")
                    if current.session_id is None or str(value.get("SessionId")) != str(current.session_id):
                        raise DataHubError(
                            400,
                            "OffsetSessionChanged",
                            f"offset session of shard {shard_id} changed; open it again",
                        )
                current.sequence, current.timestamp = _position(value)
                if action == "reset":
                    current.version += 1
                    current.session_id = None
            store.save()
            return 200, None
    raise unsupported(str(action), req)
