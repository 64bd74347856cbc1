"""The end-to-end suite (tests/e2e/suite.py) on a kind cluster made from kind-config.yaml, on a
machine with kind, Docker and kubectl (a developer laptop): the images are built from the repo with
the official bases and loaded with ``kind load docker-image``. Elsewhere it is skipped and says which
tool is missing; this repo's CI has no registry for kind's node image, so it runs the same suite on
the single-node cluster it builds itself (issue 10)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator

import pytest

from tests.e2e.suite import NODE_DATA_ON_HOST, Cluster, run_pipeline_end_to_end
from tests.support.repo import REPO_ROOT

pytestmark = pytest.mark.slow
CLUSTER_NAME = "obflow-e2e"


def kind_missing() -> list[str]:
    missing = [tool for tool in ("kind", "docker", "kubectl") if shutil.which(tool) is None]
    if not missing and subprocess.run(["docker", "info"], capture_output=True, check=False).returncode != 0:
        missing.append("a running Docker daemon")
    return missing


@pytest.fixture(scope="module")
def kind_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    missing = kind_missing()
    if missing:
        pytest.skip("the kind e2e needs " + ", ".join(missing) + " (see docs/e2e.md)")
    kubeconfig = tmp_path_factory.mktemp("kind") / "kubeconfig"
    NODE_DATA_ON_HOST.mkdir(parents=True, exist_ok=True)
    NODE_DATA_ON_HOST.chmod(0o777)  # a hostPath volume ignores fsGroup; the pods run as non-root users
    config = REPO_ROOT / "kind-config.yaml"
    subprocess.run(["kind", "create", "cluster", "--name", CLUSTER_NAME, "--config", str(config),
                    "--kubeconfig", str(kubeconfig), "--wait", "180s"], check=True)  # fmt: skip

    def load_images(images: list[str]) -> None:
        env = {**os.environ, "OBFLOW_BASES": os.environ.get("OBFLOW_BASES", "official")}
        subprocess.run([str(REPO_ROOT / "scripts/docker/build.sh")], check=True, env=env)
        for image in images:
            subprocess.run(["kind", "load", "docker-image", "--name", CLUSTER_NAME, image], check=True)

    try:
        yield Cluster(kubeconfig=kubeconfig, load_images=load_images, node_data_dir=NODE_DATA_ON_HOST)
    finally:
        if not os.environ.get("OBFLOW_KEEP_CLUSTER"):
            subprocess.run(["kind", "delete", "cluster", "--name", CLUSTER_NAME], check=False)


def test_the_sample_pipeline_runs_on_kind_exactly_once(kind_cluster: Cluster) -> None:
    timings = run_pipeline_end_to_end(kind_cluster, "obflow-e2e")
    print(" ".join(f"{name}: {seconds:.0f}s" for name, seconds in timings.items()))
