"""The operator against a real kube-apiserver and controller-manager (built from Debian's sources and
started on loopback; see tools/cluster/controlplane.py). No kubelet runs, so Pods stay Pending; where a
test needs a running job it uses tests/support/fake_jobmanager.py, a documented stand-in."""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import NotFoundError, UnprocessibleEntityError

from obflow import faults
from obflow_operator.apply import CHILD_APPLIED, patch_status
from obflow_operator.handlers import FINALIZER
from tests.support.apiserver import wait_for
from tests.support.children import existing_children, expected_children, get_pipeline, pipelines, status_of
from tests.support.fake_jobmanager import JOB_ID, FakeJobManager
from tests.support.operator_process import OperatorProcess, pipeline_manifest
from tests.support.pipelines import FULL, MINIMAL
from tools.cluster.controlplane import ControlPlane

pytestmark = pytest.mark.slow

StartOperator = Callable[..., OperatorProcess]


def wait_phase(kube: DynamicClient, namespace: str, name: str, phase: str, timeout: float = 40) -> dict[str, Any]:
    status: dict[str, Any] = wait_for(
        lambda: (s := status_of(kube, namespace, name)).get("phase") == phase and s,
        timeout,
        f"{name} to be {phase}",
    )
    return status


def wait_reconciled(kube: DynamicClient, namespace: str, name: str, generation: int) -> dict[str, Any]:
    """The status once the reconcile of ``generation`` has finished (its Events are posted by then)."""
    status: dict[str, Any] = wait_for(
        lambda: (s := status_of(kube, namespace, name)).get("observedGeneration") == generation and s,
        40,
        f"{name} generation {generation} reconciled",
    )
    return status


def wait_observed(kube: DynamicClient, namespace: str, name: str) -> None:
    """Until the observer has looked at the pipeline once (it sets the JobRunning condition)."""
    wait_for(
        lambda: any(c["type"] == "JobRunning" for c in status_of(kube, namespace, name)["conditions"]),
        30,
        "a round of the observer",
    )


def patch_spec(kube: DynamicClient, namespace: str, name: str, changes: dict[str, Any]) -> None:
    body = {"spec": changes}
    pipelines(kube).patch(name=name, namespace=namespace, body=body, content_type="application/merge-patch+json")


def events_of(kube: DynamicClient, namespace: str, name: str) -> list[dict[str, Any]]:
    found = kube.resources.get(api_version="v1", kind="Event").get(
        namespace=namespace, field_selector=f"involvedObject.name={name}"
    )
    return [e.to_dict() for e in found.items]


def reasons(kube: DynamicClient, namespace: str, name: str) -> list[str]:
    return [e["reason"] for e in events_of(kube, namespace, name)]


def kubectl(plane: ControlPlane, *args: str) -> str:
    result = subprocess.run(
        ["kubectl", "--kubeconfig", str(plane.kubeconfig), *args], capture_output=True, text=True, check=True
    )
    return result.stdout


@pytest.fixture
def fake_jobmanager() -> Iterator[FakeJobManager]:
    fake = FakeJobManager()
    yield fake
    fake.close()


def test_the_crd_rejects_bad_specs_with_the_schemas_message(kube: DynamicClient, namespace: str) -> None:
    bad = pipeline_manifest(FULL, namespace)
    bad["spec"]["datahub"]["shards"] = 0
    bad["spec"]["output"]["format"] = "avro"
    bad["spec"]["flink"]["jobManager"]["resources"]["memory"] = "lots"
    bad["spec"]["flink"]["checkpoint"]["interval"] = "every now and then"
    with pytest.raises(UnprocessibleEntityError) as caught:
        pipelines(kube).create(body=bad, namespace=namespace)
    message = caught.value.body if isinstance(caught.value.body, str) else caught.value.body.decode()
    assert "spec.datahub.shards in body should be greater than or equal to 1" in message
    assert 'spec.output.format: Unsupported value: \\"avro\\"' in message
    assert "spec.flink.jobManager.resources.memory in body should match" in message
    assert "spec.flink.checkpoint.interval in body should match" in message
    missing = pipeline_manifest(MINIMAL, namespace)
    del missing["spec"]["datahub"]
    with pytest.raises(UnprocessibleEntityError, match=r"spec.datahub: Required value"):
        pipelines(kube).create(body=missing, namespace=namespace)


