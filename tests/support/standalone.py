"""A real standalone Flink cluster from the PyFlink wheel: one JobManager and TaskManagers on loopback,
each its own process, and the job submitted with ``flink run`` the way a cluster runs it."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pyflink
import yaml

from obflow.net import free_port
from obflow_dev.supervise import stop_process_group
from obflow_operator.builders import JAVA_17_OPTS

FLINK_HOME = Path(pyflink.__file__).parent
REPO_ROOT = Path(__file__).resolve().parent.parent.parent


class StandaloneFlink:
    def __init__(
        self,
        workdir: Path,
        slots: int = 4,
        taskmanagers: int = 1,
        adaptive: bool = False,
        extra_env: dict[str, str] | None = None,
        extra_conf: dict[str, str] | None = None,
    ) -> None:
        """``extra_env``: for every process, as Kubernetes gives the pods their Secrets; ``extra_conf``:
        more of Flink's configuration (``config.yaml``)."""
        self.workdir = workdir
        self.extra_env = extra_env or {}
        self.extra_conf = extra_conf or {}
        self.slots = slots
        self.taskmanagers = taskmanagers
        self.rest_port = free_port()
        self.url = f"http://127.0.0.1:{self.rest_port}"
        self.conf_dir = workdir / "conf"
        self.processes: list[subprocess.Popen[bytes]] = []
        self.adaptive = adaptive
        self.taskmanager_restarts = 0
        self._stopping = threading.Event()
        self._replacing = False
        self._lock = threading.Lock()

    def env(self) -> dict[str, str]:
        site = [p for p in sys.path if p.endswith("site-packages")]
        return {
            **os.environ,
            "FLINK_CONF_DIR": str(self.conf_dir),
            "FLINK_LOG_DIR": str(self.workdir / "log"),
            "FLINK_PID_DIR": str(self.workdir / "pid"),
            # the TaskManager's embedded Python (thread mode) finds this environment's packages
            "PYTHONPATH": os.pathsep.join([*site, str(REPO_ROOT)]),
            **self.extra_env,
        }

    def _write_conf(self) -> None:
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        conf = {
            "env.java.opts.all": JAVA_17_OPTS,
            "jobmanager.rpc.address": "localhost",
            "jobmanager.rpc.port": free_port(),
            "jobmanager.bind-host": "localhost",
            "taskmanager.bind-host": "localhost",
            "taskmanager.host": "localhost",
            "rest.address": "localhost",
            "rest.bind-address": "localhost",
            "rest.port": self.rest_port,
            "taskmanager.numberOfTaskSlots": self.slots,
            "jobmanager.memory.process.size": "768m",
            "taskmanager.memory.process.size": "1728m",
            "python.executable": sys.executable,
            "python.client.executable": sys.executable,
        }
        if self.adaptive:
            conf["jobmanager.scheduler"] = "adaptive"
        conf |= self.extra_conf
        (self.conf_dir / "config.yaml").write_text(yaml.safe_dump(conf))
        for name in ("log4j-console.properties", "log4j.properties", "log4j-cli.properties"):
            shutil.copy(FLINK_HOME / "conf" / name, self.conf_dir / name)

    def start(self, timeout: float = 90) -> StandaloneFlink:
        self._write_conf()
        try:
            self.jobmanager = self._spawn("jobmanager", [str(FLINK_HOME / "bin" / "jobmanager.sh"), "start-foreground"])
            self._start_taskmanagers()
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _start_taskmanagers(self) -> None:
        self.taskmanager_processes = [self._spawn_taskmanager(n) for n in range(self.taskmanagers)]
        if not hasattr(self, "_watcher"):
            self._watcher = threading.Thread(target=self._restart_crashed_taskmanagers, daemon=True)
            self._watcher.start()

    def _spawn_taskmanager(self, number: int) -> subprocess.Popen[bytes]:
        return self._spawn(f"taskmanager-{number}", [str(FLINK_HOME / "bin" / "taskmanager.sh"), "start-foreground"])

    def _restart_crashed_taskmanagers(self) -> None:
        """Restart a TaskManager whose process died, as the kubelet restarts a crashed pod; counted in
        ``taskmanager_restarts`` (a JVM crash leaves hs_err_pid*.log in the work directory)."""
        while not self._stopping.wait(1.0):
            with self._lock:  # never races stop() or replace_taskmanagers() into an orphan process
                if self._stopping.is_set() or self._replacing:
                    continue
                for number, process in enumerate(self.taskmanager_processes):
                    if process.poll() is not None:
                        self.taskmanager_restarts += 1
                        self.taskmanager_processes[number] = self._spawn_taskmanager(number)

    def replace_taskmanagers(self, timeout: float = 90) -> None:
        """New TaskManager processes, as a redeploy gives new pods. PyFlink's thread mode cannot start a
        second job's Python in a TaskManager that ran one before (Java 17: ``NoSuchFieldException:
        loadedLibraryNames`` when pemja reloads its library), so each job needs fresh TaskManagers."""
        with self._lock:
            self._replacing = True
        old = self.registered_taskmanagers()
        for process in self.taskmanager_processes:
            stop_process_group(process, timeout=60)
        self._start_taskmanagers()
        with self._lock:
            self._replacing = False
        # until the JobManager has let go of the old ones (a TaskManager that had to be killed counts as
        # registered until its heartbeat times out), a job would be given their slots and fail to deploy
        self._wait_ready(timeout, exactly=True, gone=old)

    def kill_taskmanager(self, number: int = 0) -> None:
        """SIGKILL a TaskManager's process group, as a node or container crash does; the watcher starts it again."""
        os.killpg(self.taskmanager_processes[number].pid, signal.SIGKILL)

    def registered_taskmanagers(self) -> set[str]:
        """The ids of the TaskManagers the JobManager counts as registered; HTTPStatusError while it starts (503)."""
        response = httpx.get(f"{self.url}/taskmanagers", timeout=5).raise_for_status()
        return {tm["id"] for tm in response.json()["taskmanagers"]}

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        log = (self.workdir / f"{name}.out").open("ab")
        process = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, env=self.env(), cwd=self.workdir, start_new_session=True
        )
        self.processes.append(process)
        return process

    def _wait_ready(self, timeout: float, exactly: bool = False, gone: frozenset[str] | set[str] = frozenset()) -> None:
        """Until the JobManager counts ``self.taskmanagers`` TaskManagers (``exactly``: no more), none of
        them in ``gone``."""
        deadline = time.monotonic() + timeout
        seen: set[str] | str = "no answer"
        while time.monotonic() < deadline:
            try:
                seen = self.registered_taskmanagers()
            except (httpx.HTTPError, ValueError, KeyError) as exc:  # not up yet, or still starting (503)
                seen = f"no answer ({exc!r})"
            else:
                enough = len(seen) == self.taskmanagers or (len(seen) > self.taskmanagers and not exactly)
                if enough and not seen & gone:
                    return
            time.sleep(0.5)
        raise TimeoutError(
            f"Flink not ready within {timeout:.0f}s: registered TaskManagers {seen}, wanted {self.taskmanagers}"
            f"{' exactly' if exactly else ''}{f', none of {sorted(gone)}' if gone else ''}; see {self.workdir}"
        )

    def submit(
        self, config_path: Path, log: Path, env: dict[str, str], savepoint: str | None = None
    ) -> subprocess.Popen[bytes]:
        """``flink run -py flink_job/job.py CONFIG``: the client process stays up as the job's runner
        (finalizer, /metrics) until the job ends."""
        argv = [str(FLINK_HOME / "bin" / "flink"), "run", "-m", f"localhost:{self.rest_port}"]
        if savepoint:
            argv += ["-s", savepoint]
        argv += ["-py", str(REPO_ROOT / "flink_job" / "job.py"), str(config_path)]
        return subprocess.Popen(
            argv, stdout=log.open("ab"), stderr=subprocess.STDOUT, env={**self.env(), **env}, start_new_session=True
        )

    def stop(self) -> None:
        with self._lock:
            self._stopping.set()
        for process in self.processes:
            stop_process_group(process)
        self.processes.clear()
