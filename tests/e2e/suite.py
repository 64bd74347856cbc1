"""The end-to-end suite on a real Kubernetes cluster: obflow's images loaded into it, the chart
installed (helm-python-sdk), the sample pipeline applied, changes written into the database, and
every one of them found exactly once in the output files. It needs only a :class:`Cluster`: a
kubeconfig, a way to load images into the nodes, and where the node's /var/lib/obflow (the pipeline's
storage) is seen from this machine; kind (tests/e2e/test_kind.py) is one such cluster."""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

from obflow.config import ObflowConfig
from obflow.loadgen import create_schema
from obflow.net import free_port
from tests.chart.helm import CHART
from tests.operator.conftest import wait_for

MANIFESTS = Path(__file__).with_name("manifests")
IMAGES = ["obflow/flink:0.1.0", "obflow/capture:0.1.0", "obflow/operator:0.1.0", "obflow/seekdb:0.1.0"]


@dataclass
class Cluster:
    kubeconfig: Path
    load_images: Callable[[list[str]], None]
    node_data_dir: Path  # the node's /var/lib/obflow as this machine sees it


def kubectl(cluster: Cluster, *args: str, timeout: float = 120) -> str:
    result = subprocess.run(
        ["kubectl", "--kubeconfig", str(cluster.kubeconfig), *args],
        capture_output=True, text=True, check=False, timeout=timeout,
    )  # fmt: skip
    if result.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)}: {result.stderr}")
    return result.stdout


@contextlib.contextmanager
def port_forward(cluster: Cluster, namespace: str, target: str, port: int) -> Iterator[int]:
    local = free_port()
    command = ["kubectl", "--kubeconfig", str(cluster.kubeconfig), "-n", namespace, "port-forward"]
    process = subprocess.Popen([*command, target, f"{local}:{port}"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        time.sleep(2)
        yield local
    finally:
        process.terminate()
        process.wait(10)


def install_obflow(cluster: Cluster, namespace: str) -> None:
    import helm_python as helm

    config = helm.Config(kubeconfig_path=cluster.kubeconfig, namespace=namespace)
    values = {"image": {"pullPolicy": "Never"}, "watchNamespaces": [namespace]}
    config.install(CHART, "obflow", values, namespace=namespace, create_namespace=True, wait="watcher", timeout=180)


def pipeline_config(namespace: str, db_port: int, node_data_dir: Path) -> ObflowConfig:
    """The pipeline's settings as seen from this machine: the database through a port-forward, the
    output where the node's storage shows up here."""
    spec = yaml.safe_load((MANIFESTS / "pipeline.yaml").read_text())["spec"]
    return ObflowConfig(
        source={"engine": "oceanbase", "mode": "mysql", "host": "127.0.0.1", "port": db_port, "user": "root",
                "database": spec["source"]["database"], "tables": spec["source"]["tables"]},
        output={"format": spec["output"]["format"], "path": str(node_data_dir / "shop" / "output")},
    )  # fmt: skip


def run_pipeline_end_to_end(cluster: Cluster, namespace: str, changes: int = 300) -> dict[str, float]:
    """The whole pipeline on the cluster; returns timings in seconds."""
    import pymysql

    from obflow.demo import verify
    from obflow.loadgen import LoadGenerator

    timings: dict[str, float] = {}
    started = time.monotonic()
    cluster.load_images(IMAGES)
    timings["images loaded"] = time.monotonic() - started
    install_obflow(cluster, namespace)
    kubectl(cluster, "-n", namespace, "apply", "-f", str(MANIFESTS / "backing.yaml"))
    kubectl(cluster, "-n", namespace, "rollout", "status", "deployment/database", "--timeout=180s", timeout=200)
    kubectl(cluster, "-n", namespace, "rollout", "status", "deployment/datahub", "--timeout=180s", timeout=200)
    with port_forward(cluster, namespace, "service/database", 2881) as db_port:
        with pymysql.connect(host="127.0.0.1", port=db_port, user="root", autocommit=True) as conn:
            create_schema(conn, "shop")
        config = pipeline_config(namespace, db_port, cluster.node_data_dir)
        from capture_agent.install import apply_ddl, change_log_ddl

        apply_ddl(config, change_log_ddl(config))
        applied = time.monotonic()
        kubectl(cluster, "-n", namespace, "apply", "-f", str(MANIFESTS / "pipeline.yaml"))
        wait_for(lambda: "Running" in kubectl(cluster, "-n", namespace, "get", "dp", "shop"), 600, "shop Running",
                 interval=2, not_yet=(AssertionError,))  # fmt: skip
        timings["pipeline Running"] = time.monotonic() - applied
        table = kubectl(cluster, "-n", namespace, "get", "dp", "shop")
        assert "PARALLELISM" in table and "LAG" in table, table
        jobmanagers = kubectl(cluster, "-n", namespace, "get", "pods", "-l", "app.kubernetes.io/component=jobmanager")
        assert jobmanagers.count("Running") == 2, jobmanagers
        load = LoadGenerator(lambda: pymysql.connect(host="127.0.0.1", port=db_port, user="root", database="shop",
                                                     autocommit=True), changes, rate=50.0)  # fmt: skip
        load.start()
        load.join(120)
        written = time.monotonic()
        wanted = f"{changes} changes exactly once in the files"
        result = wait_for(lambda: (r := verify(config, load.history)).ok and r, 300, wanted,
                          interval=2, not_yet=(AssertionError,))  # fmt: skip
        timings["changes in files"] = time.monotonic() - written
        assert result.duplicates == 0 and result.missing == 0
    return timings