def test_a_pipeline_creates_every_child_owned_by_it_and_reports_its_status_R5_1_R5_2_R7_8(
    kube: DynamicClient, namespace: str, start_operator: StartOperator, control_plane: ControlPlane
) -> None:
    operator = start_operator()
    manifest = pipeline_manifest(MINIMAL, namespace)
    pipelines(kube).create(body=manifest, namespace=namespace)

    status = wait_phase(kube, namespace, "trade", "Deploying")
    uid = get_pipeline(kube, namespace, "trade")["metadata"]["uid"]
    children = existing_children(kube, manifest)
    assert len(children) == len(expected_children(manifest)) == 12
    for key, child in children.items():
        assert [r["uid"] for r in child["metadata"]["ownerReferences"]] == [uid], key
    assert children["Deployment/trade-jobmanager"]["spec"]["replicas"] == 2
    assert status["observedGeneration"] == 1
    assert status["parallelism"] == 2
    conditions = {c["type"]: c["status"] for c in status["conditions"]}
    assert conditions["SpecValid"] == "True" and conditions["ChildrenApplied"] == "True"
    assert conditions["DurableStorage"] == "False"  # no claim in the minimal example: said, not hidden
    assert {"Accepted", "Applied", "Deploying"} <= set(reasons(kube, namespace, "trade"))

    # the real controller-manager acts on what the operator made
    replica_sets = kube.resources.get(api_version="apps/v1", kind="ReplicaSet")
    wait_for(
        lambda: replica_sets.get(namespace=namespace, label_selector="app.kubernetes.io/component=jobmanager").items,
        30,
        "the JobManager ReplicaSet",
    )
    table = kubectl(control_plane, "get", "dp", "-n", namespace)
    assert table.split("\n")[0].split() == [
        "NAME",
        "PHASE",
        "PARALLELISM",
        "TASKMANAGERS",
        "LAG",
        "LAST-SAVEPOINT",
        "AGE",
    ]
    assert table.split("\n")[1].split()[:3] == ["trade", "Deploying", "2"]

    wait_observed(kube, namespace, "trade")  # no JobManager can run here, and the status says so
    metrics = operator.metrics()
    assert 'obflow_operator_reconciles_total{result="ok"}' in metrics
    assert 'obflow_operator_pipelines{phase="Deploying"} 1.0' in metrics
    assert f'obflow_operator_pipeline_phase{{phase="Deploying",pipeline="{namespace}/trade"}} 1.0' in metrics


def test_an_invalid_spec_is_a_permanent_error_naming_the_field_and_the_fix(
    kube: DynamicClient, namespace: str, start_operator: StartOperator, control_plane: ControlPlane
) -> None:
    start_operator()
    manifest = pipeline_manifest(FULL, namespace)
    manifest["spec"]["flink"]["parallelism"] = 40  # the schema allows it; 16 TaskManagers x 2 slots do not
    pipelines(kube).create(body=manifest, namespace=namespace)

    status = wait_phase(kube, namespace, "orders", "Failed")
    problem = "spec.flink.parallelism: 40 needs 20 TaskManagers of 2 slots, more than taskManager.maxReplicas (16)"
    assert problem in status["message"]
    warnings = [e for e in events_of(kube, namespace, "orders") if e["type"] == "Warning"]
    assert any(e["reason"] == "InvalidSpec" and problem in e["message"] for e in warnings)
    assert "raise maxReplicas or slots" in kubectl(control_plane, "describe", "dp", "orders", "-n", namespace)
    assert existing_children(kube, pipeline_manifest(FULL, namespace)) == {}  # nothing built from a bad spec

    patch_spec(kube, namespace, "orders", {"flink": {"parallelism": 8}})
    status = wait_phase(kube, namespace, "orders", "Deploying")
    assert status["observedGeneration"] == 2


