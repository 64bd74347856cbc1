"""The Secrets an example pipeline refers to, created for a test."""

from __future__ import annotations

from typing import Any

from kubernetes.dynamic import DynamicClient


def create_secrets(kube: DynamicClient, namespace: str, manifest: dict[str, Any]) -> None:
    secrets = kube.resources.get(api_version="v1", kind="Secret")
    keys: dict[str, set[str]] = {}
    for ref in [manifest["spec"]["source"]["credentials"]["password"],
                *manifest["spec"]["datahub"]["credentials"].values()]:  # fmt: skip
        keys.setdefault(ref["name"], set()).add(ref["key"])
    for name, names in keys.items():
        body = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
                "stringData": dict.fromkeys(names, "not-a-real-secret")}  # fmt: skip
        secrets.create(body=body, namespace=namespace)
