"""The Parquet/CSV converter repeats safely after a crash at any step (R9.2)."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from flink_job.convert import convert_all, convert_file, rows_of
from obflow.sample import change_stream


def part_file(folder: Path, name: str = "ORDERS-abc-0.jsonl", count: int = 50) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(b"\n".join(e.to_json() for e in change_stream(count, rows=count)) + b"\n")
    return path


def visible_rows(root: Path) -> list[str]:
    return sorted(
        str(r["event_id"])
        for f in root.rglob("*.parquet")
        if not f.name.startswith(".")
        for r in pq.read_table(f).to_pylist()
    )


def test_crash_after_the_temporary_file_is_written(tmp_path: Path) -> None:
    part = part_file(tmp_path / "T.ORDERS" / "2026-11-26--10")
    expected = sorted(str(r["event_id"]) for r in rows_of(part.read_bytes().splitlines()).to_pylist())
    (part.parent / f".{part.with_suffix('.parquet').name}.tmp").write_bytes(b"half-written")  # crash here
    assert convert_all(tmp_path, "parquet") == 1
    assert visible_rows(tmp_path) == expected
    assert not part.exists()


def test_crash_after_the_rename_before_the_input_is_removed(tmp_path: Path) -> None:
    part = part_file(tmp_path / "T.ORDERS" / "h")
    content = part.read_bytes()
    convert_file(part, "parquet")
    part.write_bytes(content)  # as if the process died before unlinking the input
    assert convert_all(tmp_path, "parquet") == 1
    assert len(visible_rows(tmp_path)) == 50  # overwritten under the same name, not doubled


def test_in_progress_and_dead_letter_files_are_left_alone(tmp_path: Path) -> None:
    part_file(tmp_path / "T.ORDERS", ".ORDERS-abc-0.jsonl.inprogress.123")
    dead = tmp_path / "_dead_letter" / "x.jsonl"
    dead.parent.mkdir()
    dead.write_text("not an envelope\n")
    assert convert_all(tmp_path, "csv") == 0
    assert dead.exists()


def test_a_file_that_is_not_envelopes_is_kept_and_reported(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    bad = tmp_path / "T.ORDERS" / "ORDERS-x-0.jsonl"
    bad.parent.mkdir()
    bad.write_text('{"no": "envelope"}\n')
    assert convert_all(tmp_path, "parquet") == 0
    assert bad.exists()
    assert "not convertible" in caplog.text
