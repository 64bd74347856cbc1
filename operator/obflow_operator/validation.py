"""Admission of a ``DataPipeline``: its spec parsed into the model with every problem named by its field
(``spec.…``) and the fix, its name checked against what its children's names allow, and the Secrets it
refers to checked against those that exist."""

from __future__ import annotations

import re
from typing import Any

from pydantic import ValidationError

from obflow.problems import field_problems
from obflow_operator.spec import DataPipelineSpec, SecretKeyRef, SpecError

MAX_PIPELINE_NAME = 45  # the children add up to 12 characters ("-taskmanager"), a Service name holds 63
_PIPELINE_NAME = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")


def pipeline_name_problems(name: Any) -> list[str]:
    """Why ``name`` (metadata.name) cannot name a pipeline's children; empty when it can."""
    if not isinstance(name, str) or not name:
        return ["metadata.name: missing; name the DataPipeline (lower-case letters, digits and -)"]
    if not _PIPELINE_NAME.fullmatch(name) or len(name) > MAX_PIPELINE_NAME:
        return [
            f"metadata.name: {name[:80]!r} cannot name its Services and Deployments; use lower-case letters, digits "
            f"and -, starting with a letter and ending with a letter or digit, at most {MAX_PIPELINE_NAME} characters"
        ]
    return []


def parse_spec(spec: dict[str, Any]) -> DataPipelineSpec:
    """The spec model of a resource's ``spec``; raises :class:`SpecError`."""
    try:
        model = DataPipelineSpec.model_validate(spec)
    except ValidationError as exc:
        raise SpecError(
            [f"{problem.key('spec')}: {problem.message}" for problem in field_problems(exc, DataPipelineSpec)]
        ) from None
    return model


def secret_references(spec: DataPipelineSpec) -> dict[str, SecretKeyRef]:
    """Every Secret key the pipeline reads, by the spec field that names it."""
    refs = {
        "spec.source.credentials.password": spec.source.credentials.password,
        "spec.datahub.credentials.accessId": spec.datahub.credentials.access_id,
        "spec.datahub.credentials.accessKey": spec.datahub.credentials.access_key,
    }
    if spec.source.credentials.user is not None:
        refs["spec.source.credentials.user"] = spec.source.credentials.user
    return refs


def secret_problems(refs: dict[str, SecretKeyRef], namespace: str, found: dict[str, set[str] | None]) -> list[str]:
    """What is wrong with ``refs`` given the keys of each Secret that exists (``None``: no such Secret),
    each with the command that fixes it."""
    problems = []
    for name in sorted({ref.name for ref in refs.values()}):
        wanted = {field: ref.key for field, ref in refs.items() if ref.name == name}
        keys = found.get(name)
        if keys is None:
            literals = " ".join(f"--from-literal={key}=..." for key in sorted(set(wanted.values())))
            problems.append(
                f"{', '.join(wanted)}: Secret {name} not found in namespace {namespace}; create it: "
                f"kubectl create secret generic {name} -n {namespace} {literals}"
            )
            continue
        for field, key in wanted.items():
            if key not in keys:
                problems.append(f"{field}: Secret {name} has no key {key} (it has: {', '.join(sorted(keys))})")
    return problems