def test_a_missing_secret_is_named_until_it_exists(
    kube: DynamicClient, namespace: str, start_operator: StartOperator
) -> None:
    start_operator()
    pipelines(kube).create(body=pipeline_manifest(MINIMAL, namespace), namespace=namespace)
    wait_phase(kube, namespace, "trade", "Deploying")
    condition = next(c for c in status_of(kube, namespace, "trade")["conditions"] if c["type"] == "CredentialsFound")
    assert condition["status"] == "False"
    assert condition["message"] == (
        "spec.datahub.credentials.accessId, spec.datahub.credentials.accessKey: Secret trade-datahub not found in "
        f"namespace {namespace}; create it: kubectl create secret generic trade-datahub -n {namespace} "
        "--from-literal=access-id=... --from-literal=access-key=...; "
        f"spec.source.credentials.password: Secret trade-db not found in namespace {namespace}; create it: "
        f"kubectl create secret generic trade-db -n {namespace} --from-literal=password=..."
    )
    wait_observed(kube, namespace, "trade")
    assert reasons(kube, namespace, "trade").count("SecretMissing") == 1  # said once, not every round

    secrets = kube.resources.get(api_version="v1", kind="Secret")
    for name, keys in (("trade-db", ["password"]), ("trade-datahub", ["access-id", "access-key"])):
        data = {key: "c2VjcmV0" for key in keys}
        body = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "data": data}
        secrets.create(body=body, namespace=namespace)

    def credentials_found() -> bool:
        conditions = status_of(kube, namespace, "trade")["conditions"]
        return any(c["type"] == "CredentialsFound" and c["status"] == "True" for c in conditions)

    wait_for(credentials_found, 30, "the observer to see the Secrets")
    # the observer writes the status, then posts the round's Events
    wait_for(lambda: "SecretFound" in reasons(kube, namespace, "trade"), 10, "the SecretFound Event")


def _versions(children: dict[str, dict[str, Any]]) -> dict[str, Any]:
    # generation moves only with the spec (status updates by controllers do not count)
    return {k: c["metadata"].get("generation") or c["metadata"]["resourceVersion"] for k, c in children.items()}


def test_a_spec_change_updates_exactly_the_children_it_affects(
    kube: DynamicClient, namespace: str, start_operator: StartOperator
) -> None:
    start_operator()
    manifest = pipeline_manifest(FULL, namespace)
    pipelines(kube).create(body=manifest, namespace=namespace)
    wait_phase(kube, namespace, "orders", "Deploying")
    before = _versions(existing_children(kube, manifest))

    patch_spec(kube, namespace, "orders", {"capture": {"pollInterval": "1s"}})
    wait_reconciled(kube, namespace, "orders", 2)
    after = _versions(existing_children(kube, manifest))
    assert {k for k in after if after[k] != before[k]} == {"ConfigMap/orders-capture-env", "Deployment/orders-capture"}
    capture_env = existing_children(kube, manifest)["ConfigMap/orders-capture-env"]["data"]
    assert capture_env["OBFLOW_CAPTURE__POLL_INTERVAL"] == "1s"
    assert "Redeploying" not in reasons(kube, namespace, "orders")


def _kinds(kube: DynamicClient, namespace: str, api_version: str, kind: str) -> list[str]:
    found = kube.resources.get(api_version=api_version, kind=kind).get(namespace=namespace).to_dict()["items"]
    return sorted(item["metadata"]["name"] for item in found)


def test_network_policies_are_applied_with_the_setting_and_deleted_without_it(
    kube: DynamicClient, namespace: str, start_operator: StartOperator
) -> None:
    """The real API server takes the NetworkPolicies (it cannot enforce them here: no network plugin);
    children the builders no longer make are deleted, a JobManager budget with one JobManager too."""
    settings = json.dumps({"operatorNamespace": "obflow-system", "operatorLabels": {"app": "obflow-operator"}})
    operator = start_operator(args=("--network-policies", settings))
    manifest = pipeline_manifest(MINIMAL, namespace)
    pipelines(kube).create(body=manifest, namespace=namespace)
    wait_phase(kube, namespace, "trade", "Deploying")
    policies = ["trade-capture", "trade-jobmanager", "trade-taskmanager"]
    assert _kinds(kube, namespace, "networking.k8s.io/v1", "NetworkPolicy") == policies
    assert len(existing_children(kube, manifest)) == 12  # the other children as without policies

    operator.stop()
    start_operator()  # resumes the pipeline without the setting
    wait_for(lambda: not _kinds(kube, namespace, "networking.k8s.io/v1", "NetworkPolicy"), 30, "policies deleted")
    # the reconcile deletes, then writes the status, then posts its Events
    wait_for(
        lambda: any(
            "deleted NetworkPolicy/trade-capture" in e.get("message", "") for e in events_of(kube, namespace, "trade")
        ),
        10,
        "the Applied Event naming the deleted policy",
    )

    patch_spec(kube, namespace, "trade", {"flink": {"jobManager": {"replicas": 1}}})
    wait_reconciled(kube, namespace, "trade", 2)
    assert _kinds(kube, namespace, "policy/v1beta1", "PodDisruptionBudget") == ["trade-taskmanager"]


