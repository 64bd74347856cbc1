"""Fixtures for operator tests against a real kube-apiserver (+ controller-manager) on loopback."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import config as kube_config
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import NotFoundError

from obflow.net import free_port
from obflow_operator.crd import crd_manifest
from tests.support import waiting
from tools.cluster.controlplane import ControlPlane, missing_prerequisites


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


wait_for = functools.partial(waiting.wait_for, interval=0.3, not_yet=(NotFoundError,))
"""The shared wait, with an object that does not exist yet counting as "not yet"."""


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


class OperatorProcess:
    """``obflow operator run`` as a user starts it, watching one namespace."""

    def __init__(
        self,
        plane: ControlPlane,
        namespace: str,
        rest_url: str,
        log: Path,
        env: dict[str, str],
        interval: float,
        args: tuple[str, ...] = (),
    ) -> None:
        self.metrics_port, self.liveness_port = free_port(), free_port()
        self.log = log
        full_env = {**os.environ, "KUBECONFIG": str(plane.kubeconfig), **env}
        self.process = subprocess.Popen(
            [
                sys.executable, "-m", "obflow.cli", "operator", "run",
                "--namespace", namespace,
                "--metrics-port", str(self.metrics_port),
                "--liveness-port", str(self.liveness_port),
                "--flink-rest-url", rest_url,
                "--observe-interval", str(interval),
                *args,
            ],
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=full_env,
        )  # fmt: skip

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.liveness_port}/healthz", timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as response:
            return str(response.read().decode())

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


NO_JOBMANAGER = "http://127.0.0.1:1"  # nothing listens: no pod runs without a kubelet


@pytest.fixture
def start_operator(
    control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> Iterator[Callable[..., OperatorProcess]]:
    started: list[OperatorProcess] = []

    def start(
        rest_url: str = NO_JOBMANAGER,
        wait: bool = True,
        observe_interval: float = 10.0,
        args: tuple[str, ...] = (),
        **env: str,
    ) -> OperatorProcess:
        log = tmp_path / "operator.log"
        operator = OperatorProcess(control_plane, namespace, rest_url, log, env, observe_interval, args)
        started.append(operator)
        if wait:
            wait_for(operator.healthy, 30, "the operator's /healthz")
        return operator

    yield start
    for operator in started:
        operator.stop()


def pipeline_manifest(path: Path, namespace: str, **spec_changes: Any) -> dict[str, Any]:
    manifest: dict[str, Any] = yaml.safe_load(path.read_text())
    manifest["metadata"]["namespace"] = namespace
    manifest["spec"].update(spec_changes)
    return manifest
