"""The periodic observer: every few seconds it looks at each DataPipeline's Deployments and job and
writes what it sees to status (phase, job state, TaskManagers, last checkpoint, lag, load), with an
Event for every phase change; it keeps the autoscaler's metric samples and lets it decide.

It runs beside kopf rather than as a kopf timer on purpose: kopf puts a finalizer on every object a
timer watches, and that finalizer would block deleting a pipeline while the operator is down.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from kubernetes.dynamic import DynamicClient

from obflow_operator import metrics
from obflow_operator.apply import patch_status
from obflow_operator.autoscaler import SampleHistory
from obflow_operator.events import post_events
from obflow_operator.observe import observe
from obflow_operator.outcome import OperatorSettings
from obflow_operator.reconcile import follow_up
from obflow_operator.spec import GROUP, KIND, VERSION

log = logging.getLogger("obflow.operator")


class Observer:
    def __init__(self, api: DynamicClient, settings: OperatorSettings, namespaces: list[str], interval: float) -> None:
        self.api = api
        self.settings = settings
        self.namespaces = namespaces
        self.interval = interval
        self.history = SampleHistory()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="obflow-observer", daemon=True)

    def start(self) -> Observer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.observe_all()
            except Exception:  # one bad round must not end observing
                metrics.ERRORS.labels(kind="observe").inc()
                log.exception("observing DataPipelines failed")

    def _pipelines(self) -> list[dict[str, Any]]:
        resource = self.api.resources.get(api_version=f"{GROUP}/{VERSION}", kind=KIND)
        if not self.namespaces:
            return [p.to_dict() for p in resource.get().items]
        return [p.to_dict() for ns in self.namespaces for p in resource.get(namespace=ns).items]

    def observe_all(self) -> None:
        pipelines = self._pipelines()
        self.history.keep_only({body["metadata"]["uid"] for body in pipelines})
        for body in pipelines:
            if body["metadata"].get("deletionTimestamp"):
                continue
            try:
                self.observe_one(body)
            except Exception:  # one pipeline's trouble must not stop observing the others
                metrics.ERRORS.labels(kind="observe").inc()
                log.exception("observing %s/%s failed", body["metadata"]["namespace"], body["metadata"]["name"])

    def observe_one(self, body: dict[str, Any]) -> None:
        outcome = follow_up(self.api, self.settings, body, observe(self.api, self.settings, body), self.history)
        current = body.get("status") or {}
        changed = {k: v for k, v in outcome.status_patch().items() if v != current.get(k)}
        # what was only seen is written over the version it was seen at; what was done, always
        if changed and not patch_status(self.api, body["metadata"], changed, only_over_version=not outcome.acted):
            return  # the pipeline changed meanwhile; the next round observes it afresh
        post_events(self.api, body, outcome.events)
        metrics.record_phase(f"{body['metadata']['namespace']}/{body['metadata']['name']}", outcome.status.phase)
