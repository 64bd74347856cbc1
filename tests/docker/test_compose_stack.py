"""docker/compose.yaml run for real on this machine's Docker: obflow's images and the stand-ins for
ZooKeeper, Prometheus and Alertmanager (docker/standins/, through the file's ``*_IMAGE`` variables),
with docker/.env.example and free ports; Grafana's profile is left out, as no registry here serves
its image (its provisioning is checked in test_compose.py).

One stack, one scenario, in order: every container healthy within 60 s of its start (R8.5); the
job running; Prometheus scraping every target with obflow's alert rules loaded; while a load writes
into seekdb, the leading JobManager crashes (SIGKILL) and the standby runs the job again from its
checkpoint, through ZooKeeper (R5.1, R5.2; the takeover's seconds are printed); the capture agent
and a TaskManager running tasks crash, their restart policy brings them back healthy, and the job
runs again from a checkpoint (R4.5); a changed
capture setting in the env file applied with ``up -d`` recreates the capture container only, and
the job keeps running (R5.7); every change is then exactly once in the files; no container's log
holds the DataHub access key; ``down -v`` leaves no container, network or volume.

A crash is a SIGKILL to the container's process from the host (``docker kill`` would count as a
stop, which the restart policy respects), so the scenario needs a local Docker daemon.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pymysql
import pytest

from obflow.config import load_config
from obflow.net import free_port
from obflow_dev.demo import Verification, verify
from obflow_dev.loadgen import LoadGenerator
from tests.support.compose import env_example
from tests.support.images import TAG, Docker, missing_prerequisites
from tests.support.repo import REPO_ROOT
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow

PROJECT = "obflow-compose-test"
JOB_ID = "00000000000000000000000000000001"
ONE_SHOTS = {"database-init", "capture-install"}
HEALTHY_WITHIN = 60.0  # R8.5
# R5.3 asks 30 s; Compose measures 22-33 s here (ZooKeeper session 6 s, the standby's job runner up
# after 20-25 s, restore and tasks 2-8 s): this bound catches a regression, R5.3 stays unproved in Compose
TAKEOVER_WITHIN = 60.0
RESTARTED_WITHIN = 120.0  # R4.5
SECRET = f"obflow-test-secret-{uuid.uuid4().hex}"
"""The DataHub access key of the stack (the emulator's and every client's): no log may hold it."""


def compose_command(host: str) -> list[str] | None:
    """``docker compose`` where the plugin exists, else Debian's ``docker-compose``."""
    env = {**os.environ, "DOCKER_HOST": host}
    for command in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(command[0]) and subprocess.run(
            [*command, "version"], capture_output=True, check=False, timeout=30, env=env
        ).returncode == 0:  # fmt: skip
            return command
    return None


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as answer:
        return json.load(answer)


def started_at(state: dict[str, Any]) -> float:
    """Docker's StartedAt (RFC 3339, nanoseconds) as epoch seconds."""
    stamp = re.sub(r"(\.\d{6})\d*", r"\1", state["StartedAt"]).replace("Z", "+00:00")
    return datetime.fromisoformat(stamp).timestamp()


