"""A real kube-apiserver for a test package (tools/cluster's control plane), with the DataPipeline CRD
established, a client of it and a namespace per test."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Iterator

import pytest
from kubernetes import config as kube_config
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import NotFoundError

from obflow_operator.crd import crd_manifest
from tests.support import waiting
from tools.cluster.controlplane import ControlPlane, missing_prerequisites

wait_for = functools.partial(waiting.wait_for, interval=0.3, not_yet=(NotFoundError,))
"""The shared wait, with an object that does not exist yet counting as "not yet"."""


# per package: the e2e DNS test and the operator tests each get one, and neither outlives its tests
@pytest.fixture(scope="package")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    missing = missing_prerequisites()
    if missing:
        pytest.fail("the real API server is needed; missing: " + ", ".join(missing) + " (make test builds them)")
    plane = ControlPlane(tmp_path_factory.mktemp("kube"))
    try:
        plane.start()
        api = client_for(plane)
        crds = api.resources.get(api_version="apiextensions.k8s.io/v1", kind="CustomResourceDefinition")
        crds.create(body=crd_manifest())
        wait_for(lambda: _crd_established(api), 30, "the DataPipeline CRD to be established")
        yield plane
    finally:
        plane.stop()  # also when starting failed half-way: no etcd or apiserver outlives the session


def client_for(plane: ControlPlane) -> DynamicClient:
    return DynamicClient(kube_config.new_client_from_config(config_file=str(plane.kubeconfig)))


def _crd_established(api: DynamicClient) -> bool:
    crds = api.resources.get(api_version="apiextensions.k8s.io/v1", kind="CustomResourceDefinition")
    conditions = (crds.get(name="datapipelines.obflow.io").to_dict().get("status") or {}).get("conditions") or []
    if not any(c["type"] == "Established" and c["status"] == "True" for c in conditions):
        return False
    api.resources.invalidate_cache()
    try:
        api.resources.get(api_version="obflow.io/v1alpha1", kind="DataPipeline")
    except Exception:
        return False
    return True


@pytest.fixture
def kube(control_plane: ControlPlane) -> DynamicClient:
    return client_for(control_plane)


@pytest.fixture
def namespace(kube: DynamicClient) -> str:
    name = f"t-{uuid.uuid4().hex[:8]}"
    kube.resources.get(api_version="v1", kind="Namespace").create(
        body={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    )
    return name
