"""kopf handlers: thin. Each loads the resource, calls :mod:`obflow_operator.reconcile`, and writes the
status and Events it returns. Importing this module registers them with kopf."""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Any

import kopf
from kubernetes import config as kube_config
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient

from obflow_operator import metrics
from obflow_operator.apply import ForeignObjectError, served
from obflow_operator.builders import MANAGED_BY
from obflow_operator.events import post_events
from obflow_operator.observer import Observer
from obflow_operator.outcome import Event, OperatorSettings, Outcome
from obflow_operator.reconcile import (
    UpgradeBlockedError,
    final_savepoint,
    invalid_spec,
    needs_final_savepoint,
    reconcile,
)
from obflow_operator.spec import GROUP, PLURAL, VERSION, SpecError

log = logging.getLogger("obflow.operator")

FINALIZER = f"{GROUP}/final-savepoint"
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
    settings.posting.reporting_component = MANAGED_BY
    memo.api = api_client()
    operator_settings: OperatorSettings = memo.get("settings") or OperatorSettings()
    if not served(memo.api, "policy/v1", "PodDisruptionBudget"):
        operator_settings = replace(operator_settings, pdb_api_version="policy/v1beta1")
    memo.settings = operator_settings
    namespaces = list(memo.get("namespaces") or [])
    # Watching named namespaces needs no cluster-wide look at namespaces and CRDs (nor the ClusterRole
    # for it): the namespaced chart grants only Roles.
    settings.scanning.disabled = bool(namespaces)
    memo.observer = Observer(memo.api, operator_settings, namespaces, operator_settings.observe_interval).start()


@kopf.on.cleanup()
def stop_observer(memo: kopf.Memo, **_: Any) -> None:
    if memo.get("observer"):
        memo.observer.stop()


def _write(outcome: Outcome, body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo) -> None:
    patch.status.update(outcome.status_patch())
    post_events(memo.api, body, outcome.events)
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
        _write(invalid_spec(body.get("status"), body.metadata.get("generation"), str(exc)), body, patch, memo)
        raise kopf.PermanentError(str(exc)) from None
    except ForeignObjectError as exc:
        metrics.RECONCILES.labels(result="error").inc()
        metrics.ERRORS.labels(kind="name_clash").inc()
        post_events(memo.api, body, [Event("Warning", "NameClash", str(exc))])
        raise kopf.TemporaryError(str(exc), delay=60) from None
    except UpgradeBlockedError as exc:
        metrics.RECONCILES.labels(result="blocked").inc()
        post_events(memo.api, body, [Event("Warning", "UpgradeBlocked", str(exc))])
        raise kopf.TemporaryError(str(exc), delay=60) from None
    except ApiException as exc:
        metrics.RECONCILES.labels(result="error").inc()
        metrics.ERRORS.labels(kind="api").inc()
        raise kopf.TemporaryError(f"Kubernetes API: {exc.status} {exc.reason}", delay=10) from None
    finally:
        metrics.RECONCILE_SECONDS.observe(time.monotonic() - started)
    metrics.RECONCILES.labels(result="ok").inc()
    _write(outcome, body, patch, memo)


def _final_savepoint_needed(spec: kopf.Spec, status: kopf.Status, **_: Any) -> bool:
    return needs_final_savepoint(spec, status)


@kopf.on.delete(*RESOURCE, when=_final_savepoint_needed)
def delete_pipeline(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
    _write(final_savepoint(memo.settings, body), body, patch, memo)


@kopf.on.event(*RESOURCE)
def forget_deleted(event: kopf.RawEvent, **_: Any) -> None:
    if event["type"] == "DELETED":
        meta = event["object"]["metadata"]
        metrics.record_phase(f"{meta['namespace']}/{meta['name']}", None)