@dataclass
class Stack:
    docker: Docker
    compose: list[str]
    env_file: Path
    ports: dict[str, int]

    def run(self, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = [*self.compose, "--project-name", PROJECT, "--env-file", str(self.env_file),
                   "-f", str(REPO_ROOT / "docker" / "compose.yaml"), *args]  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=timeout,
                                env={**os.environ, "DOCKER_HOST": self.docker.host})  # fmt: skip
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed:\n{result.stdout}{result.stderr}")
        return result

    def containers(self) -> dict[str, dict[str, Any]]:
        """``docker inspect`` of every container of the project, by service and replica (``taskmanager-2``)."""
        ids = self.docker.run("ps", "-aq", "--filter", f"label=com.docker.compose.project={PROJECT}").stdout.split()
        found = {}
        for container in json.loads(self.docker.run("inspect", *ids).stdout) if ids else []:
            labels = container["Config"]["Labels"]
            service, number = labels["com.docker.compose.service"], labels["com.docker.compose.container-number"]
            found[service if service != "taskmanager" else f"{service}-{number}"] = container
        return found

    def container(self, name: str) -> dict[str, Any]:
        return self.containers()[name]

    def http(self, service: str, url: str) -> str | None:
        """GET ``url`` from inside ``service``'s container (its own network view); None when it fails."""
        fetch = "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())"
        name = self.container(service)["Name"].lstrip("/")
        result = self.docker.run("exec", name, "python3", "-c", fetch, url, check=False, timeout=30)
        return result.stdout if result.returncode == 0 else None

    def leading_jobmanager(self) -> str | None:
        """The JobManager whose job runner answers: the runner runs in the leader only."""
        for name in ("jobmanager-1", "jobmanager-2"):
            if self.container(name)["State"]["Running"] and self.http(name, "http://127.0.0.1:9310/metrics"):
                return name
        return None

    def job(self, via: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """(details, checkpoint statistics) of the job, asked through ``via``'s REST endpoint."""
        details = self.http(via, f"http://127.0.0.1:8081/jobs/{JOB_ID}")
        checkpoints = self.http(via, f"http://127.0.0.1:8081/jobs/{JOB_ID}/checkpoints")
        return (json.loads(details), json.loads(checkpoints)) if details and checkpoints else None

    def job_running(self, via: str) -> dict[str, Any] | None:
        """The checkpoint statistics while the job runs with every task, else None."""
        job = self.job(via)
        if job is None or job[0]["state"] != "RUNNING":
            return None
        return job[1] if all(vertex["status"] == "RUNNING" for vertex in job[0]["vertices"]) else None

    def latest_checkpoint(self, via: str) -> int:
        def completed() -> int | None:
            checkpoints = self.job_running(via)
            latest = checkpoints and (checkpoints.get("latest") or {}).get("completed")
            return int(latest["id"]) if latest else None

        return int(wait_for(completed, 120, "a completed checkpoint", interval=1))

    def restored_since(self, via: str, since: float, checkpoint: int = 0) -> dict[str, Any] | None:
        """The restore, while the job runs with every task, of checkpoint ``checkpoint`` or a newer one
        after the epoch second ``since``; None before."""
        checkpoints = self.job_running(via)
        restored = checkpoints and (checkpoints.get("latest") or {}).get("restored")
        fresh = restored and restored["id"] >= checkpoint and restored["restore_timestamp"] / 1000 > since
        return restored if fresh else None

    def taskmanager_addresses(self, via: str) -> dict[str, str]:
        """Each TaskManager registered with the leader: its address as it told it, by resource id."""
        answer = self.http(via, "http://127.0.0.1:8081/taskmanagers")
        registered = json.loads(answer)["taskmanagers"] if answer else []
        return {tm["id"]: re.sub(r"^.*@([^:/]+):.*$", r"\1", tm["path"]) for tm in registered}

    def taskmanager_with_tasks(self, via: str) -> str:
        """The TaskManager container that runs one of the job's tasks (one of them may run none)."""
        by_address = {network["IPAddress"]: name for name, container in self.containers().items()
                      if name.startswith("taskmanager")
                      for network in container["NetworkSettings"]["Networks"].values()}  # fmt: skip
        job = self.job(via)
        assert job is not None, "the job is not readable"
        seen: list[str | None] = []
        for vertex in job[0]["vertices"]:
            answer = self.http(via, f"http://127.0.0.1:8081/jobs/{JOB_ID}/vertices/{vertex['id']}/taskmanagers")
            for taskmanager in json.loads(answer or "{}").get("taskmanagers", []):
                # the resource id starts with the address the TaskManager gave (taskmanager.host)
                hosts = {taskmanager.get("taskmanager-id", "").split(":")[0],
                         taskmanager.get("endpoint", "").rpartition(":")[0]}  # fmt: skip
                found = [by_address[host] for host in hosts if host in by_address]
                if found:
                    return found[0]
            seen.append(answer)
        raise AssertionError(f"no task runs on a TaskManager container at {sorted(by_address)}: {seen}")

    def crash(self, name: str) -> float:
        """SIGKILL the container's process from the host, as a crash: the epoch second it died."""
        os.kill(self.container(name)["State"]["Pid"], signal.SIGKILL)
        return time.time()

    def restarted_healthy(self, name: str, since: float) -> float | None:
        """Seconds from ``since`` until the container, started again after it, was healthy."""
        container = self.container(name)
        state = container["State"]
        if state.get("Health", {}).get("Status") == "healthy" and started_at(state) > since:
            return time.time() - since
        return None


def the_env_file(path: Path) -> tuple[Path, dict[str, int]]:
    """.env.example with the stand-in images, the emulator only, free ports, a checkpoint and a file roll
    every 10 s."""
    ports = {key: free_port() for key in ("DATABASE_PORT", "FLINK_UI_PORT", "PROMETHEUS_PORT", "ALERTMANAGER_PORT",
                                          "GRAFANA_PORT")}  # fmt: skip
    settings = {
        **env_example(),
        "OBFLOW_TAG": TAG,
        "COMPOSE_PROFILES": "emulator",
        "ZOOKEEPER_IMAGE": f"obflow/zookeeper:{TAG}",
        "PROMETHEUS_IMAGE": f"obflow/prometheus:{TAG}",
        "ALERTMANAGER_IMAGE": f"obflow/alertmanager:{TAG}",
        "DATAHUB_ACCESS_KEY": SECRET,
        "CHECKPOINT_INTERVAL": "10s",
        "OUTPUT_MAX_SPAN": "10s",
        **{key: str(port) for key, port in ports.items()},
    }
    path.write_text("".join(f"{key}={value}\n" for key, value in settings.items()))
    return path, ports


@pytest.fixture(scope="module")
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    missing = missing_prerequisites()
    if missing:
        pytest.skip("the Compose stack needs: " + ", ".join(missing))
    docker: Docker = request.getfixturevalue("docker")
    compose = compose_command(docker.host)
    if compose is None:
        pytest.skip("the Compose stack needs docker-compose (apt-get install docker-compose) or the compose plugin")
    build = subprocess.run(
        [str(REPO_ROOT / "scripts/docker/build.sh"), "zookeeper", "prometheus", "alertmanager"],
        capture_output=True, text=True, check=False, timeout=1200, env={**os.environ, "DOCKER_HOST": docker.host},
    )  # fmt: skip
    assert build.returncode == 0, build.stdout + build.stderr
    print(build.stdout)
    env_file, ports = the_env_file(tmp_path_factory.mktemp("compose") / "compose.env")
    stack = Stack(docker, compose, env_file, ports)
    stack.run("down", "-v", "--timeout", "10")  # what an interrupted run left
    try:
        yield stack
    finally:
        for name in ("jobmanager-1", "jobmanager-2", "capture"):
            logs = stack.run("logs", "--no-color", "--tail", "15", name, check=False).stdout
            print(f"--- {name} (last lines)\n{logs}")
        stack.run("down", "-v", "--timeout", "20", check=False)


@pytest.mark.timeout(1800)  # image builds when sources changed, then about ten minutes of scenario
def test_the_stack_runs_fails_over_restarts_and_reconfigures_exactly_once_R8_5_R5_1_R5_2_R4_5_R5_7(
    stack: Stack, tmp_path: Path
) -> None:
    figures: list[str] = []
    up_started = time.monotonic()
    stack.run("up", "-d")
    every_container_healthy_within_60_s(stack, figures)
    leader = wait_for(stack.leading_jobmanager, 180, "a JobManager running the job's runner", interval=1)
    wait_for(lambda: stack.job_running(leader), 180, "the job running on the leader", interval=1)
    figures.append(f"job running on {leader} {time.monotonic() - up_started:.0f} s after up -d")
    addresses = wait_for(lambda: len(stack.taskmanager_addresses(leader)) == 2 and stack.taskmanager_addresses(leader),
                         60, "both TaskManagers registered", interval=1)  # fmt: skip
    # each reachable at its own address (Flink's stock localhost only works inside one container)
    assert len(set(addresses.values())) == 2 and "localhost" not in addresses.values(), addresses
    prometheus_scrapes_every_target_with_the_rules(stack, figures)

    def connect() -> Any:
        return pymysql.connect(host="127.0.0.1", port=stack.ports["DATABASE_PORT"], user="root", database="shop",
                               autocommit=True)  # fmt: skip

    load = LoadGenerator(connect, total=10**9, rate=25)
    load.start()
    try:
        standby = the_standby_takes_over_from_the_checkpoint(stack, leader, figures)
        restarted_healthy_within_2_minutes(stack, "capture", figures)
        a_taskmanager_with_tasks_restarts_and_the_job_restores(stack, standby, figures)
        a_capture_setting_recreates_only_capture(stack, standby, figures)
        time.sleep(5)  # a few changes through the new agent
    finally:
        load.stop_event.set()
        load.join(30)
    assert load.error is None, load.error
    every_change_exactly_once_in_the_files(stack, load, tmp_path, figures)
    no_log_holds_the_secret(stack, figures)
    down_leaves_nothing(stack, figures)
    print("\n".join(figures))


def every_container_healthy_within_60_s(stack: Stack, figures: list[str]) -> None:
    """R8.5, by Docker's own health checks (every 5-10 s), each container from its own start."""
    up_started = time.time()
    long_running = {name for name in stack.containers() if name not in ONE_SHOTS}
    assert long_running == {"database", "datahub", "capture", "zookeeper", "jobmanager-1", "jobmanager-2",
                            "taskmanager-1", "taskmanager-2", "prometheus", "alertmanager"}  # fmt: skip
    healthy_after: dict[str, float] = {}

    def all_healthy() -> bool:
        for name, container in stack.containers().items():
            state = container["State"]
            if name in long_running - set(healthy_after) and state["Health"]["Status"] == "healthy":
                healthy_after[name] = time.time() - started_at(state)
        return set(healthy_after) == long_running

    def not_yet() -> dict[str, str]:
        return {name: container["State"]["Health"]["Status"] for name, container in stack.containers().items()
                if name in long_running - set(healthy_after)}  # fmt: skip

    wait_for(all_healthy, 300, "every container healthy", interval=1, seen=not_yet)
    each = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in sorted(healthy_after.items(), key=lambda i: i[1]))
    figures.append(f"stack healthy {time.time() - up_started:.0f} s after up -d; each after its start: {each}")
    assert max(healthy_after.values()) < HEALTHY_WITHIN, healthy_after