def test_suspend_stops_the_job_with_a_savepoint_and_resume_restores_from_it(
    kube: DynamicClient, namespace: str, start_operator: StartOperator, fake_jobmanager: FakeJobManager
) -> None:
    start_operator(rest_url=fake_jobmanager.url)
    manifest = pipeline_manifest(MINIMAL, namespace)
    pipelines(kube).create(body=manifest, namespace=namespace)
    status = wait_phase(kube, namespace, "trade", "Running")
    assert status["jobId"] == JOB_ID and status["lastCheckpoint"]
    first_job_id = job_id_in(existing_children(kube, manifest))

    patch_spec(kube, namespace, "trade", {"suspend": True})
    status = wait_phase(kube, namespace, "trade", "Suspended")
    assert fake_jobmanager.stop_requests == [{"targetDirectory": "file:///data/trade/savepoints", "drain": False}]
    savepoint = status["lastSavepoint"]["path"]
    assert status["lastSavepoint"]["reason"] == "suspend" and status["restorePath"] == savepoint
    children = existing_children(kube, manifest)
    assert {k: c["spec"]["replicas"] for k, c in children.items() if k.startswith("Deployment/")} == {
        "Deployment/trade-jobmanager": 0,
        "Deployment/trade-taskmanager": 0,
        "Deployment/trade-capture": 0,
    }
    assert {"Suspending", "Savepoint", "Suspended"} <= set(reasons(kube, namespace, "trade"))

    patch_spec(kube, namespace, "trade", {"suspend": False})
    wait_phase(kube, namespace, "trade", "Deploying")
    children = existing_children(kube, manifest)
    assert children["Deployment/trade-jobmanager"]["spec"]["replicas"] == 2
    conf = yaml.safe_load(children["ConfigMap/trade-flink-config"]["data"]["config.yaml"])
    assert conf["execution.state-recovery.path"] == savepoint
    assert job_id_in(children) != first_job_id  # a new start, not the stopped job again


def running_pipeline(
    kube: DynamicClient,
    namespace: str,
    start_operator: StartOperator,
    fake: FakeJobManager,
    observe_interval: float = 10.0,
    **spec: Any,
) -> dict[str, Any]:
    """The minimal pipeline (with ``spec`` sections), Running as the stand-in JobManager reports, with
    its finalizer."""
    start_operator(rest_url=fake.url, observe_interval=observe_interval)
    manifest = pipeline_manifest(MINIMAL, namespace, **spec)
    pipelines(kube).create(body=manifest, namespace=namespace)
    wait_phase(kube, namespace, "trade", "Running")
    wait_for(
        lambda: FINALIZER in (get_pipeline(kube, namespace, "trade")["metadata"].get("finalizers") or []),
        30,
        "the final-savepoint finalizer on a running pipeline",
    )
    return manifest


def job_id_in(children: dict[str, dict[str, Any]]) -> str:
    conf = yaml.safe_load(children["ConfigMap/trade-flink-config"]["data"]["config.yaml"])
    return str(conf["$internal.pipeline.job-id"])


def _gone(kube: DynamicClient, namespace: str, manifest: dict[str, Any]) -> bool:
    try:
        get_pipeline(kube, namespace, manifest["metadata"]["name"])
    except NotFoundError:
        return True
    return False


def test_delete_takes_a_final_savepoint_then_children_are_garbage_collected(
    kube: DynamicClient, namespace: str, start_operator: StartOperator, fake_jobmanager: FakeJobManager
) -> None:
    manifest = running_pipeline(kube, namespace, start_operator, fake_jobmanager)

    pipelines(kube).delete(name="trade", namespace=namespace)
    wait_for(lambda: _gone(kube, namespace, manifest), 60, "the pipeline to be deleted")
    assert len(fake_jobmanager.stop_requests) == 1
    assert {"Deleting", "FinalSavepoint"} <= set(reasons(kube, namespace, "trade"))
    wait_for(lambda: not existing_children(kube, manifest), 60, "the controller-manager to collect every child")


