"""`obflow demo` runs the slice that exists end to end and verifies it."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import run_cli


def test_demo_delivers_every_change_exactly_once_in_row_order(tmp_path: Path) -> None:
    result = run_cli("demo", "--rows", "400", "--out", str(tmp_path), timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "exactly once: yes" in result.stdout
    assert "per-row commit order: yes" in result.stdout
    assert "content intact: yes" in result.stdout
    assert "datahub.put_failed" in (tmp_path / "demo.log").read_text()  # the injected faults were retried
