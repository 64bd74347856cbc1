"""The end-to-end suite (tests/e2e/suite.py) on the single-node Kubernetes built on this machine from
Debian's sources (tools/cluster): real kubelet-run pods of obflow's own images. A cluster already
up (``make cluster-up``) is used and left running; otherwise the test brings one up and takes it down
at the end, and checks that the host is as it was. Where the cluster cannot run, the test is skipped
naming each missing prerequisite and the command that provides it."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.suite import Cluster, dump_logs, run_pipeline_end_to_end
from tools.cluster import node

pytestmark = pytest.mark.slow
FIGURES = Path(os.environ.get("OBFLOW_E2E_FIGURES", "/tmp/obflow-e2e-figures.json"))
LOGS = Path("/tmp/obflow-e2e-logs")  # the pods' logs after a failed run


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[Cluster, bool]]:
    """The cluster, and whether this test brought it up."""
    was_up = node.is_up()
    if not was_up:
        missing = node.missing_prerequisites()
        if missing:
            pytest.skip("the single-node cluster needs: " + "; ".join(missing) + " (make cluster-up; docs/e2e.md)")
        started = time.monotonic()
        node.up()
        print(f"cluster up in {time.monotonic() - started:.0f}s")
    try:
        yield (
            Cluster(
                kubeconfig=node.KUBECONFIG,
                load_images=lambda images: print(node.load_images(images)),
                node_data_dir=node.DATA_DIR,
                node_storage_path=str(node.DATA_DIR),
                routable=True,
                crash_container=node.crash,
            ),
            not was_up,
        )
    finally:
        if not was_up and node.is_up():
            node.down()


@pytest.mark.timeout(3600)  # image builds when the sources changed, then about fifteen minutes of scenarios
def test_pipeline_survives_failures_and_changes_exactly_once_R4_1_R4_3_R4_5_R5_3_R5_7_R6_3_R6_6(
    cluster: tuple[Cluster, bool],
) -> None:
    try:
        figures = run_pipeline_end_to_end(cluster[0], "obflow-e2e")
    except BaseException:
        dump_logs(cluster[0], "obflow-e2e", LOGS)
        print(f"the pods' logs and the events are in {LOGS}")
        raise
    FIGURES.write_text(json.dumps(figures, indent=1))
    for name, value in figures.items():
        print(f"{name:70} {value:8.1f}")


def test_cluster_down_leaves_the_host_as_it_found_it(cluster: tuple[Cluster, bool]) -> None:
    if not cluster[1]:
        pytest.skip("the cluster was up before the tests (make cluster-up): it is left running")
    started = time.monotonic()
    problems = node.down()
    print(f"cluster down in {time.monotonic() - started:.0f}s")
    assert problems == []
    assert not node.leftover_processes()