def prometheus_scrapes_every_target_with_the_rules(stack: Stack, figures: list[str]) -> None:
    """Every target up (the job runner's on the leading JobManager only), obflow's alert rules loaded."""
    prometheus = f"http://127.0.0.1:{stack.ports['PROMETHEUS_PORT']}"

    seen: dict[str, list[str]] = {}

    def every_target_up() -> bool:
        seen.clear()
        for target in get_json(f"{prometheus}/api/v1/targets")["data"]["activeTargets"]:
            seen.setdefault(target["labels"]["job"], []).append(target["health"])
        runner = seen.pop("obflow-job", [])
        up = len(seen) == 3 and all(health == "up" for healths in seen.values() for health in healths)
        seen["obflow-job"] = runner
        return up and sorted(runner) == ["down", "up"]

    # Prometheus scrapes every 15 s: a target is up once a scrape after its start found it
    wait_for(every_target_up, 90, "every Prometheus target up", interval=2, not_yet=(OSError,), seen=lambda: seen)
    by_job = seen
    assert len(by_job["obflow-flink-taskmanager"]) == 2 and len(by_job["obflow-flink-jobmanager"]) == 2
    groups = get_json(f"{prometheus}/api/v1/rules")["data"]["groups"]
    rules = {rule["name"] for group in groups for rule in group["rules"]}
    assert {"ObflowJobRunnerDown", "ObflowTargetDown"} <= rules
    figures.append(f"Prometheus: {sum(map(len, by_job.values()))} targets, {len(rules)} alert rules")


