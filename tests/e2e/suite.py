"""The end-to-end suite on a real Kubernetes cluster: obflow's images loaded into it, the chart
installed (helm-python-sdk), the sample pipeline applied, changes written into the database all along,
and then, one after the other, the failures and changes a pipeline lives through — a TaskManager
killed, the leading JobManager killed, the capture pod killed, a capture setting changed, the
parallelism changed, the pipeline deleted — each timed, and at the end every change found exactly
once in the output files. It needs only a :class:`Cluster`: a kubeconfig, a way to load images into
the node, and where the pipelines' storage is on the node and on this machine. The single-node
cluster built here (tests/e2e/test_cluster.py) and kind (tests/e2e/test_kind.py) are two such."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from obflow.config import ObflowConfig
from obflow.net import free_port
from obflow_dev.loadgen import create_schema
from tests.support.apiserver import wait_for
from tests.support.helm import CHART
from tools.cluster.node import IMAGES

MANIFESTS = Path(__file__).with_name("manifests")
NODE_DATA_ON_HOST = Path("/tmp/obflow-kind")  # kind-config.yaml's extraMounts hostPath, for the suite on kind


NAME = "shop"  # the sample DataPipeline's name
LOAD_RATE = 20.0  # changes per second, written all through the scenarios
INSTANCE = f"app.kubernetes.io/instance={NAME}"
LEADER_ANNOTATION = "control-plane.alpha.kubernetes.io/leader"  # Flink's Kubernetes HA leader record
DB_PASSWORD = f"e2e-db-secret-{uuid.uuid4().hex}"
DATAHUB_ACCESS_KEY = f"e2e-datahub-secret-{uuid.uuid4().hex}"
"""The run's secrets: in the Secrets, the database's root password and the emulator's key; in no log."""


@dataclass
class Cluster:
    kubeconfig: Path
    load_images: Callable[[list[str]], object]
    node_data_dir: Path  # the pipelines' storage (the PersistentVolume) as this machine sees it
    node_storage_path: str = "/var/lib/obflow"  # the same directory as the node sees it (its hostPath)
    routable: bool = False  # pod and Service addresses reachable from here; else kubectl port-forward
    # SIGKILL a container by its status' containerID, as a crash would; None: pods are force-deleted
    crash_container: Callable[[str], None] | None = None