def test_deletion_never_hangs_when_the_job_is_gone(
    kube: DynamicClient, namespace: str, start_operator: StartOperator, fake_jobmanager: FakeJobManager
) -> None:
    manifest = running_pipeline(kube, namespace, start_operator, fake_jobmanager)
    fake_jobmanager.close()  # the JobManager disappears before the user deletes

    pipelines(kube).delete(name="trade", namespace=namespace)
    wait_for(lambda: _gone(kube, namespace, manifest), 30, "the pipeline to be deleted without its job")
    failed = [e["message"] for e in events_of(kube, namespace, "trade") if e["reason"] == "FinalSavepointFailed"]
    assert failed and "restore from retained checkpoint file:///c/chk-7" in failed[0], failed
    assert "retained checkpoints stay in file:///data/trade/checkpoints" in failed[0]


def test_a_jobmanager_in_trouble_keeps_the_final_savepoint_R4_1(
    kube: DynamicClient, namespace: str, start_operator: StartOperator, fake_jobmanager: FakeJobManager
) -> None:
    """A JobManager answering 503 (a leader election, an overloaded one) says nothing about the job: the
    status keeps the job RUNNING with the JobRunning condition Unknown, the finalizer stays, and a
    deletion meanwhile waits for it to answer and takes the final savepoint."""
    manifest = running_pipeline(kube, namespace, start_operator, fake_jobmanager, observe_interval=1)
    fake_jobmanager.overview_error = 503

    def job_running_unknown() -> dict[str, Any] | None:
        conditions = {c["type"]: c for c in status_of(kube, namespace, "trade").get("conditions", [])}
        condition = conditions.get("JobRunning", {})
        return condition if condition.get("status") == "Unknown" else None

    condition = wait_for(job_running_unknown, 30, "the JobRunning condition Unknown")
    assert condition["reason"] == "JobManagerNotAnswering" and "job last seen RUNNING" in condition["message"]
    status = status_of(kube, namespace, "trade")
    assert status["jobState"] == "RUNNING" and status["lastCheckpointPath"] == "file:///c/chk-7"
    assert FINALIZER in (get_pipeline(kube, namespace, "trade")["metadata"].get("finalizers") or [])

    pipelines(kube).delete(name="trade", namespace=namespace)
    threading.Timer(5, lambda: setattr(fake_jobmanager, "overview_error", None)).start()
    wait_for(lambda: _gone(kube, namespace, manifest), 60, "the pipeline to be deleted")
    assert len(fake_jobmanager.stop_requests) == 1
    assert "FinalSavepoint" in reasons(kube, namespace, "trade")


def test_a_pipeline_without_a_running_job_is_deleted_even_with_the_operator_down(
    kube: DynamicClient, namespace: str, start_operator: StartOperator
) -> None:
    operator = start_operator()
    manifest = pipeline_manifest(MINIMAL, namespace)
    pipelines(kube).create(body=manifest, namespace=namespace)
    wait_phase(kube, namespace, "trade", "Deploying")
    assert not get_pipeline(kube, namespace, "trade")["metadata"].get("finalizers")
    operator.stop()

    pipelines(kube).delete(name="trade", namespace=namespace)
    wait_for(lambda: _gone(kube, namespace, manifest), 10, "the pipeline to be deleted with no operator")
    wait_for(lambda: not existing_children(kube, manifest), 60, "the controller-manager to collect every child")


def test_the_operator_restarted_mid_reconcile_converges(
    kube: DynamicClient, namespace: str, start_operator: StartOperator, tmp_path: Path
) -> None:
    crashing = start_operator(wait=False, **{faults.ENV: f"{CHILD_APPLIED}:crash:{tmp_path / 'crashed'}:4"})
    manifest = pipeline_manifest(MINIMAL, namespace)
    pipelines(kube).create(body=manifest, namespace=namespace)
    assert crashing.process.wait(60) == 137
    assert len(existing_children(kube, manifest)) == 4  # a reconcile cut short

    start_operator()
    status = wait_phase(kube, namespace, "trade", "Deploying")
    assert len(existing_children(kube, manifest)) == 12
    assert status["observedGeneration"] == 1


