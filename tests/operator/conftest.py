"""Fixtures for operator tests against a real kube-apiserver (+ controller-manager) on loopback."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.apiserver import control_plane, kube, namespace, wait_for
from tests.support.operator_process import OperatorProcess
from tools.cluster.controlplane import ControlPlane

__all__ = ["control_plane", "kube", "namespace", "start_operator"]

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
