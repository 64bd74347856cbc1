"""``obflow operator run`` as a process of its own against a test API server, and DataPipeline manifests made
from the examples."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from obflow.net import free_port
from tools.cluster.controlplane import ControlPlane


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


def pipeline_manifest(path: Path, namespace: str, **spec_changes: Any) -> dict[str, Any]:
    manifest: dict[str, Any] = yaml.safe_load(path.read_text())
    manifest["metadata"]["namespace"] = namespace
    manifest["spec"].update(spec_changes)
    return manifest
