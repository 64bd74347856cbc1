"""``helm install charts/obflow`` into the real API server (helm-python-sdk), then the operator run
with the chart's own ServiceAccount token: its RBAC must be enough to reconcile the sample
DataPipeline (every child created, status written, Events posted) and nothing is left after
``helm uninstall``. No kubelet runs here, so the operator runs as a local process (as in the other
operator tests) with the token the cluster issued to the chart's ServiceAccount."""

from __future__ import annotations

import base64
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import yaml
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import NotFoundError

from tests.support.apiserver import wait_for
from tests.support.children import existing_children, expected_children, status_of
from tests.support.helm import CHART
from tests.support.operator_process import OperatorProcess, pipeline_manifest
from tests.support.pipelines import MINIMAL
from tests.support.secrets import create_secrets
from tools.cluster.controlplane import ControlPlane


def service_account_kubeconfig(plane: ControlPlane, kube: DynamicClient, namespace: str, name: str) -> Path:
    """A kubeconfig with the token the controller-manager issued to ServiceAccount ``name``."""
    secrets = kube.resources.get(api_version="v1", kind="Secret")

    def token() -> str | None:
        for secret in secrets.get(namespace=namespace).items:
            annotations = secret.metadata.annotations or {}
            if secret.type == "kubernetes.io/service-account-token" and (
                annotations.get("kubernetes.io/service-account.name") == name
            ):
                return base64.b64decode(secret.data["token"]).decode()
        return None

    config = yaml.safe_load(plane.kubeconfig.read_text())
    config["users"] = [{"name": name, "user": {"token": wait_for(token, 30, f"a token for {name}")}}]
    config["contexts"][0]["context"]["user"] = name
    path = plane.workdir / f"kubeconfig-{namespace}-{name}"
    path.write_text(yaml.safe_dump(config))
    return path


def test_helm_install_then_the_operator_reconciles_with_only_the_charts_rbac(
    control_plane: ControlPlane, kube: DynamicClient, namespace: str, start_operator: Callable[..., OperatorProcess]
) -> None:
    import helm_python as helm

    helm_config = helm.Config(kubeconfig_path=control_plane.kubeconfig, namespace=namespace)
    release = helm_config.install(
        CHART, "obflow", {"operator": {"observeInterval": 5}}, namespace=namespace, timeout=60
    )
    assert release["status"] == "deployed"
    deployments = kube.resources.get(api_version="apps/v1", kind="Deployment")
    operator_args = deployments.get(name="obflow", namespace=namespace).spec.template.spec.containers[0].args
    assert f"--namespace={namespace}" in operator_args and "--observe-interval=5" in operator_args
    for api_version, kind, name in [("v1", "ServiceAccount", "obflow"),
                                    ("rbac.authorization.k8s.io/v1", "Role", "obflow"),
                                    ("rbac.authorization.k8s.io/v1", "RoleBinding", "obflow"),
                                    ("v1", "Service", "obflow-metrics"),
                                    ("v1", "ConfigMap", "obflow-dashboard-pipeline")]:  # fmt: skip
        kube.resources.get(api_version=api_version, kind=kind).get(name=name, namespace=namespace)

    kubeconfig = service_account_kubeconfig(control_plane, kube, namespace, "obflow")
    operator = start_operator(KUBECONFIG=str(kubeconfig))
    manifest = pipeline_manifest(MINIMAL, namespace)
    create_secrets(kube, namespace, manifest)
    kube.resources.get(api_version="obflow.io/v1alpha1", kind="DataPipeline").create(body=manifest)

    wanted = {f"{kind}/{name}" for _, kind, name in expected_children(manifest)}
    wait_for(lambda: set(existing_children(kube, manifest)) == wanted, 60, "every child of the sample pipeline")
    status = wait_for(lambda: status_of(kube, namespace, "trade").get("phase") and status_of(kube, namespace, "trade"),
                      30, "a status")  # fmt: skip
    assert status["phase"] == "Deploying", status
    log = operator.log.read_text()
    assert "Forbidden" not in log and " 403" not in log, log[-3000:]

    helm_config.upgrade(CHART, "obflow", {"operator": {"observeInterval": 7}}, namespace=namespace, timeout=60)
    upgraded = deployments.get(name="obflow", namespace=namespace).spec.template.spec.containers[0].args
    assert "--observe-interval=7" in upgraded

    helm_config.uninstall("obflow", timeout=60)
    for api_version, kind, name in [("apps/v1", "Deployment", "obflow"), ("v1", "ServiceAccount", "obflow"),
                                    ("rbac.authorization.k8s.io/v1", "Role", "obflow")]:  # fmt: skip
        resource = kube.resources.get(api_version=api_version, kind=kind)
        wait_for(partial(_gone, resource, name, namespace), 30, f"{kind}/{name} to be removed")
    # the CRD stays (Helm never deletes CRDs: that would delete every DataPipeline with it)
    kube.resources.get(api_version="apiextensions.k8s.io/v1", kind="CustomResourceDefinition").get(
        name="datapipelines.obflow.io"
    )


def _gone(resource: Any, name: str, namespace: str) -> bool:
    try:
        resource.get(name=name, namespace=namespace)
    except NotFoundError:
        return True
    return False
