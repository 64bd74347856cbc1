"""Operator reconcile latency against a real kube-apiserver, compared with applying the same manifests
directly in the same run.

    python -m benchmarks.operator_reconcile [--pipelines 10]

- create: ``DataPipeline`` created → every child exists and status is Deploying (observed by polling
  the status every 20 ms, so figures carry up to 20 ms of polling granularity);
- update: ``capture.pollInterval`` changed → the capture ConfigMap holds the new value and status has
  ``observedGeneration`` 2;
- baseline: the same 12 manifests server-side-applied one by one by a client (what ``kubectl apply``
  of the rendered children costs), so the ratio says what the operator adds: watch delay, kopf's
  bookkeeping, reading each child first, status and Events.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from kubernetes import config as kube_config
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import NotFoundError

from benchmarks.common import machine
from obflow.net import free_port
from obflow_operator.builders import MANAGED_BY, BuildOptions, Owner, build_children
from obflow_operator.crd import crd_manifest
from obflow_operator.validation import parse_spec
from tools.cluster.controlplane import ControlPlane

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "datapipeline-minimal.yaml"
NAMESPACE = "bench"
POLL = 0.02


def wait(predicate: Any, timeout: float = 60) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        try:
            if predicate():
                return time.monotonic() - start
        except NotFoundError:
            pass
        time.sleep(POLL)
    raise TimeoutError("the operator did not converge within 60 s")


def through_operator(pipelines: Any, config_maps: Any, template: dict[str, Any], name: str) -> tuple[float, float]:
    """Seconds from create to children + Deploying, and from a capture change to it being applied."""

    def status() -> dict[str, Any]:
        found: dict[str, Any] = pipelines.get(name=name, namespace=NAMESPACE).to_dict()
        return found.get("status") or {}

    def updated() -> bool:
        data = config_maps.get(name=f"{name}-capture-env", namespace=NAMESPACE).data
        return bool(data["OBFLOW_CAPTURE__POLL_INTERVAL"] == "1s" and status().get("observedGeneration") == 2)

    started = time.monotonic()
    pipelines.create(body={**template, "metadata": {"name": name, "namespace": NAMESPACE}}, namespace=NAMESPACE)
    wait(lambda: status().get("phase") == "Deploying")
    create = time.monotonic() - started
    started = time.monotonic()
    change = {"spec": {"capture": {"pollInterval": "1s"}}}
    pipelines.patch(name=name, namespace=NAMESPACE, body=change, content_type="application/merge-patch+json")
    wait(updated)
    return create, time.monotonic() - started


def applied_directly(api: DynamicClient, template: dict[str, Any], name: str) -> float:
    """Seconds to server-side-apply the pipeline's 12 children one by one, as a client would."""
    owner = Owner(name, NAMESPACE, "00000000-0000-0000-0000-000000000000")
    children = build_children(owner, parse_spec(template["spec"]), BuildOptions(pdb_api_version="policy/v1beta1"))
    started = time.monotonic()
    for child in children:
        child["metadata"].pop("ownerReferences")
        resource = api.resources.get(api_version=child["apiVersion"], kind=child["kind"])
        api.server_side_apply(resource, body=child, namespace=NAMESPACE, field_manager=MANAGED_BY, force_conflicts=True)
    return time.monotonic() - started


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pipelines", type=int, default=10)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="obflow-bench-kube-") as tmp:
        plane = ControlPlane(Path(tmp)).start()
        operator = None
        try:
            api = DynamicClient(kube_config.new_client_from_config(config_file=str(plane.kubeconfig)))
            api.resources.get(api_version="apiextensions.k8s.io/v1", kind="CustomResourceDefinition").create(
                body=crd_manifest()
            )
            api.resources.get(api_version="v1", kind="Namespace").create(
                body={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
            )
            time.sleep(2)  # the CRD becomes established
            api.resources.invalidate_cache()
            pipelines = api.resources.get(api_version="obflow.io/v1alpha1", kind="DataPipeline")
            config_maps = api.resources.get(api_version="v1", kind="ConfigMap")
            env = {**os.environ, "KUBECONFIG": str(plane.kubeconfig)}
            command = [sys.executable, "-m", "obflow.cli", "operator", "run", "--namespace", NAMESPACE]
            command += ["--metrics-port", "0", "--liveness-port", str(free_port())]
            command += ["--flink-rest-url", "http://127.0.0.1:1", "--log-level", "WARNING"]
            operator = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
            time.sleep(3)

            template = yaml.safe_load(EXAMPLE.read_text())
            creates, updates, direct = [], [], []
            for number in range(args.pipelines):
                create, update = through_operator(pipelines, config_maps, template, f"p{number}")
                creates.append(create)
                updates.append(update)
                direct.append(applied_directly(api, template, f"d{number}"))
        finally:
            if operator is not None:
                operator.terminate()
                operator.wait(20)
            plane.stop()

    def row(label: str, values: list[float]) -> str:
        ordered = sorted(values)
        p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
        return f"| {label} | {statistics.median(values) * 1000:.0f} | {p90 * 1000:.0f} | {max(values) * 1000:.0f} |"

    print(f"operator reconcile latency, {args.pipelines} pipelines, real kube-apiserver 1.20 on loopback")
    print(f"machine: {machine()}")
    print("| step | median ms | p90 ms | max ms |")
    print("|---|---|---|---|")
    print(row("baseline: apply the 12 children directly", direct))
    print(row("create → 12 children + status Deploying", creates))
    print(row("spec change → capture ConfigMap + status", updates))
    ratio = statistics.median(creates) / statistics.median(direct)
    print(f"\ncreate through the operator / direct apply (median): {ratio:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
