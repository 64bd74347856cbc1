"""The committed source position, kept in one JSON file replaced atomically.

Written only after DataHub accepted every event before the position, so a crash at any moment
resumes from a point with nothing lost behind it (R9.1).
"""

from __future__ import annotations

import os
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
