"""The committed source position, kept in one JSON file replaced atomically.

Written only after DataHub accepted every event before the position, so a crash at any moment
resumes from a point with nothing lost behind it (R9.1).
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson


class PositionStore:
    def __init__(self, state_dir: Path, name: str = "position.json") -> None:
        self.path = state_dir / name
        state_dir.mkdir(parents=True, exist_ok=True)

    def load(self) -> dict[str, Any] | None:
        try:
            data: dict[str, Any] = orjson.loads(self.path.read_bytes())
        except FileNotFoundError:
            return None
        return data

    def save(self, position: dict[str, Any]) -> None:
        tmp = self.path.with_suffix(".tmp")
        with tmp.open("wb") as out:
            out.write(orjson.dumps(position, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
            out.flush()
            os.fsync(out.fileno())
        tmp.replace(self.path)
        directory = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


@dataclass(frozen=True)
class ResnapshotRequest:
    id: str
    table: str
    """``schema.table`` as in the position."""


class ResnapshotRequests:
    """``obflow capture resnapshot`` asks the running agent to re-read a table: one file per request in the
    state directory, removed by the agent once the position that plans the snapshot is committed."""

    def __init__(self, state_dir: Path) -> None:
        self.dir = state_dir / "requests"

    def add(self, table: str) -> ResnapshotRequest:
        self.dir.mkdir(parents=True, exist_ok=True)
        request = ResnapshotRequest(uuid.uuid4().hex[:8], table)
        tmp = self.dir / f".{request.id}.tmp"
        tmp.write_bytes(orjson.dumps({"id": request.id, "table": table}))
        tmp.replace(self.dir / f"{request.id}.json")
        return request

    def pending(self) -> list[ResnapshotRequest]:
        """Oldest first."""
        if not self.dir.is_dir():
            return []
        files = sorted(self.dir.glob("*.json"), key=lambda path: path.stat().st_mtime_ns)
        return [ResnapshotRequest(**orjson.loads(path.read_bytes())) for path in files]

    def done(self, request: ResnapshotRequest) -> None:
        (self.dir / f"{request.id}.json").unlink(missing_ok=True)
