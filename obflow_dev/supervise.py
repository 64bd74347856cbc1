"""Local process supervision: start the pipeline's components, wait until each is ready, stop them in order.

Used by ``obflow demo`` and the end-to-end tests. Each component runs in a session of its own, logs to
``<log_dir>/<name>.log`` and says it is ready through its ``/readyz`` endpoint (or, for a database, by
accepting a connection). ``stop_all`` stops them in the reverse order of starting; ``kill`` is a
crash (SIGKILL to the whole process group) and ``restart`` starts the same command again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from obflow.log import Fault, log_event, log_fault

log = logging.getLogger("obflow.supervise")

Readiness = Callable[[], bool]


def readyz(port: int, path: str = "/readyz") -> Readiness:
    """Ready when ``http://127.0.0.1:<port><path>`` answers 200."""

    def check() -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    return check


def stop_process_group(proc: subprocess.Popen[bytes], timeout: float = 20) -> int:
    """SIGTERM to a process started in its own session, then SIGKILL to its group if it lingers."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
    return proc.wait(30)


def obflow_command(*args: str) -> list[str]:
    """``obflow ARGS`` with this interpreter (works before the console script is on PATH)."""
    return [sys.executable, "-m", "obflow.cli", *args]


@dataclass
class Component:
    name: str
    argv: list[str]
    ready: Readiness
    env: dict[str, str] = field(default_factory=dict)
    stop_timeout: float = 60.0
    proc: subprocess.Popen[bytes] | None = None


class Supervisor:
    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.components: dict[str, Component] = {}

    def log_path(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def start(self, component: Component, timeout: float = 120.0) -> Component:
        """Start ``component`` and wait until it is ready; RuntimeError (naming its log) if it is not."""
        self.components[component.name] = component
        self._spawn(component)
        self.wait_ready(component.name, timeout)
        return component

    def _spawn(self, component: Component) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_file = self.log_path(component.name).open("ab")
        component.proc = subprocess.Popen(
            component.argv,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **component.env},
            start_new_session=True,
        )
        log_file.close()
        log_event(log, "component.started", f"{component.name} started (pid {component.proc.pid})")

    def wait_ready(self, name: str, timeout: float = 120.0) -> None:
        component = self.components[name]
        deadline = time.monotonic() + timeout
        while not component.ready():
            if component.proc is not None and component.proc.poll() is not None:
                raise RuntimeError(f"{name} exited with code {component.proc.returncode}; {self._log_tail(name)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} not ready within {timeout:.0f}s; {self._log_tail(name)}")
            time.sleep(0.2)
        log_event(log, "component.ready", f"{name} ready")

    def _log_tail(self, name: str, lines: int = 15) -> str:
        path = self.log_path(name)
        try:
            tail = path.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return f"see {path}"
        return f"the end of {path}:\n" + "\n".join(tail)

    def running(self, name: str) -> bool:
        proc = self.components[name].proc
        return proc is not None and proc.poll() is None

    def kill(self, name: str) -> None:
        """A crash: SIGKILL to the component's whole process group, no chance to clean up."""
        proc = self.components[name].proc
        if proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
            log_fault(log, Fault.COMPONENT_CRASHED, f"{name} killed (SIGKILL)")

    def restart(self, name: str, timeout: float = 120.0, argv: list[str] | None = None) -> None:
        component = self.components[name]
        if argv is not None:
            component.argv = argv
        self._spawn(component)
        self.wait_ready(name, timeout)

    def stop(self, name: str) -> int | None:
        """SIGTERM to the component's main process (it shuts down its own children), then wait;
        whatever is left of its process group is killed. Returns the exit code."""
        component = self.components[name]
        proc = component.proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(component.stop_timeout)
            except subprocess.TimeoutExpired:
                log_fault(log, Fault.COMPONENT_CRASHED, f"{name} did not stop in {component.stop_timeout:.0f}s")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
        log_event(log, "component.stopped", f"{name} stopped (exit {proc.returncode})")
        return proc.returncode

    def stop_all(self) -> None:
        for name in reversed(list(self.components)):
            self.stop(name)
