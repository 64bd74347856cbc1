"""Fixtures: a DataHub emulator (in-process or as a real `obflow datahub-emulator` process) and
SDK clients for both wire protocols."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from obflow.config import DataHubConfig
from obflow.datahub.client import ensure_change_topic
from obflow_dev.emulator import DataHubEmulator
from tests.support.datahub import ACCESS_ID, ACCESS_KEY, EmulatorProcess, datahub_config, sdk


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[DataHubEmulator]:
    emu = DataHubEmulator(str(tmp_path / "datahub"), access_id=ACCESS_ID, access_key=ACCESS_KEY, admin=True).start()
    yield emu
    emu.stop()


@pytest.fixture(params=["json", "pb"])
def protocol(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def change_topic(emulator: DataHubEmulator, protocol: str) -> DataHubConfig:
    config = datahub_config(emulator.endpoint, protocol)
    ensure_change_topic(sdk(emulator.endpoint, protocol), config)
    return config


@pytest.fixture
def emulator_process(tmp_path: Path) -> Iterator[EmulatorProcess]:
    proc = EmulatorProcess(tmp_path / "datahub-proc")
    yield proc
    proc.kill()
