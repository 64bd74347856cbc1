"""Entry points: ``obflow operator run``, ``obflow operator render`` and ``obflow operator crd``."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator
from typing import Any

import yaml

from obflow_operator.builders import BuildOptions, Owner, build_children, job_id_for
from obflow_operator.reconcile import OperatorSettings
from obflow_operator.spec import KIND, SpecError, parse_spec

RENDER_UID = "00000000-0000-0000-0000-000000000000"  # the API server assigns the real one


def render(documents: Iterable[Any], namespace: str = "default") -> Iterator[dict[str, Any]]:
    """Every child manifest the operator would apply for each DataPipeline in ``documents`` (a dry
    run through the same builders). Raises :class:`SpecError` naming the pipeline and field."""
    for document in documents:
        if not isinstance(document, dict) or document.get("kind") != KIND:
            continue
        meta = document.get("metadata") or {}
        name = meta.get("name") or "<unnamed>"
        owner = Owner(name=name, namespace=meta.get("namespace") or namespace, uid=meta.get("uid") or RENDER_UID)
        try:
            options = BuildOptions(job_id=job_id_for(owner.uid, 0))  # as for a new pipeline
            yield from build_children(owner, parse_spec(document.get("spec") or {}), options)
        except SpecError as exc:
            raise SpecError([f"DataPipeline {name}: {p}" for p in exc.problems]) from None


def run_operator(
    namespaces: list[str],
    metrics_port: int,
    liveness_port: int,
    settings: OperatorSettings,
    stop_flag: threading.Event | None = None,
    ready_flag: threading.Event | None = None,
) -> None:
    """Run the kopf operator until stopped; watches ``namespaces`` (empty: the whole cluster)."""
    import kopf
    from prometheus_client import start_http_server

    import obflow_operator.handlers  # registers the handlers with kopf

    del obflow_operator.handlers
    logging.getLogger("kubernetes").setLevel(logging.WARNING)
    # kopf logs every handler success; the operator logs each Event it posts instead
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    if metrics_port:
        start_http_server(metrics_port)
    kopf.run(
        clusterwide=not namespaces,
        namespaces=namespaces,
        standalone=True,
        liveness_endpoint=f"http://0.0.0.0:{liveness_port}/healthz" if liveness_port else None,
        memo=kopf.Memo(settings=settings, namespaces=namespaces),
        stop_flag=stop_flag,
        ready_flag=ready_flag,
    )


def dump_all(manifests: Iterable[dict[str, Any]]) -> str:
    return yaml.safe_dump_all(list(manifests), sort_keys=False, width=120)
