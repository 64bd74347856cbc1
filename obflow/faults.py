"""Test fault hooks: one environment variable makes a named point of the product fail once.

``OBFLOW_FAULT=<point>:<action>:<marker file>[:<after>]``: the ``after``-th time (default 1) the code
passes ``point``, it ``fail``\\s (raises :class:`InjectedFaultError`: in the Flink job a task failure, which
Flink restarts) or ``crash``\\es (the process exits at once with 137, as after a SIGKILL), and writes the
marker file first, so it happens once whatever restarts follow. Unset, a point costs one comparison.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

ENV = "OBFLOW_FAULT"
ACTIONS = ("fail", "crash")


class InjectedFaultError(RuntimeError):
    """The failure a test asked for."""


@dataclass
class Fault:
    point: str
    action: str
    marker: Path
    after: int = 1
    passed: int = 0

    def reached(self, point: str, count: int = 1) -> None:
        """``point`` was passed ``count`` times (e.g. records processed)."""
        if point != self.point or self.marker.exists():
            return
        self.passed += count
        if self.passed < self.after:
            return
        self.marker.parent.mkdir(parents=True, exist_ok=True)
        self.marker.write_text(f"{self.action} at {point} after {self.passed} at {time.time()}\n")
        if self.action == "crash":
            os._exit(137)
        raise InjectedFaultError(f"injected fault at {point} after {self.passed} (test hook {ENV})")


class NoFault:
    def reached(self, point: str, count: int = 1) -> None:
        pass


def from_env() -> Fault | NoFault:
    spec = os.environ.get(ENV, "")
    if not spec:
        return NoFault()
    parts = spec.split(":")
    if len(parts) < 3 or parts[1] not in ACTIONS:
        raise ValueError(f"{ENV}={spec!r}: expected <point>:<{'|'.join(ACTIONS)}>:<marker file>[:<after>]")
    after = int(parts.pop()) if len(parts) > 3 and parts[-1].isdigit() else 1
    return Fault(parts[0], parts[1], Path(":".join(parts[2:])), after)
