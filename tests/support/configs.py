"""Config files written for a test, and the problems ``obflow config validate`` names in them."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from obflow.config import ConfigError, load_config


def write_config(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def problems_of(path: Path) -> dict[str, str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return {p.key: str(p) for p in caught.value.problems}
