"""The Helm chart through helm-python-sdk (Helm 4's Go SDK in a shared library; no helm binary)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

CHART = Path(__file__).parents[2] / "charts" / "obflow"


def render(values: dict[str, Any] | None = None, namespace: str = "obflow-system") -> list[dict[str, Any]]:
    """Every manifest ``helm template obflow charts/obflow`` prints, parsed (NOTES.txt left out)."""
    import helm_python as helm

    rendered = helm.Chart.load(CHART).render(values, name="obflow", namespace=namespace, is_install=True)
    return [
        document
        for path, text in sorted(rendered.items())
        if path.endswith(".yaml")
        for document in yaml.safe_load_all(text)
        if document
    ]


def by_kind(manifests: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [manifest for manifest in manifests if manifest["kind"] == kind]
