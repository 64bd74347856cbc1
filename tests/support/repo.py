"""The checkout under test: its root, and the ``obflow`` command run from it as a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


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