def test_the_observer_never_overwrites_a_newer_status(
    kube: DynamicClient, namespace: str, start_operator: StartOperator
) -> None:
    start_operator()
    pipelines(kube).create(body=pipeline_manifest(MINIMAL, namespace), namespace=namespace)
    wait_phase(kube, namespace, "trade", "Deploying")
    stale = get_pipeline(kube, namespace, "trade")
    patch_spec(kube, namespace, "trade", {"suspend": True})
    wait_phase(kube, namespace, "trade", "Suspended")

    assert patch_status(kube, stale["metadata"], {"phase": "Running"}, only_over_version=True) is False
    assert status_of(kube, namespace, "trade")["phase"] == "Suspended"


def test_a_parallelism_change_of_a_running_job_goes_through_a_savepoint_R6_3(
    kube: DynamicClient, namespace: str, start_operator: StartOperator, fake_jobmanager: FakeJobManager
) -> None:
    manifest = running_pipeline(kube, namespace, start_operator, fake_jobmanager)
    first_job_id = job_id_in(existing_children(kube, manifest))
    patch_spec(kube, namespace, "trade", {"capture": {"batchSize": 500}})  # capture only: the job is left alone
    wait_reconciled(kube, namespace, "trade", 2)
    assert fake_jobmanager.stop_requests == [] and status_of(kube, namespace, "trade")["phase"] == "Running"

    patch_spec(kube, namespace, "trade", {"flink": {"parallelism": 4}})
    status = wait_reconciled(kube, namespace, "trade", 3)
    assert status["phase"] == "Rescaling"
    assert len(fake_jobmanager.stop_requests) == 1
    assert status["lastSavepoint"]["reason"] == "rescale"
    assert status["restorePath"] == status["lastSavepoint"]["path"] and status["jobGeneration"] == 1
    children = existing_children(kube, manifest)
    conf = yaml.safe_load(children["ConfigMap/trade-flink-config"]["data"]["config.yaml"])
    assert conf["parallelism.default"] == "4" and conf["execution.state-recovery.path"] == status["restorePath"]
    assert job_id_in(children) != first_job_id
    assert children["Deployment/trade-taskmanager"]["spec"]["replicas"] == 2
    assert "flink.parallelism changed: savepoint upgrade" in status["message"]

    fake_jobmanager.state = "RUNNING"  # the redeployed JobManager runs the job from the savepoint, ...
    wait_for(lambda: status_of(kube, namespace, "trade").get("jobState") == "RUNNING", 30, "the job seen running")
    assert status_of(kube, namespace, "trade")["phase"] == "Rescaling"  # ... but not yet at parallelism 4
    fake_jobmanager.parallelism = 4
    status = wait_phase(kube, namespace, "trade", "Running")
    assert "every vertex at parallelism 4, processing" in status["message"]


def test_a_failed_savepoint_falls_back_to_the_latest_checkpoint_never_to_empty_state(
    kube: DynamicClient, namespace: str, start_operator: StartOperator, fake_jobmanager: FakeJobManager
) -> None:
    running_pipeline(kube, namespace, start_operator, fake_jobmanager)
    fake_jobmanager.fail_savepoint = True
    patch_spec(kube, namespace, "trade", {"flink": {"checkpoint": {"interval": "1m"}}})
    status = wait_reconciled(kube, namespace, "trade", 2)
    assert status["phase"] == "Upgrading"
    assert fake_jobmanager.cancel_requests == 1
    assert status["restorePath"] == "file:///c/chk-7"  # the newest retained checkpoint
    failed = [e["message"] for e in events_of(kube, namespace, "trade") if e["reason"] == "SavepointFailed"]
    assert failed and "falling back to the latest checkpoint" in failed[0]
    assert "restarting from checkpoint file:///c/chk-7" in [
        e["message"] for e in events_of(kube, namespace, "trade") if e["reason"] == "JobStopped"
    ]


