"""kopf handlers: thin. Each loads the resource, calls :mod:`obflow_operator.reconcile`, and writes the
status and Events it returns. Importing this module registers them with kopf."""

from __future__ import annotations

import logging
import time
from typing import Any

import kopf
from kubernetes import config as kube_config
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient

from obflow_operator import metrics
from obflow_operator.apply import ForeignObjectError, served
from obflow_operator.reconcile import (
    OperatorSettings,
    Outcome,
    final_savepoint,
    invalid_spec,
    needs_final_savepoint,
    observe,
    reconcile,
)
from obflow_operator.spec import GROUP, PLURAL, VERSION, SpecError

log = logging.getLogger("obflow.operator")

FINALIZER = f"{GROUP}/final-savepoint"
OBSERVE_INTERVAL = 10.0
RESOURCE = (GROUP, VERSION, PLURAL)


def api_client() -> DynamicClient:
    try:
        kube_config.load_incluster_config()
    except kube_config.ConfigException:
        kube_config.load_kube_config()
    return DynamicClient(ApiClient())


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING  # our own Events say what happened; kopf's add errors
    settings.posting.reporting_component = "obflow-operator"
    memo.api = api_client()
    operator_settings: OperatorSettings = memo.get("settings") or OperatorSettings()
    if not served(memo.api, "policy/v1", "PodDisruptionBudget"):
        operator_settings = OperatorSettings(
            rest_url_template=operator_settings.rest_url_template,
            pdb_api_version="policy/v1beta1",
            rest_timeout=operator_settings.rest_timeout,
        )
    memo.settings = operator_settings


def _write(outcome: Outcome, body: kopf.Body, patch: kopf.Patch) -> None:
    patch.status.update(outcome.status_patch())
    for event in outcome.events:
        kopf.event(body, type=event.type, reason=event.reason, message=event.message)
        log.log(
            logging.WARNING if event.type == "Warning" else logging.INFO,
            "%s/%s %s: %s",
            body.metadata.namespace,
            body.metadata.name,
            event.reason,
            event.message,
        )
    metrics.record_phase(f"{body.metadata.namespace}/{body.metadata.name}", outcome.status.phase)


@kopf.on.create(*RESOURCE)
@kopf.on.update(*RESOURCE, field="spec")
@kopf.on.resume(*RESOURCE)
def reconcile_pipeline(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
    started = time.monotonic()
    try:
        outcome = reconcile(memo.api, memo.settings, body)
    except SpecError as exc:
        metrics.RECONCILES.labels(result="invalid").inc()
        _write(invalid_spec(body.get("status"), body.metadata.get("generation"), str(exc)), body, patch)
        raise kopf.PermanentError(str(exc)) from None
    except ForeignObjectError as exc:
        metrics.RECONCILES.labels(result="error").inc()
        metrics.ERRORS.labels(kind="name_clash").inc()
        kopf.event(body, type="Warning", reason="NameClash", message=str(exc))
        raise kopf.TemporaryError(str(exc), delay=60) from None
    except ApiException as exc:
        metrics.RECONCILES.labels(result="error").inc()
        metrics.ERRORS.labels(kind="api").inc()
        raise kopf.TemporaryError(f"Kubernetes API: {exc.status} {exc.reason}", delay=10) from None
    finally:
        metrics.RECONCILE_SECONDS.observe(time.monotonic() - started)
    metrics.RECONCILES.labels(result="ok").inc()
    _write(outcome, body, patch)


@kopf.timer(*RESOURCE, interval=OBSERVE_INTERVAL, initial_delay=OBSERVE_INTERVAL / 2)
def observe_pipeline(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
    try:
        outcome = observe(memo.api, memo.settings, body)
    except ApiException as exc:
        metrics.ERRORS.labels(kind="observe").inc()
        raise kopf.TemporaryError(f"Kubernetes API: {exc.status} {exc.reason}", delay=OBSERVE_INTERVAL) from None
    _write(outcome, body, patch)


def _final_savepoint_needed(spec: kopf.Spec, status: kopf.Status, **_: Any) -> bool:
    return needs_final_savepoint(spec, status)


@kopf.on.delete(*RESOURCE, when=_final_savepoint_needed)
def delete_pipeline(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
    _write(final_savepoint(memo.settings, body), body, patch)


@kopf.on.event(*RESOURCE)
def forget_deleted(event: kopf.RawEvent, **_: Any) -> None:
    if event["type"] == "DELETED":
        meta = event["object"]["metadata"]
        metrics.record_phase(f"{meta['namespace']}/{meta['name']}", None)
