"""The demo's check of the committed output against what the load committed: a disagreement found is
a ``consistency.mismatch`` fault event with its counts (R9.5); agreement logs nothing."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from obflow.config import ObflowConfig
from obflow_dev.demo import verify
from obflow_dev.loadgen import History


def test_a_change_missing_from_the_output_is_logged_as_an_inconsistency_R9_5(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = ObflowConfig(output={"path": str(tmp_path / "out")})
    history = History()
    history.record("orders", (1,), "c", 1)
    result = verify(config, history)
    assert result.missing == 1 and not result.ok
    with caplog.at_level(logging.ERROR, logger="obflow.demo"):
        result.log_inconsistencies()
    (fault,) = [r for r in caplog.records if getattr(r, "event", "") == "consistency.mismatch"]
    assert "0 rows for 1 changes" in fault.getMessage() and "1 missing" in fault.getMessage()
    assert (fault.missing, fault.duplicates, fault.fault) == (1, 0, True)  # type: ignore[attr-defined]


def test_an_output_that_agrees_logs_nothing(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    result = verify(ObflowConfig(output={"path": str(tmp_path / "out")}), History())
    assert result.ok
    with caplog.at_level(logging.DEBUG, logger="obflow.demo"):
        result.log_inconsistencies()
    assert not caplog.records
