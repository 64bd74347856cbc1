"""The ``DataPipeline`` CustomResourceDefinition, generated from the spec and status models.

``crds/datapipeline.yaml`` is this module's output (``obflow operator crd > crds/datapipeline.yaml``);
a test fails when the file and the models drift apart.
"""

from __future__ import annotations

from typing import Any

import yaml
from pydantic import BaseModel

from obflow_operator.spec import GROUP, KIND, PLURAL, VERSION, DataPipelineSpec
from obflow_operator.status import DataPipelineStatus

# JSON Schema keywords a Kubernetes structural schema accepts (others, e.g. "title", are dropped)
_KEPT = {
    "type",
    "description",
    "default",
    "enum",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "pattern",
    "required",
    "format",
}


def openapi_schema(model: type[BaseModel]) -> dict[str, Any]:
    """``model``'s JSON schema as a Kubernetes structural OpenAPI v3 schema: references inlined,
    optional fields ``nullable``, free-form objects kept with ``x-kubernetes-preserve-unknown-fields``."""
    schema = model.model_json_schema(by_alias=True, mode="validation")
    return _convert(schema, schema.get("$defs", {}))


def _convert(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        return _convert({**target, **{k: v for k, v in node.items() if k != "$ref"}}, defs)
    if "anyOf" in node:  # X | None
        options = [o for o in node["anyOf"] if o.get("type") != "null"]
        if len(options) != 1:
            raise ValueError(f"cannot express {node} in a structural schema")
        merged = _convert({**options[0], **{k: v for k, v in node.items() if k != "anyOf"}}, defs)
        merged["nullable"] = True
        if merged.get("default", ...) is None:
            del merged["default"]
        return merged
    if "const" in node:
        node = {**{k: v for k, v in node.items() if k != "const"}, "enum": [node["const"]]}
    out = {k: v for k, v in node.items() if k in _KEPT}
    for bound, inclusive in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if bound in out:  # JSON Schema's numeric form -> OpenAPI 3.0's boolean form
            out[inclusive] = out[bound]
            out[bound] = True
    if "enum" in out and "type" not in out:
        out["type"] = "string"
    kind = node.get("type")
    if kind == "object":
        properties = node.get("properties")
        if properties:
            out["properties"] = {name: _convert(sub, defs) for name, sub in properties.items()}
        extra = node.get("additionalProperties")
        if isinstance(extra, dict) and extra:
            out["additionalProperties"] = _convert(extra, defs)
        elif not properties:
            out["x-kubernetes-preserve-unknown-fields"] = True
    elif kind == "array":
        out["items"] = _convert(node.get("items", {}), defs)
    if "default" in out and isinstance(out["default"], dict | list) and not out["default"]:
        del out["default"]  # empty defaults add nothing but noise to kubectl explain
    return out


PRINTER_COLUMNS = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Parallelism", "type": "integer", "jsonPath": ".status.parallelism"},
    {"name": "TaskManagers", "type": "integer", "jsonPath": ".status.taskManagers"},
    {"name": "Lag", "type": "string", "jsonPath": ".status.lag"},
    {"name": "Last-Savepoint", "type": "string", "jsonPath": ".status.lastSavepoint.time"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def _without_defaults(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _without_defaults(v) for k, v in node.items() if k != "default"}
    if isinstance(node, list):
        return [_without_defaults(v) for v in node]
    return node


def crd_manifest() -> dict[str, Any]:
    # only the operator writes status, so defaults there would only be noise
    status = _without_defaults(openapi_schema(DataPipelineStatus))
    # kopf keeps its own bookkeeping in status too
    status["x-kubernetes-preserve-unknown-fields"] = True
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "plural": PLURAL,
                "singular": KIND.lower(),
                "shortNames": ["dp"],
                "listKind": f"{KIND}List",
                "categories": ["obflow"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "A CDC pipeline: OceanBase -> DataHub -> Flink -> files.",
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": openapi_schema(DataPipelineSpec),
                                "status": status,
                            },
                        }
                    },
                }
            ],
        },
    }


class _NoAliases(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True


def crd_yaml() -> str:
    header = "# Generated by `obflow operator crd` from obflow_operator.spec; do not edit by hand.\n"
    return header + yaml.dump(crd_manifest(), Dumper=_NoAliases, sort_keys=False, width=120)
