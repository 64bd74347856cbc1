"""What the capture agent keeps in ``capture.state_dir``, each in a JSON file replaced atomically: the
committed source position, re-snapshot requests, and the tables' shapes seen.

The position is written only after DataHub accepted every event before it, so a crash at any moment
resumes from a point with nothing lost behind it (R9.1).
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from obflow.events import TableSchema


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


class ShapeHistory:
    """Every shape of the captured tables the agent has built events for, by schema version, kept in
    ``capture.state_dir``: a change a trigger of an older shape logged before a restart is still
    labelled with the shape it was written in. One entry per schema change ever seen."""

    def __init__(self, state_dir: Path | None) -> None:
        """``state_dir`` None: kept in memory only."""
        self.store = None if state_dir is None else PositionStore(state_dir, "shapes.json")
        saved = (self.store.load() if self.store else None) or {}
        self.shapes = {version: TableSchema.model_validate(shape) for version, shape in saved.items()}

    def get(self, version: str) -> TableSchema | None:
        return self.shapes.get(version)

    def add(self, shape: TableSchema) -> None:
        if shape.version in self.shapes:
            return
        self.shapes[shape.version] = shape
        if self.store is not None:
            self.store.save({version: known.model_dump(mode="json") for version, known in self.shapes.items()})
