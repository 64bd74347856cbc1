"""What the API server holds of a pipeline: its status, and its children as built and as they exist."""

from __future__ import annotations

from typing import Any

from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import NotFoundError

from obflow_operator.builders import BuildOptions, Owner, build_children
from obflow_operator.validation import parse_spec


def pipelines(kube: DynamicClient) -> Any:
    return kube.resources.get(api_version="obflow.io/v1alpha1", kind="DataPipeline")


def get_pipeline(kube: DynamicClient, namespace: str, name: str) -> dict[str, Any]:
    result: dict[str, Any] = pipelines(kube).get(name=name, namespace=namespace).to_dict()
    return result


def status_of(kube: DynamicClient, namespace: str, name: str) -> dict[str, Any]:
    return get_pipeline(kube, namespace, name).get("status") or {}


def expected_children(manifest: dict[str, Any]) -> list[tuple[str, str, str]]:
    owner = Owner(manifest["metadata"]["name"], manifest["metadata"]["namespace"], "uid")
    built = build_children(owner, parse_spec(manifest["spec"]), BuildOptions(pdb_api_version="policy/v1beta1"))
    return [(c["apiVersion"], c["kind"], c["metadata"]["name"]) for c in built]


def existing_children(kube: DynamicClient, manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found = {}
    for api_version, kind, name in expected_children(manifest):
        try:
            child = kube.resources.get(api_version=api_version, kind=kind).get(
                name=name, namespace=manifest["metadata"]["namespace"]
            )
        except NotFoundError:
            continue
        found[f"{kind}/{name}"] = child.to_dict()
    return found
