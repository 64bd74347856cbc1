"""obflow's images built by scripts/docker/build.sh on a Docker daemon of this machine, and
containers run from them for a test."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from tests.support.repo import REPO_ROOT

TAG = "0.1.0"
BUILD_TIMEOUT = 1800  # cold: two debootstraps and four builds, about 8 minutes here


def missing_prerequisites() -> list[str]:
    missing = [f"{tool} (apt-get install {package})" for tool, package in
               (("dockerd", "docker.io"), ("docker", "docker.io"), ("debootstrap", "debootstrap"))
               if not shutil.which(tool)]  # fmt: skip
    if os.geteuid() != 0:
        missing.append("root (dockerd and debootstrap need it)")
    return missing


def docker_host() -> str:
    """The DOCKER_HOST of a running daemon: this machine's own, else obflow's private one (started)."""
    if subprocess.run(["docker", "version"], capture_output=True, check=False, timeout=30).returncode == 0:
        return os.environ.get("DOCKER_HOST", "")
    started = subprocess.run(
        [str(REPO_ROOT / "scripts/docker/dockerd.sh"), "start"], capture_output=True, text=True, check=False, timeout=60
    )
    if started.returncode != 0:
        raise RuntimeError(f"no Docker daemon could be started: {started.stderr.strip()}")
    return started.stdout.strip()


def build_images(host: str) -> str:
    """Build (or find up to date) every image; the script's report."""
    result = subprocess.run(
        [str(REPO_ROOT / "scripts/docker/build.sh")],
        capture_output=True, text=True, check=False, timeout=BUILD_TIMEOUT, env={**os.environ, "DOCKER_HOST": host},
    )  # fmt: skip
    if result.returncode != 0:
        raise RuntimeError(f"scripts/docker/build.sh failed:\n{result.stdout}{result.stderr[-4000:]}")
    return result.stdout


@dataclass
class Docker:
    host: str

    def run(self, *args: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["docker", *args], capture_output=True, text=True, timeout=timeout, check=check,
            env={**os.environ, "DOCKER_HOST": self.host},
        )  # fmt: skip

    @contextmanager
    def container(self, image: str, *args: str, options: tuple[str, ...] = ()) -> Iterator[Container]:
        name = f"obflow-test-{uuid.uuid4().hex[:8]}"
        self.run("run", "-d", "--name", name, *options, f"obflow/{image}:{TAG}", *args)
        container = Container(self, name, time.monotonic())
        try:
            yield container
        finally:
            self.run("rm", "-f", name, check=False)


@dataclass
class Container:
    docker: Docker
    name: str
    started: float

    def healthcheck(self) -> subprocess.CompletedProcess[str]:
        """The image's own HEALTHCHECK command, run now."""
        command = self.docker.run("inspect", "-f", "{{json .Config.Healthcheck.Test}}", self.name).stdout
        test = json.loads(command)
        argv = test[1:] if test[0] == "CMD" else ["/bin/sh", "-c", test[1]]
        return self.docker.run("exec", self.name, *argv, check=False, timeout=30)

    def seconds_until_healthy(self, timeout: float = 120) -> float:
        """Seconds from ``docker run`` until its health check first passes (polled every 0.25 s)."""
        while time.monotonic() - self.started < timeout:
            if self.healthcheck().returncode == 0:
                return time.monotonic() - self.started
            if self.docker.run("inspect", "-f", "{{.State.Running}}", self.name).stdout.strip() != "true":
                raise AssertionError(f"{self.name} exited:\n{self.logs()[-3000:]}")
            time.sleep(0.25)
        raise AssertionError(f"{self.name} not healthy within {timeout:.0f}s:\n{self.logs()[-3000:]}")

    def docker_health(self) -> str:
        """What Docker itself says (starting, healthy, unhealthy)."""
        return self.docker.run("inspect", "-f", "{{.State.Health.Status}}", self.name).stdout.strip()

    def wait_docker_healthy(self, timeout: float = 60) -> float:
        """Seconds from ``docker run`` until Docker's own HEALTHCHECK runs report it healthy (Docker
        probes every 10 s, so this is later than :meth:`seconds_until_healthy`)."""
        while time.monotonic() - self.started < timeout:
            if self.docker_health() == "healthy":
                return time.monotonic() - self.started
            time.sleep(0.5)
        raise AssertionError(
            f"Docker never reported {self.name} healthy ({self.docker_health()}):\n{self.logs()[-3000:]}"
        )

    def logs(self) -> str:
        result = self.docker.run("logs", self.name, check=False)
        return result.stdout + result.stderr