def test_a_rescale_that_does_not_run_in_time_is_rolled_back_to_the_last_stable_spec(
    kube: DynamicClient,
    namespace: str,
    start_operator: StartOperator,
    fake_jobmanager: FakeJobManager,
    control_plane: ControlPlane,
) -> None:
    flink = {"rolloutTimeout": "3s"}
    manifest = running_pipeline(kube, namespace, start_operator, fake_jobmanager, 1.0, flink=flink)
    patch_spec(kube, namespace, "trade", {"flink": {"parallelism": 4}})
    wait_phase(kube, namespace, "trade", "Rescaling")
    fake_jobmanager.state = "RUNNING"  # the new job runs, but never at parallelism 4 (no slots, say)

    status = wait_phase(kube, namespace, "trade", "Deploying", timeout=30)
    assert len(fake_jobmanager.stop_requests) == 2  # the rescale's savepoint, then the rollback's
    assert status["parallelism"] == 2 and status["jobGeneration"] == 2
    assert '"parallelism": 4' in status["rolledBackSpec"]

    def rolled_back_event() -> bool:  # posted after the status is written: wait for it
        rolled_back = [e["message"] for e in events_of(kube, namespace, "trade") if e["reason"] == "RolledBack"]
        return any("did not run within flink.rolloutTimeout (3s)" in m and "not every vertex RUNNING at 4" in m
                   for m in rolled_back)  # fmt: skip

    wait_for(rolled_back_event, 15, "the RolledBack Event")
    children = existing_children(kube, manifest)
    conf = yaml.safe_load(children["ConfigMap/trade-flink-config"]["data"]["config.yaml"])
    assert conf["parallelism.default"] == "2" and conf["execution.state-recovery.path"] == status["restorePath"]
    assert status["restorePath"] == status["lastSavepoint"]["path"] and status["lastSavepoint"]["reason"] == "rollback"
    fake_jobmanager.state = "RUNNING"
    wait_phase(kube, namespace, "trade", "Running")
    assert "RolledBack" in kubectl(control_plane, "describe", "dp", "trade", "-n", namespace)

    # an operator restart does not apply the rolled-back spec again
    stop_requests = len(fake_jobmanager.stop_requests)
    start_operator(rest_url=fake_jobmanager.url)
    wait_for(lambda: "stays unapplied" in status_of(kube, namespace, "trade")["message"], 30, "the held-back note")
    assert status_of(kube, namespace, "trade")["parallelism"] == 2
    assert len(fake_jobmanager.stop_requests) == stop_requests


def test_an_in_place_rescale_keeps_the_flink_pods_and_the_job_R6_6(
    kube: DynamicClient, namespace: str, start_operator: StartOperator, fake_jobmanager: FakeJobManager
) -> None:
    manifest = running_pipeline(kube, namespace, start_operator, fake_jobmanager, 1.0, flink={"inPlaceRescale": True})

    def pod_hashes() -> tuple[str, str]:
        children = existing_children(kube, manifest)
        return tuple(
            children[f"Deployment/trade-{c}"]["spec"]["template"]["metadata"]["annotations"]["obflow.io/config-hash"]
            for c in ("jobmanager", "taskmanager")
        )

    before = pod_hashes()
    conf = yaml.safe_load(existing_children(kube, manifest)["ConfigMap/trade-flink-config"]["data"]["config.yaml"])
    assert conf["jobmanager.scheduler"] == "adaptive"
    patch_spec(kube, namespace, "trade", {"flink": {"parallelism": 4, "inPlaceRescale": True}})
    assert wait_reconciled(kube, namespace, "trade", 2)["phase"] == "Rescaling"
    status = wait_for(
        lambda: "every vertex at parallelism 4" in ((s := status_of(kube, namespace, "trade"))["message"] or "") and s,
        30,
        "the job running at 4",
    )
    assert status["phase"] == "Running"
    assert fake_jobmanager.stop_requests == [] and status["jobGeneration"] == 0  # the same job, never stopped
    bounds = {vertex: r["parallelism"]["upperBound"] for vertex, r in fake_jobmanager.rescale_requests[0].items()}
    assert bounds == {"v0": 1, "v1": 4}  # the ticker keeps its one subtask
    assert pod_hashes() == before  # no Flink pod restarts ...
    children = existing_children(kube, manifest)
    assert children["Deployment/trade-taskmanager"]["spec"]["replicas"] == 2  # ... TaskManagers for 4 slots
    conf = yaml.safe_load(children["ConfigMap/trade-flink-config"]["data"]["config.yaml"])
    assert conf["parallelism.default"] == "4"  # what a later start runs at

    patch_spec(kube, namespace, "trade", {"capture": {"batchSize": 500}})  # another change later
    wait_reconciled(kube, namespace, "trade", 3)
    assert pod_hashes() == before
    assert "RescaleInPlace" in reasons(kube, namespace, "trade")


