"""Long-running processes that outlive the Python process that started them: each in a session of its
own, logged to ``DIR/NAME.log`` and recorded in ``DIR/NAME.pid``, so that another process (``make
cluster-down``) can stop them in the reverse order they were started."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

from obflow_dev.supervise import stop_process_group


class Daemons:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        self.directory.mkdir(parents=True, exist_ok=True)
        with (self.directory / f"{name}.log").open("ab") as log:
            process = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                env={**os.environ, **(env or {})},
            )  # fmt: skip
        self.processes[name] = process
        (self.directory / f"{name}.pid").write_text(f"{process.pid} {argv[0]}\n")
        with (self.directory / "started").open("a") as started:
            started.write(name + "\n")
        return process

    def log_tail(self, name: str, chars: int = 2000) -> str:
        return (self.directory / f"{name}.log").read_text(errors="replace")[-chars:]

    def check_running(self) -> None:
        """Raise naming the first daemon started here that has exited, with the end of its log."""
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.returncode}:\n{self.log_tail(name)}")

    def recorded(self) -> list[str]:
        started = self.directory / "started"
        names = started.read_text().split() if started.exists() else []
        return list(dict.fromkeys(names))

    def stop(self, timeout: float = 15, only: str | None = None) -> None:
        """Stop every recorded daemon (or ``only`` that one), the last started first, whichever process
        started it."""
        for name in reversed(self.recorded()):
            if only not in (None, name):
                continue
            if name in self.processes:
                stop_process_group(self.processes.pop(name), timeout)
            else:
                _stop_recorded(self.directory / f"{name}.pid", timeout)
            (self.directory / f"{name}.pid").unlink(missing_ok=True)
        if only is None:
            (self.directory / "started").unlink(missing_ok=True)


def _alive(pid: int, program: str) -> bool:
    """Whether ``pid`` is still the recorded program (not a zombie, not a recycled pid)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z" and command == program


def _stop_recorded(pid_file: Path, timeout: float) -> None:
    if not pid_file.exists():
        return
    pid_text, program = pid_file.read_text().split(maxsplit=1)
    pid, program = int(pid_text), program.strip()
    if not _alive(pid, program):
        return
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and _alive(pid, program):
            time.sleep(0.2)
        if not _alive(pid, program):
            return
    raise RuntimeError(f"could not stop pid {pid} ({program}) recorded in {pid_file}")