def the_standby_takes_over_from_the_checkpoint(stack: Stack, leader: str, figures: list[str]) -> str:
    """R5.1, R5.2: the leader crashes; the standby leads and runs the job from its latest checkpoint."""
    standby = "jobmanager-2" if leader == "jobmanager-1" else "jobmanager-1"
    checkpoint = stack.latest_checkpoint(leader)
    killed = stack.crash(leader)

    runner_started: list[float] = []  # the standby leads and its runner answers: the stage before the restore

    def restored_on_standby() -> dict[str, Any] | None:
        if not runner_started and stack.leading_jobmanager() == standby:
            runner_started.append(time.time() - killed)
        return stack.restored_since(standby, killed, checkpoint)

    restored = wait_for(restored_on_standby, 180, "the job running on the standby from a checkpoint", interval=1)
    takeover = time.time() - killed
    figures.append(f"{leader} killed: the job running on {standby} from checkpoint {restored['id']} "
                   f"(latest before: {checkpoint}) {takeover:.1f} s later; its runner up after "
                   f"{runner_started[0] if runner_started else float('nan'):.1f} s")  # fmt: skip
    assert takeover < TAKEOVER_WITHIN
    assert stack.leading_jobmanager() == standby
    wait_for(lambda: stack.restarted_healthy(leader, killed), RESTARTED_WITHIN, f"{leader} back as standby", interval=1)
    return standby


def restarted_healthy_within_2_minutes(stack: Stack, name: str, figures: list[str]) -> float:
    """R4.5: a crashed container is restarted by its restart policy and healthy again; when it died."""
    died = stack.crash(name)
    seconds = wait_for(lambda: stack.restarted_healthy(name, died), 300, f"{name} restarted healthy", interval=1)
    figures.append(f"{name} killed: restarted and healthy {seconds:.0f} s later")
    assert seconds < RESTARTED_WITHIN
    return died


