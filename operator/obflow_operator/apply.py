"""Applying built manifests to the API server: create what is missing, server-side-apply what changed,
leave alone what did not (its ``obflow.io/hash`` matches), and delete the children of a kind the
builders may leave out (``OPTIONAL_KINDS``) that they no longer build."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import NotFoundError, ResourceNotFoundError

from obflow.faults import from_env
from obflow_operator.builders import HASH_ANNOTATION, MANAGED_BY, Owner
from obflow_operator.spec import GROUP, KIND, VERSION

CHILD_APPLIED = "operator.child_applied"
"""The fault point (obflow.faults) passed after each child applied: a crash there cuts a reconcile short."""


class ForeignObjectError(RuntimeError):
    """A child's name is taken by an object this pipeline does not own."""


@dataclass
class ApplyResult:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)

    @property
    def changed(self) -> list[str]:
        return self.created + self.updated + self.deleted


def child_key(manifest: dict[str, Any]) -> str:
    return f"{manifest['kind']}/{manifest['metadata']['name']}"


def apply_children(api: DynamicClient, children: list[dict[str, Any]], owner_uid: str) -> ApplyResult:
    result = ApplyResult()
    faults = from_env()
    for manifest in children:
        meta = manifest["metadata"]
        resource = api.resources.get(api_version=manifest["apiVersion"], kind=manifest["kind"])
        try:
            current = resource.get(name=meta["name"], namespace=meta["namespace"]).to_dict()
        except NotFoundError:
            current = None
        if current is not None:
            owners = {ref.get("uid") for ref in current["metadata"].get("ownerReferences") or []}
            if owner_uid not in owners:
                raise ForeignObjectError(
                    f"{child_key(manifest)} already exists and is not owned by this DataPipeline; delete it or "
                    "give the pipeline another name"
                )
            annotations = current["metadata"].get("annotations") or {}
            if annotations.get(HASH_ANNOTATION) == meta["annotations"][HASH_ANNOTATION]:
                result.unchanged.append(child_key(manifest))
                continue
        api.server_side_apply(
            resource, body=manifest, namespace=meta["namespace"], field_manager=MANAGED_BY, force_conflicts=True
        )
        (result.updated if current else result.created).append(child_key(manifest))
        faults.reached(CHILD_APPLIED)
    return result


# children the builders make only under some settings (a JobManager budget only with 2 or more
# JobManagers, NetworkPolicies only when the operator is told to make them)
OPTIONAL_KINDS = ("PodDisruptionBudget", "NetworkPolicy")


def delete_unbuilt_children(
    api: DynamicClient, children: list[dict[str, Any]], owner: Owner, api_versions: Mapping[str, str]
) -> list[str]:
    """Delete this pipeline's children of ``OPTIONAL_KINDS`` (at ``api_versions[kind]``) that are not
    among ``children``; only what the pipeline owns and the operator labelled, so nothing foreign."""
    wanted = {child_key(child) for child in children}
    selector = f"app.kubernetes.io/instance={owner.name},app.kubernetes.io/managed-by={MANAGED_BY}"
    deleted = []
    for kind in OPTIONAL_KINDS:
        if not served(api, api_versions[kind], kind):
            continue
        resource = api.resources.get(api_version=api_versions[kind], kind=kind)
        for item in resource.get(namespace=owner.namespace, label_selector=selector).to_dict()["items"]:
            meta = item["metadata"]
            owned = owner.uid in {ref.get("uid") for ref in meta.get("ownerReferences") or []}
            key = f"{kind}/{meta['name']}"
            if owned and key not in wanted:
                try:
                    resource.delete(name=meta["name"], namespace=owner.namespace)
                except NotFoundError:
                    continue
                deleted.append(key)
    return deleted


def served(api: DynamicClient, api_version: str, kind: str) -> bool:
    try:
        api.resources.get(api_version=api_version, kind=kind)
    except ResourceNotFoundError:
        return False
    return True


def patch_status(
    api: DynamicClient, meta: Mapping[str, Any], changes: dict[str, Any], only_over_version: bool = False
) -> bool:
    """Merge ``changes`` into a pipeline's status; with ``only_over_version``, only if the pipeline is
    still at ``meta``'s resourceVersion. False when it was not written (deleted, or changed meanwhile)."""
    resource = api.resources.get(api_version=f"{GROUP}/{VERSION}", kind=KIND)
    body: dict[str, Any] = {"status": changes}
    if only_over_version:
        body["metadata"] = {"resourceVersion": meta["resourceVersion"]}
    try:
        api.patch(
            resource.subresources["status"],
            body=body,
            name=meta["name"],
            namespace=meta["namespace"],
            content_type="application/merge-patch+json",
        )
    except ApiException as exc:
        if exc.status in {404, 409}:
            return False
        raise
    return True
