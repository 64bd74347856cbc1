"""The example DataPipelines the operator tests start from, and ways to change and take apart their specs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

REPO_ROOT = Path(__file__).resolve().parents[2]

MINIMAL = REPO_ROOT / "examples" / "datapipeline-minimal.yaml"
FULL = REPO_ROOT / "examples" / "datapipeline.yaml"


def spec_of(path: Path, **changes: Any) -> dict[str, Any]:
    spec: dict[str, Any] = yaml.safe_load(path.read_text())["spec"]
    for dotted, value in changes.items():
        node = spec
        *parents, leaf = dotted.split("__")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return spec


def fields_by_alias(model: type[BaseModel]) -> dict[str, type[BaseModel] | None]:
    """Each field's camelCase name and the model it holds (directly, optional or in a list), if any."""
    out: dict[str, type[BaseModel] | None] = {}
    for name, field in model.model_fields.items():
        annotation = field.annotation
        args = getattr(annotation, "__args__", ())
        nested = next((a for a in (annotation, *args) if isinstance(a, type) and issubclass(a, BaseModel)), None)
        out[field.alias or name] = nested
    return out
