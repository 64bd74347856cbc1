"""Kubernetes Events about a DataPipeline, posted through the API (what ``kubectl describe`` shows)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient

from obflow_operator.builders import MANAGED_BY
from obflow_operator.outcome import Event

log = logging.getLogger("obflow.operator")


def event_manifest(body: Mapping[str, Any], event: Event, when: datetime) -> dict[str, Any]:
    meta = body["metadata"]
    stamp = when.strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
        "involvedObject": {
            "apiVersion": body["apiVersion"],
            "kind": body["kind"],
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta["uid"],
        },
        "type": event.type,
        "reason": event.reason,
        "message": event.message[:1024],
        "source": {"component": MANAGED_BY},
        "reportingComponent": MANAGED_BY,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }


def post_events(api: DynamicClient, body: Mapping[str, Any], events: list[Event]) -> None:
    """Post each event and log it; a failure to post is logged, never raised (the work is done)."""
    resource = api.resources.get(api_version="v1", kind="Event")
    for event in events:
        level = logging.WARNING if event.type == "Warning" else logging.INFO
        log.log(
            level, "%s/%s %s: %s", body["metadata"]["namespace"], body["metadata"]["name"], event.reason, event.message
        )
        try:
            resource.create(
                body=event_manifest(body, event, datetime.now(UTC)), namespace=body["metadata"]["namespace"]
            )
        except ApiException as exc:
            log.warning("could not post event %s: %s %s", event.reason, exc.status, exc.reason)