def kubectl(cluster: Cluster, *args: str, timeout: float = 120, stdin: str | None = None) -> str:
    result = subprocess.run(
        ["kubectl", "--kubeconfig", str(cluster.kubeconfig), *args],
        capture_output=True, text=True, check=False, timeout=timeout, input=stdin,
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


@contextlib.contextmanager
def reach(cluster: Cluster, namespace: str, target: str, port: int) -> Iterator[tuple[str, int]]:
    """Host and port of a pod's or Service's port (``pod/NAME`` or ``service/NAME``)."""
    if cluster.routable:
        field_path = "{.spec.clusterIP}" if target.startswith("service/") else "{.status.podIP}"
        yield kubectl(cluster, "-n", namespace, "get", target, "-o", f"jsonpath={field_path}"), port
        return
    with port_forward(cluster, namespace, target, port) as local:
        yield "127.0.0.1", local


def install_obflow(cluster: Cluster, namespace: str) -> None:
    import helm_python as helm

    config = helm.Config(kubeconfig_path=cluster.kubeconfig, namespace=namespace)
    values = {"image": {"pullPolicy": "Never"}, "watchNamespaces": [namespace]}
    config.install(CHART, "obflow", values, namespace=namespace, create_namespace=True, wait="watcher", timeout=180)


def backing_manifests(cluster: Cluster) -> str:
    """backing.yaml with the PersistentVolume on the cluster's storage directory and the run's secrets."""
    documents = list(yaml.safe_load_all((MANIFESTS / "backing.yaml").read_text()))
    secrets = {"e2e-db": {"password": DB_PASSWORD}, "e2e-datahub": {"access-key": DATAHUB_ACCESS_KEY}}
    for document in documents:
        if document["kind"] == "PersistentVolume":
            document["spec"]["hostPath"]["path"] = cluster.node_storage_path
        if document["kind"] == "Secret":
            document["stringData"].update(secrets[document["metadata"]["name"]])
    return yaml.safe_dump_all(documents)


def pipeline_config(db_host: str, db_port: int, node_data_dir: Path) -> ObflowConfig:
    """The pipeline's settings as seen from this machine: the database at the address given, the
    output where the pipelines' storage shows up here."""
    spec = yaml.safe_load((MANIFESTS / "pipeline.yaml").read_text())["spec"]
    return ObflowConfig(
        source={"engine": "oceanbase", "mode": "mysql", "host": db_host, "port": db_port, "user": "root",
                "password": DB_PASSWORD, "database": spec["source"]["database"], "tables": spec["source"]["tables"]},
        output={"format": spec["output"]["format"], "path": str(node_data_dir / NAME / "output")},
    )  # fmt: skip


class Figures(dict[str, float]):
    """Measured seconds (or counts) by name, each printed as it is measured."""

    def __setitem__(self, name: str, value: float) -> None:
        print(f"e2e: {name}: {value:.1f}", flush=True)
        super().__setitem__(name, value)


@dataclass
class Pipeline:
    """The sample pipeline running on a cluster, with the load writing into its database."""

    cluster: Cluster
    namespace: str
    config: ObflowConfig
    load: Any  # obflow_dev.loadgen.LoadGenerator
    figures: Figures = field(default_factory=Figures)

    def kubectl(self, *args: str, timeout: float = 120) -> str:
        return kubectl(self.cluster, "-n", self.namespace, *args, timeout=timeout)

    def status(self) -> dict[str, Any]:
        status: dict[str, Any] = json.loads(self.kubectl("get", "dp", NAME, "-o", "json")).get("status", {})
        return status

    def pods(self, component: str) -> list[dict[str, Any]]:
        selector = f"{INSTANCE},app.kubernetes.io/component={component}"
        items: list[dict[str, Any]] = json.loads(self.kubectl("get", "pods", "-l", selector, "-o", "json"))["items"]
        return [pod for pod in items if not pod["metadata"].get("deletionTimestamp")]

    def ready(self, component: str) -> list[str]:
        def is_ready(pod: dict[str, Any]) -> bool:
            conditions = pod.get("status", {}).get("conditions", [])
            return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

        return [pod["metadata"]["name"] for pod in self.pods(component) if is_ready(pod)]

    def describe(self) -> str:
        """What the pipeline looks like now: what a wait that timed out saw last."""
        status = self.status()
        parts = [f"phase {status.get('phase')} ({status.get('message')}), jobState {status.get('jobState')}"]
        job = self.job()
        if job is not None:
            details, checkpoints = job
            vertices = ", ".join(f"{v['name'][:24]} {v['status']} at {v['parallelism']}" for v in details["vertices"])
            latest = checkpoints.get("latest") or {}
            completed, restored = latest.get("completed") or {}, latest.get("restored") or {}
            parts.append(f"job {details['state']}: {vertices}")
            parts.append(f"newest checkpoint {completed.get('id')}, restored from {restored.get('id')}")
        for component in ("jobmanager", "taskmanager", "capture"):
            ready = set(self.ready(component))
            pods = [f"{pod['metadata']['name']}{' ready' if pod['metadata']['name'] in ready else ''}"
                    for pod in self.pods(component)]  # fmt: skip
            parts.append(f"{component}: {', '.join(pods) or 'no pod'}")
        return "; ".join(parts)

    def restarts(self, pod: str) -> int:
        statuses = json.loads(self.kubectl("get", "pod", pod, "-o", "json"))["status"]["containerStatuses"]
        return sum(int(status["restartCount"]) for status in statuses)

    def crash(self, pod: str) -> tuple[float, float]:
        """SIGKILL the pod's container (where the cluster can; else delete the pod at once); returns
        when, as (monotonic, epoch) seconds."""
        if self.cluster.crash_container is None:
            killed = time.monotonic(), time.time()
            self.kubectl("delete", "pod", pod, "--grace-period=0", "--force", "--wait=false")
            return killed
        container = json.loads(self.kubectl("get", "pod", pod, "-o", "json"))["status"]["containerStatuses"][0]
        killed = time.monotonic(), time.time()
        self.cluster.crash_container(container["containerID"])
        return killed

    def back(self, component: str, pod: str, restarts: int) -> bool:
        """Whether ``component`` has a Ready pod again after ``pod`` (then restarted ``restarts`` times) crashed."""
        ready = self.ready(component)
        return any(name != pod for name in ready) or (pod in ready and self.restarts(pod) > restarts)

    def flink(self, path: str) -> Any:
        """GET a Flink REST path through the JobManager Service (any JobManager answers for the leader);
        None while no JobManager answers it."""
        try:
            with reach(self.cluster, self.namespace, f"service/{NAME}-jobmanager", 8081) as (host, port):
                response = httpx.get(f"http://{host}:{port}{path}", timeout=5)
        except (httpx.HTTPError, AssertionError):
            return None
        return response.json() if response.status_code == 200 else None

    def leadership(self) -> tuple[str, str | None]:
        """(the leader's identity, its pod) from Flink's leader ConfigMap (Kubernetes HA): the identity
        is new with every JobManager process that wins, the pod is the one whose address it published."""
        config_map = json.loads(self.kubectl("get", "configmap", f"{NAME}-cluster-config-map", "-o", "json"))
        record = json.loads(config_map["metadata"].get("annotations", {}).get(LEADER_ANNOTATION, "{}"))
        published = " ".join(value for key, value in config_map.get("data", {}).items() if "leader" in key)
        pod = next((pod["metadata"]["name"] for pod in self.pods("jobmanager")
                    if pod["status"].get("podIP") and f"{pod['status']['podIP']}:" in published), None)  # fmt: skip
        return str(record.get("holderIdentity", "")), pod

    def leader_other_than(self, identity: str) -> tuple[str, str] | None:
        """The leadership, once a JobManager other than ``identity`` holds it and its pod is known."""
        current, pod = self.leadership()
        return (current, pod) if current not in ("", identity) and pod else None

    def job(self) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """(job details, checkpoint statistics) of the pipeline's job, or None."""
        job = self.status().get("jobId")
        if job is None:
            return None
        details, checkpoints = self.flink(f"/jobs/{job}"), self.flink(f"/jobs/{job}/checkpoints")
        return (details, checkpoints) if details and checkpoints else None

    def latest_checkpoint(self) -> int:
        """The id of the newest completed checkpoint; waits for the first one."""

        def completed() -> int | None:
            job = self.job()
            latest = job and (job[1].get("latest") or {}).get("completed")
            return int(latest["id"]) if latest else None

        return int(wait_for(completed, 120, "a completed checkpoint", interval=1, not_yet=(AssertionError,)))

    def running_from(self, checkpoint: int, since_epoch: float) -> dict[str, Any] | None:
        """The job, once it runs with every task and was restored at or after ``checkpoint`` later than
        ``since_epoch`` (seconds)."""
        job = self.job()
        if job is None:
            return None
        details, checkpoints = job
        restored = (checkpoints.get("latest") or {}).get("restored") or {}
        tasks_running = all(vertex["status"] == "RUNNING" for vertex in details["vertices"])
        fresh = restored and restored["id"] >= checkpoint and restored["restore_timestamp"] / 1000 > since_epoch
        return restored if details["state"] == "RUNNING" and tasks_running and fresh else None

    def wait_running_from(self, checkpoint: int, since_epoch: float, timeout: float, what: str) -> dict[str, Any]:
        restored: dict[str, Any] = wait_for(lambda: self.running_from(checkpoint, since_epoch), timeout, what,
                                            interval=1, not_yet=(AssertionError,), seen=self.describe)  # fmt: skip
        return restored

    def patch(self, spec: dict[str, Any]) -> None:
        self.kubectl("patch", "dp", NAME, "--type=merge", "-p", json.dumps({"spec": spec}))

    def rows_in_files(self) -> int:
        from flink_job.output import read_output

        return sum(len(list(rows)) for _, _, rows in read_output(self.config))

    def exactly_once(self, timeout: float) -> Any:
        """Waits until every change the (stopped) load made is in the files exactly once, in order per row."""
        from obflow_dev.demo import verify

        wanted = f"{self.load.history.changes} changes exactly once in the files"
        checked: list[Any] = []

        def verified() -> Any:
            checked[:] = [verify(self.config, self.load.history)]
            return checked[0].ok and checked[0]

        result = wait_for(verified, timeout, wanted, interval=3, not_yet=(AssertionError,),
                          seen=lambda: checked[0] if checked else "nothing checked")  # fmt: skip
        assert result.duplicates == 0 and result.missing == 0 and not result.out_of_order
        return result


def clear_earlier_run(cluster: Cluster, namespace: str) -> None:
    """Remove what an earlier run left: its pipelines (through the operator, while it runs; their
    finalizers dropped if it does not), its namespace, its (retained) volume and the files on it."""
    if f"namespace/{namespace}" in kubectl(cluster, "get", "namespaces", "-o", "name"):
        with contextlib.suppress(AssertionError, subprocess.TimeoutExpired):
            kubectl(cluster, "-n", namespace, "delete", "dp", "--all", "--timeout=120s", timeout=140)
        for pipeline in kubectl(cluster, "-n", namespace, "get", "dp", "-o", "name").split():
            no_finalizers = json.dumps({"metadata": {"finalizers": []}})
            kubectl(cluster, "-n", namespace, "patch", pipeline, "--type=merge", "-p", no_finalizers)
        kubectl(cluster, "delete", "namespace", namespace, "--timeout=300s", timeout=320)
    kubectl(cluster, "delete", "persistentvolume", "obflow-e2e-data", "--ignore-not-found")
    shutil.rmtree(cluster.node_data_dir / NAME, ignore_errors=True)


def start_pipeline(cluster: Cluster, namespace: str, stack: contextlib.ExitStack) -> Pipeline:
    """Images, chart, database and emulator, change logs, the sample pipeline Running, the load
    writing. ``stack`` holds the connections to the database until the caller is done."""
    import pymysql

    from capture_agent.install import apply_ddl, change_log_ddl
    from obflow_dev.loadgen import LoadGenerator

    figures = Figures()
    started = time.monotonic()
    clear_earlier_run(cluster, namespace)
    figures["earlier run cleared"] = time.monotonic() - started
    started = time.monotonic()
    cluster.load_images(IMAGES)
    figures["images loaded"] = time.monotonic() - started
    started = time.monotonic()
    install_obflow(cluster, namespace)
    figures["chart installed (operator ready)"] = time.monotonic() - started
    started = time.monotonic()
    kubectl(cluster, "-n", namespace, "apply", "-f", "-", stdin=backing_manifests(cluster))
    for deployment in ("database", "datahub"):
        kubectl(cluster, "-n", namespace, "rollout", "status", f"deployment/{deployment}", "--timeout=180s",
                timeout=200)  # fmt: skip
    figures["database and DataHub ready"] = time.monotonic() - started
    db_host, db_port = stack.enter_context(reach(cluster, namespace, "service/database", 2881))

    # a Ready pod is not yet a reachable Service: until kube-proxy has its rules the address refuses
    def connect() -> Any:
        return pymysql.connect(host=db_host, port=db_port, user="root", autocommit=True)

    connection = wait_for(connect, 60, "the database through its Service", interval=1,
                          not_yet=(pymysql.err.OperationalError,))  # fmt: skip
    with connection as conn, conn.cursor() as cursor:
        cursor.execute("ALTER USER root IDENTIFIED BY %s", (DB_PASSWORD,))  # the password of e2e-db, from now on
    with pymysql.connect(host=db_host, port=db_port, user="root", password=DB_PASSWORD, autocommit=True) as conn:
        create_schema(conn, "shop")
    config = pipeline_config(db_host, db_port, cluster.node_data_dir)
    apply_ddl(config, change_log_ddl(config))
    load = LoadGenerator(lambda: pymysql.connect(host=db_host, port=db_port, user="root", password=DB_PASSWORD,
                                                 database="shop", autocommit=True), 10**7, rate=LOAD_RATE)  # fmt: skip
    pipeline = Pipeline(cluster, namespace, config, load, figures)
    applied = time.monotonic()
    kubectl(cluster, "-n", namespace, "apply", "-f", str(MANIFESTS / "pipeline.yaml"))
    wait_for(lambda: pipeline.status().get("phase") == "Running", 600, f"{NAME} Running", interval=2,
             not_yet=(AssertionError,), seen=pipeline.describe)  # fmt: skip
    figures["DataPipeline applied → Running"] = time.monotonic() - applied
    table = kubectl(cluster, "-n", namespace, "get", "dp", NAME)
    assert all(column in table for column in ("PHASE", "PARALLELISM", "LAG")), table
    assert len(pipeline.ready("jobmanager")) == 2, pipeline.pods("jobmanager")
    assert pipeline.ready("taskmanager"), pipeline.pods("taskmanager")
    assert pipeline.ready("capture"), pipeline.pods("capture")
    load.start()
    return pipeline


def kill_task_manager(pipeline: Pipeline) -> None:
    """R4.1, R4.3: the job recovers from the latest checkpoint, within 10 minutes."""
    checkpoint = pipeline.latest_checkpoint()
    killed, epoch = pipeline.crash(pipeline.ready("taskmanager")[0])
    restored = pipeline.wait_running_from(checkpoint, epoch, 600, "the job running again after a TaskManager died")
    seconds = time.monotonic() - killed
    pipeline.figures["TaskManager killed → job running from checkpoint"] = seconds
    assert seconds < 600 and restored["id"] >= checkpoint


def kill_leading_job_manager(pipeline: Pipeline) -> None:
    """R5.3: the standby takes over within 30 s and the job continues from its checkpoint."""
    checkpoint = pipeline.latest_checkpoint()
    identity, leader = wait_for(lambda: pipeline.leader_other_than(""), 60, "the leading JobManager", interval=1,
                                not_yet=(AssertionError, KeyError))  # fmt: skip
    killed, epoch = pipeline.crash(leader)
    # a new leader is elected: the standby, or the crashed one restarted by kubelet, whichever wins
    wait_for(lambda: pipeline.leadership()[0] not in ("", identity), 120, "a JobManager elected leader", interval=0.5,
             not_yet=(AssertionError, KeyError))  # fmt: skip
    took_over = time.monotonic() - killed
    pipeline.figures["leading JobManager killed → another elected leader"] = took_over
    restored = pipeline.wait_running_from(checkpoint, epoch, 600, "the job running under the new leader")
    pipeline.figures["leading JobManager killed → job running from checkpoint"] = time.monotonic() - killed
    _, new_leader = pipeline.leadership()
    print(f"e2e: new leader: {'the standby' if new_leader != leader else 'the killed one, restarted'}")
    assert took_over <= 30, f"a JobManager took {took_over:.1f}s to take over (R5.3: 30 s)"
    assert restored["id"] >= checkpoint


def kill_capture(pipeline: Pipeline) -> None:
    """R4.5: a crashed capture agent is back within 2 minutes; nothing it missed is lost (checked at the end)."""
    victim = pipeline.ready("capture")[0]
    restarts = pipeline.restarts(victim)
    killed, _ = pipeline.crash(victim)
    wait_for(lambda: pipeline.back("capture", victim, restarts), 180, "the capture agent Ready again", interval=0.5,
             not_yet=(AssertionError,))  # fmt: skip
    seconds = time.monotonic() - killed
    pipeline.figures["capture agent killed → Ready again"] = seconds
    assert seconds <= 120, f"capture back after {seconds:.0f}s (R4.5: 2 minutes)"


def change_capture_setting(pipeline: Pipeline) -> None:
    """R5.7: a capture setting rolls out while the job runs on: same job, never restarted, phase Running."""
    before, _ = wait_for(pipeline.job, 60, "the job", interval=1, not_yet=(AssertionError,))
    old = set(pipeline.ready("capture"))
    started = time.monotonic()
    pipeline.patch({"capture": {"pollInterval": "300ms"}})
    gap_started: float | None = None
    gap = 0.0
    deadline = started + 300
    while time.monotonic() < deadline:
        ready = set(pipeline.ready("capture"))
        now = time.monotonic()
        if not ready and gap_started is None:
            gap_started = now
        if ready and gap_started is not None:
            gap, gap_started = gap + now - gap_started, None
        if ready and not ready & old:
            break
        assert pipeline.status().get("phase") == "Running", pipeline.status()
        time.sleep(0.5)
    else:
        raise AssertionError("the capture agent with the new setting did not become Ready within 300s")
    pipeline.figures["capture setting changed → new agent Ready"] = time.monotonic() - started
    pipeline.figures["capture setting change: seconds without a Ready capture agent"] = gap
    after, _ = wait_for(pipeline.job, 60, "the job", interval=1, not_yet=(AssertionError,))
    assert (after["jid"], after["start-time"]) == (before["jid"], before["start-time"]), "the job was restarted"
    assert after["state"] == "RUNNING"


def rescale(pipeline: Pipeline, parallelism: int) -> None:
    """R6.3, R6.6: a new parallelism through a savepoint, the load writing all along (no loss and no
    duplicate: checked at the end)."""
    started, epoch = time.monotonic(), time.time()
    pipeline.patch({"flink": {"parallelism": parallelism}})

    def rescaled() -> bool:
        status = pipeline.status()
        return status.get("phase") == "Running" and status.get("parallelism") == parallelism

    wait_for(rescaled, 600, f"{NAME} Running at parallelism {parallelism}", interval=1, not_yet=(AssertionError,),
             seen=pipeline.describe)  # fmt: skip
    pipeline.figures[f"parallelism → {parallelism}: Running again"] = time.monotonic() - started
    status = pipeline.status()
    savepoint = status["lastSavepoint"]
    assert savepoint["reason"] == "rescale", savepoint
    details, _ = pipeline.job() or wait_for(pipeline.job, 60, "the job", interval=1, not_yet=(AssertionError,))
    assert {vertex["parallelism"] for vertex in details["vertices"]} >= {parallelism}, details["vertices"]
    assert details["start-time"] / 1000 > epoch


def delete_pipeline(pipeline: Pipeline) -> None:
    """Deleting the DataPipeline takes a final savepoint and removes every child."""
    started, epoch = time.monotonic(), time.time()
    pipeline.kubectl("delete", "dp", NAME, "--wait=false")
    wait_for(lambda: NAME not in pipeline.kubectl("get", "dp", "-o", "name"), 300, f"{NAME} deleted", interval=1,
             seen=pipeline.describe)  # fmt: skip
    pipeline.figures["DataPipeline deleted → gone (final savepoint)"] = time.monotonic() - started
    columns = "custom-columns=REASON:.reason,MESSAGE:.message"
    said = pipeline.kubectl("get", "events", "--field-selector", f"involvedObject.name={NAME}", "-o", columns)
    deletion = [line for line in said.splitlines() if line.startswith(("Deleting", "Final"))]
    print("e2e: the deletion's Events:", *deletion, sep="\n  ")
    savepoints = pipeline.cluster.node_data_dir / NAME / "savepoints"
    final = [path for path in savepoints.glob("savepoint-*") if path.stat().st_mtime > epoch]
    assert final and any((path / "_metadata").exists() for path in final), list(savepoints.iterdir())
    kinds = "deployments,services,configmaps,pods,poddisruptionbudgets"
    wait_for(lambda: not pipeline.kubectl("get", kinds, "-l", INSTANCE, "-o", "name").strip(), 300,
             "every child of the pipeline removed (garbage collection)", interval=1,
             seen=lambda: pipeline.kubectl("get", kinds, "-l", INSTANCE, "-o", "name").split())  # fmt: skip
    pipeline.figures["DataPipeline deleted → every child removed"] = time.monotonic() - started


def no_log_holds_a_secret(pipeline: Pipeline) -> None:
    """Issue 21: every pod's log in the namespace (the operator's, the pipeline's, the database's and the
    emulator's; the containers before their restarts too) and Flink's log folder in every running
    JobManager and TaskManager hold neither the database password nor the DataHub access key."""
    pods = json.loads(pipeline.kubectl("get", "pods", "-o", "json"))["items"]
    lines = 0
    read = 0
    for pod in [p["metadata"]["name"] for p in pods if not p["metadata"].get("deletionTimestamp")]:
        try:
            logs = [pipeline.kubectl("logs", pod, "--all-containers")]
        except AssertionError:
            if not _running(pipeline, pod):
                print(f"e2e: {pod} stopped since it was listed (the rescale's scale-down): its log is gone")
                continue
            raise
        read += 1
        with contextlib.suppress(AssertionError):  # no container of the pod has restarted
            logs.append(pipeline.kubectl("logs", pod, "--all-containers", "--previous"))
        text = "\n".join(logs)
        lines += text.count("\n")
        found = [line for line in text.splitlines() if DB_PASSWORD in line or DATAHUB_ACCESS_KEY in line]
        if pod.startswith((f"{NAME}-jobmanager", f"{NAME}-taskmanager")):
            command = ["exec", pod, "--", "grep", "-rlE", f"{DB_PASSWORD}|{DATAHUB_ACCESS_KEY}", "/tmp/flink-log"]
            folder = subprocess.run(
                ["kubectl", "--kubeconfig", str(pipeline.cluster.kubeconfig), "-n", pipeline.namespace, *command],
                capture_output=True, text=True, check=False, timeout=60,
            )  # fmt: skip
            assert folder.returncode in (0, 1) or not _running(pipeline, pod), f"grep in {pod}: {folder.stderr}"
            found += folder.stdout.splitlines()
        assert not found, f"{pod}'s log holds a secret of the run: {found[:3]}"
    pipeline.figures["pods whose logs hold no secret"] = read
    pipeline.figures["log lines read for secrets"] = lines


def _running(pipeline: Pipeline, pod: str) -> bool:
    """Whether ``pod`` still exists, is not being deleted, and has no container that has terminated."""
    text = pipeline.kubectl("get", "pod", pod, "--ignore-not-found", "-o", "json")
    if not text.strip():
        return False
    found = json.loads(text)
    states = [c.get("state", {}) for c in found.get("status", {}).get("containerStatuses", [])]
    return not found["metadata"].get("deletionTimestamp") and not any("terminated" in s for s in states)


def dump_logs(cluster: Cluster, namespace: str, directory: Path) -> None:
    """Every pod's log (and its previous container's) and the namespace's events, to read after a failure."""
    directory.mkdir(parents=True, exist_ok=True)
    pods = json.loads(kubectl(cluster, "-n", namespace, "get", "pods", "-o", "json"))["items"]
    for name in [pod["metadata"]["name"] for pod in pods]:
        for suffix, flags in (("", []), (".previous", ["--previous"])):
            with contextlib.suppress(AssertionError, subprocess.TimeoutExpired):
                log = kubectl(cluster, "-n", namespace, "logs", name, "--all-containers", *flags, timeout=60)
                (directory / f"{name}{suffix}.log").write_text(log)
    events = kubectl(cluster, "-n", namespace, "get", "events", "--sort-by=.lastTimestamp")
    (directory / "events.txt").write_text(events)


def run_pipeline_end_to_end(cluster: Cluster, namespace: str) -> dict[str, float]:
    """The whole suite on ``cluster``; returns its figures in seconds."""
    with contextlib.ExitStack() as stack:
        pipeline = start_pipeline(cluster, namespace, stack)
        started = time.monotonic()
        wait_for(pipeline.rows_in_files, 300, "the first changes in the files", interval=1, seen=pipeline.describe)
        pipeline.figures["load started → first changes in the files"] = time.monotonic() - started
        for scenario in (kill_task_manager, kill_leading_job_manager, kill_capture, change_capture_setting):
            scenario(pipeline)
        rescale(pipeline, 4)
        pipeline.load.stop_event.set()
        pipeline.load.join(30)
        assert pipeline.load.error is None, pipeline.load.error
        started = time.monotonic()
        result = pipeline.exactly_once(300)
        pipeline.figures["load stopped → every change in the files"] = time.monotonic() - started
        pipeline.figures["changes written and found exactly once"] = result.rows
        no_log_holds_a_secret(pipeline)
        delete_pipeline(pipeline)
        assert pipeline.exactly_once(10).rows == result.rows  # the final savepoint added nothing twice
        return pipeline.figures
