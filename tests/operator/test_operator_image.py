"""The operator image (docker/python.Dockerfile, EXTRAS=operator) runs the operator against the real
API server: healthy by its own HEALTHCHECK within 60 s, and it reconciles a DataPipeline. The
container shares the host's network to reach the API server on loopback (no kubelet runs here)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
import yaml
from kubernetes.dynamic import DynamicClient

from obflow.net import free_port
from tests.support.apiserver import wait_for
from tests.support.children import existing_children, expected_children
from tests.support.images import Docker
from tests.support.operator_process import pipeline_manifest
from tests.support.pipelines import MINIMAL
from tests.support.secrets import create_secrets
from tools.cluster.controlplane import ControlPlane

pytestmark = pytest.mark.slow


def readable_kubeconfig(plane: ControlPlane, directory: Path) -> None:
    """The admin kubeconfig and its CA in ``directory``, readable by the image's non-root user."""
    directory.chmod(0o755)
    config = yaml.safe_load(plane.kubeconfig.read_text())
    ca = Path(config["clusters"][0]["cluster"]["certificate-authority"])
    shutil.copy(ca, directory / "ca.crt")
    config["clusters"][0]["cluster"]["certificate-authority"] = "/etc/obflow/kube/ca.crt"
    (directory / "config").write_text(yaml.safe_dump(config))
    for path in directory.iterdir():
        path.chmod(0o644)


def test_operator_image_reconciles_a_pipeline_R8_5_R8_8(
    docker: Docker, control_plane: ControlPlane, kube: DynamicClient, namespace: str
) -> None:
    liveness_port, metrics_port = free_port(), free_port()
    args = ("operator", "run", f"--namespace={namespace}", f"--liveness-port={liveness_port}",
            f"--metrics-port={metrics_port}", "--log-json")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="obflow-kube-") as kube_dir:  # pytest's tmp_path is root-only
        readable_kubeconfig(control_plane, Path(kube_dir))
        options = (
            "--network", "host",
            "--volume", f"{kube_dir}:/etc/obflow/kube:ro",
            "--env", "KUBECONFIG=/etc/obflow/kube/config",
        )  # fmt: skip
        with docker.container("operator", *args, options=options) as operator:
            seconds = operator.seconds_until_healthy()
            assert f"http://127.0.0.1:{liveness_port}/healthz" in operator.healthcheck().stdout
            print(f"operator healthy {seconds:.1f} s after docker run")
            assert seconds < 60
            manifest = pipeline_manifest(MINIMAL, namespace)
            create_secrets(kube, namespace, manifest)
            kube.resources.get(api_version="obflow.io/v1alpha1", kind="DataPipeline").create(body=manifest)
            wanted = {f"{kind}/{name}" for _, kind, name in expected_children(manifest)}
            wait_for(lambda: set(existing_children(kube, manifest)) == wanted, 60, "the children, from the container")
            assert all(line.startswith("{") for line in operator.logs().splitlines() if line)  # --log-json
