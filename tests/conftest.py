"""Shared fixtures: the repo root, a clean OBFLOW_* environment, a CLI runner, and obflow's images."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.docker.images import Docker

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def clean_obflow_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No test sees OBFLOW_* variables from the calling shell."""
    for name in list(os.environ):
        if name.upper().startswith("OBFLOW_"):
            monkeypatch.delenv(name)
    yield


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``obflow ARGS`` in a fresh interpreter, as a user would."""
    full_env = {k: v for k, v in os.environ.items() if not k.upper().startswith("OBFLOW_")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "obflow.cli", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture(scope="session")
def docker() -> Docker:
    """A Docker daemon with obflow's images built from this checkout (kept up to date by their inputs' hash)."""
    from tests.docker.images import Docker, build_images, docker_host, missing_prerequisites

    missing = missing_prerequisites()
    if missing:
        pytest.fail("building the images needs: " + ", ".join(missing) + " (scripts/bootstrap.sh installs them)")
    host = docker_host()
    print(build_images(host))
    return Docker(host)