def test_the_autoscaler_scales_a_busy_job_up_and_says_why_with_its_numbers_R5_4_R5_6_R6_2(
    kube: DynamicClient, namespace: str, start_operator: StartOperator, fake_jobmanager: FakeJobManager
) -> None:
    fake_jobmanager.busy_ms_per_second = 950.0  # 2 subtasks 95 % busy reading 1,000 rec/s each
    fake_jobmanager.records_in_per_second = 1000.0
    fake_jobmanager.lag_ms = 3000.0
    autoscaler = {"enabled": True, "stabilizationWindow": "6s", "maxParallelism": 16}
    operator = start_operator(rest_url=fake_jobmanager.url, observe_interval=1.0)
    pipelines(kube).create(body=pipeline_manifest(MINIMAL, namespace, autoscaler=autoscaler), namespace=namespace)

    status = wait_for(
        lambda: (s := status_of(kube, namespace, "trade")).get("parallelism") == 3 and s, 40, "the autoscaler's rescale"
    )
    assert status["phase"] == "Rescaling" and status["autoscaler"]["parallelism"] == 3
    assert status["lastSavepoint"]["reason"] == "rescale"  # scale changes go through a savepoint (R6.7)

    # 2,000 rec/s at 95 % busy: 1,053 rec/s per busy subtask; 2,000 + 3 s of lag over 5 min at 70 % -> 2.74
    def decision_event() -> bool:
        decisions = [e["message"] for e in events_of(kube, namespace, "trade") if e["reason"] == "Autoscaler"]
        return any(m.startswith("scale up: 2000 rec/s incoming") and "true_rate_per_subtask=1052.63" in m
                   and "busy_ratio=0.95" in m and "target_parallelism=3" in m for m in decisions)  # fmt: skip

    # the operator writes the status first and posts the Event after it: wait for it, do not read once
    wait_for(decision_event, 15, "the autoscaler's decision Event with its numbers")
    high = next(c for c in status["conditions"] if c["type"] == "HighLoad")
    assert high["status"] == "True" and "95% busy" in high["message"] and "above alerts.load 80%" in high["message"]
    assert status["lag"] == "3s"
    assert "HighLoad" in reasons(kube, namespace, "trade")
    assert f'obflow_operator_pipeline_high_load{{pipeline="{namespace}/trade"}} 1.0' in operator.metrics()

    fake_jobmanager.busy_ms_per_second = 650.0
    fake_jobmanager.parallelism, fake_jobmanager.state = 3, "RUNNING"
    status = wait_phase(kube, namespace, "trade", "Running")
    assert "every vertex at parallelism 3" in status["message"]
    wait_for(
        lambda: any(c["type"] == "HighLoad" and c["status"] == "False"
                    for c in status_of(kube, namespace, "trade")["conditions"]),
        20,
        "the load back under the threshold",
    )  # fmt: skip


def test_the_autoscaler_scales_an_idle_job_down_only_through_a_savepoint_R5_4_R6_7(
    kube: DynamicClient, namespace: str, start_operator: StartOperator, fake_jobmanager: FakeJobManager
) -> None:
    fake_jobmanager.parallelism, fake_jobmanager.busy_ms_per_second = 4, 60.0  # 4 subtasks, 6 % busy
    # a window of 6 observer rounds (the decision needs 80 % of it covered by samples)
    autoscaler = {"enabled": True, "stabilizationWindow": "6s", "scaleDownDelay": "3s"}
    manifest = running_pipeline(
        kube, namespace, start_operator, fake_jobmanager, 1.0, autoscaler=autoscaler, flink={"parallelism": 4}
    )
    assert existing_children(kube, manifest)["Deployment/trade-taskmanager"]["spec"]["replicas"] == 2
    status = wait_for(
        lambda: (s := status_of(kube, namespace, "trade")).get("parallelism") == 1 and s, 40, "the scale-down"
    )
    # the job was stopped with a savepoint (its in-flight work in it) before a TaskManager went away
    assert len(fake_jobmanager.stop_requests) == 1 and status["lastSavepoint"]["reason"] == "rescale"
    assert existing_children(kube, manifest)["Deployment/trade-taskmanager"]["spec"]["replicas"] == 1
    decisions = [e["message"] for e in events_of(kube, namespace, "trade") if e["reason"] == "Autoscaler"]
    assert any(m.startswith("would scale down to 1; waiting") for m in decisions)
    assert any(m.startswith("scale down:") and "target_parallelism=1" in m for m in decisions)
