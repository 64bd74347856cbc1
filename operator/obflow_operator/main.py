"""Entry points: ``obflow operator run``, ``obflow operator render`` and ``obflow operator crd``."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator
from typing import Any

import yaml

from obflow_operator.builders import BuildOptions, Owner, build_children, job_id_for
from obflow_operator.network import NetworkPolicySettings
from obflow_operator.outcome import OperatorSettings
from obflow_operator.spec import GROUP, KIND, VERSION, SpecError
from obflow_operator.validation import parse_spec, pipeline_name_problems

RENDER_UID = "00000000-0000-0000-0000-000000000000"  # the API server assigns the real one
API_VERSION = f"{GROUP}/{VERSION}"


def render(
    documents: Iterable[Any], namespace: str = "default", network_policies: NetworkPolicySettings | None = None
) -> Iterator[dict[str, Any]]:
    """Every child manifest the operator would apply for each DataPipeline in ``documents`` (a dry
    run through the same builders, with the operator's ``network_policies`` settings). Raises
    :class:`SpecError` naming the pipeline and field."""
    for document in _documents(documents):
        meta: dict[str, Any] = document["metadata"] if isinstance(document.get("metadata"), dict) else {}
        name = meta.get("name")
        label = f"DataPipeline {name}" if isinstance(name, str) and name else "a DataPipeline"
        problems = pipeline_name_problems(name)
        if document.get("apiVersion") != API_VERSION:
            problems.append(f"apiVersion: {document.get('apiVersion')!r:.60}; a DataPipeline is {API_VERSION}")
        if not isinstance(document.get("spec") or {}, dict):
            problems.append("spec: must be a mapping of the pipeline's sections")
        if problems:
            raise SpecError([f"{label}: {p}" for p in problems])
        owner = Owner(name=str(name), namespace=meta.get("namespace") or namespace, uid=meta.get("uid") or RENDER_UID)
        try:
            # as for a new pipeline
            options = BuildOptions(job_id=job_id_for(owner.uid, 0), network_policies=network_policies)
            yield from build_children(owner, parse_spec(document.get("spec") or {}), options)
        except SpecError as exc:
            raise SpecError([f"{label}: {p}" for p in exc.problems]) from None


def _documents(documents: Iterable[Any]) -> Iterator[dict[str, Any]]:
    """The DataPipelines among ``documents``, those in a ``kind: List`` included."""
    for document in documents:
        if isinstance(document, dict) and document.get("kind") == "List" and isinstance(document.get("items"), list):
            yield from _documents(document["items"])
        elif isinstance(document, dict) and document.get("kind") == KIND:
            yield document


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
