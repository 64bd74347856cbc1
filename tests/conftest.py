"""Shared fixtures: a clean OBFLOW_* environment and obflow's images (the repo root and the CLI runner are in
tests/support/repo.py). A run leaves the host as it found it: the image-build Docker daemon it started is
stopped at the end."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from tests.support.repo import REPO_ROOT

if TYPE_CHECKING:
    from tests.support.images import Docker


BUILD_DAEMON = REPO_ROOT / "scripts" / "docker" / "dockerd.sh"
_BUILD_DAEMON_WAS_RUNNING = pytest.StashKey[bool]()


def _build_daemon_running() -> bool:
    return subprocess.run([str(BUILD_DAEMON), "running"], capture_output=True, check=False, timeout=60).returncode == 0


def pytest_sessionstart(session: pytest.Session) -> None:
    session.config.stash[_BUILD_DAEMON_WAS_RUNNING] = _build_daemon_running()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test on the real API server (the ``control_plane`` fixture, which needs the Kubernetes build) or on
    obflow's images (``docker``) is ``slow`` whether or not its module says so: ``make check`` leaves it out."""
    for item in items:
        if {"control_plane", "docker"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Stop the image-build daemon if this run started it (scripts/docker/build.sh starts it on demand)."""
    if not session.config.stash.get(_BUILD_DAEMON_WAS_RUNNING, True) and _build_daemon_running():
        subprocess.run([str(BUILD_DAEMON), "stop"], check=False, timeout=120)


@pytest.fixture(autouse=True)
def clean_obflow_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No test sees OBFLOW_* variables from the calling shell."""
    for name in list(os.environ):
        if name.upper().startswith("OBFLOW_"):
            monkeypatch.delenv(name)
    yield


@pytest.fixture(scope="session")
def docker() -> Docker:
    """A Docker daemon with obflow's images built from this checkout (kept up to date by their inputs' hash)."""
    from tests.support.images import Docker, build_images, docker_host, missing_prerequisites

    missing = missing_prerequisites()
    if missing:
        pytest.fail("building the images needs: " + ", ".join(missing) + " (scripts/bootstrap.sh installs them)")
    host = docker_host()
    print(build_images(host))
    return Docker(host)