def a_taskmanager_with_tasks_restarts_and_the_job_restores(stack: Stack, leader: str, figures: list[str]) -> None:
    """R4.5: a TaskManager running tasks crashes; it is restarted healthy, and the job runs again from a
    checkpoint (waiting for that restore, not for RUNNING, which the job still shows until the loss is seen)."""
    name = stack.taskmanager_with_tasks(leader)
    checkpoint = stack.latest_checkpoint(leader)
    died = restarted_healthy_within_2_minutes(stack, name, figures)
    wait_for(lambda: stack.restored_since(leader, died, checkpoint), 180, f"the job restored after {name}", interval=1)
    figures.append(f"the job ran again from a checkpoint {time.time() - died:.0f} s after {name} was killed")


def a_capture_setting_recreates_only_capture(stack: Stack, standby: str, figures: list[str]) -> None:
    """R5.7: CAPTURE_BATCH_SIZE changed in the env file and applied with up -d; the job keeps running."""
    before = {name: container["Id"] for name, container in stack.containers().items()}
    settings = stack.env_file.read_text()
    assert "CAPTURE_BATCH_SIZE=1000\n" in settings
    stack.env_file.write_text(settings.replace("CAPTURE_BATCH_SIZE=1000\n", "CAPTURE_BATCH_SIZE=500\n"))
    reconfigured = time.time()
    stack.run("up", "-d")
    after = stack.containers()
    assert {name for name, container in after.items() if container["Id"] != before.get(name)} == {"capture"}
    assert "OBFLOW_CAPTURE__BATCH_SIZE=500" in after["capture"]["Config"]["Env"]
    seconds = wait_for(lambda: stack.restarted_healthy("capture", reconfigured), 120, "capture healthy", interval=1)
    assert stack.job_running(standby), "the job stopped when the capture agent was recreated"
    figures.append(f"CAPTURE_BATCH_SIZE 1000 -> 500: only capture recreated, healthy {seconds:.0f} s later; "
                   "the job kept running")  # fmt: skip


def every_change_exactly_once_in_the_files(stack: Stack, load: LoadGenerator, tmp_path: Path,
                                           figures: list[str]) -> None:  # fmt: skip
    """Every change the load made is in the committed files once, each row's changes in commit order."""
    config = load_config(REPO_ROOT / "docker" / "pipeline.yaml")
    output = tmp_path / "output"
    config.output.path = str(output)

    last: list[Verification] = []

    def verified() -> Verification | None:
        shutil.rmtree(output, ignore_errors=True)
        taskmanager = stack.container("taskmanager-2")["Name"].lstrip("/")
        stack.docker.run("cp", f"{taskmanager}:/data/output", str(tmp_path))
        last[:] = [verify(config, load.history)]
        return last[0] if last[0].ok else None

    def summary() -> str:
        result = last[0]
        return (f"{result.rows} rows in {result.files} files, {result.duplicates} duplicates, {result.missing} "
                f"missing, out of order: {result.out_of_order[:3]}")  # fmt: skip

    result = wait_for(verified, 180, f"{load.history.changes} changes in the files", interval=5, seen=summary)
    assert result.duplicates == 0 and result.missing == 0 and not result.out_of_order
    figures.append(f"{load.history.changes} changes exactly once in {result.files} files")


def no_log_holds_the_secret(stack: Stack, figures: list[str]) -> None:
    """Issue 21: every container's log (the one-shots', and Flink's log folder too) is free of the access key."""
    lines = 0
    for name, container in stack.containers().items():
        logs = stack.docker.run("logs", container["Id"], timeout=60)
        found = [line for line in (logs.stdout + logs.stderr).splitlines() if SECRET in line]
        lines += (logs.stdout + logs.stderr).count("\n")
        if name.startswith(("jobmanager", "taskmanager")) and container["State"]["Running"]:
            folder = stack.docker.run("exec", container["Id"], "grep", "-rl", SECRET, "/tmp/flink-log", check=False)
            found += folder.stdout.splitlines()
        assert not found, f"{name}'s log holds the DataHub access key: {found[:3]}"
    figures.append(f"no log holds the access key: {len(stack.containers())} containers, {lines} lines")


def down_leaves_nothing(stack: Stack, figures: list[str]) -> None:
    started = time.monotonic()
    stack.run("down", "-v", "--timeout", "20")
    project = f"label=com.docker.compose.project={PROJECT}"
    assert stack.docker.run("ps", "-aq", "--filter", project).stdout.split() == []
    assert stack.docker.run("network", "ls", "-q", "--filter", project).stdout.split() == []
    assert stack.docker.run("volume", "ls", "-q", "--filter", project).stdout.split() == []
    figures.append(f"down -v: no container, network or volume left, {time.monotonic() - started:.0f} s")
