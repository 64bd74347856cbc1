"""The finalizer: committed staging parts → named, typed output files, exactly once after a crash at
any step (R9.2), with retried writes and dead letters (R2.7, R3.6 to R3.8). No Flink here: the staging
parts are written as Flink's FileSink writes them; the dead-letter queue is the real DataHub emulator."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from flink_job.finalize import STAGING, Finalizer, read_part
from flink_job.output import read_output
from obflow.config import ObflowConfig
from obflow.datahub.emulator import DataHubEmulator
from obflow.deadletter import DeadLetterQueue
from obflow.sample import SAMPLE_COLUMNS, change_stream
from tests.datahub.conftest import ACCESS_ID, ACCESS_KEY

HOUR_MS = 3_600_000
NAME = re.compile(
    r"^TRADE\.ORDERS/(\d{4}-\d\d-\d\d)/(\d\d)/TRADE\.ORDERS-(\d{8})T(\d\d)\d{7}Z-st(\d+)-[0-9a-f]{8}\.(jsonl|parquet|csv)$"
)


def make_config(
    tmp_path: Path, fmt: str = "parquet", endpoint: str = "http://127.0.0.1:1", **output: Any
) -> ObflowConfig:
    return ObflowConfig(
        source={"database": "TRADE", "tables": [{"name": "ORDERS", "columns": SAMPLE_COLUMNS}]},
        datahub={"endpoint": endpoint, "access_id": ACCESS_ID, "access_key": ACCESS_KEY, "retry": {"interval": "0s"}},
        output={"format": fmt, "path": str(tmp_path / "out"), "dead_letter_path": str(tmp_path / "dlq"), **output},
    )


def stage(config: ObflowConfig, lines: list[bytes], name: str = "TRADE.ORDERS-abc-0.jsonl", subtask: int = 3) -> Path:
    """A committed staging part as the job writes it: ``#<subtask>`` lines before each batch."""
    folder = Path(config.output.path) / STAGING / "TRADE.ORDERS"
    folder.mkdir(parents=True, exist_ok=True)
    part = folder / name
    part.write_bytes(b"\n".join([f"#{subtask}".encode(), *lines]) + b"\n")
    return part


def output_rows(config: ObflowConfig) -> list[dict[str, Any]]:
    """Rows of every visible output file, read back with the table's schema, whatever the format."""
    return [row for _, _, rows in read_output(config) for row in rows]


def lines_of(count: int, rows: int, **kwargs: Any) -> list[bytes]:
    return [e.to_json() for e in change_stream(count, rows=rows, **kwargs)]


@pytest.mark.parametrize("fmt", ["json", "parquet", "csv"])
def test_a_part_becomes_typed_files_named_by_table_hour_time_and_subtask_R3_1_R3_2_R3_3_R3_6(
    tmp_path: Path, fmt: str
) -> None:
    config = make_config(tmp_path, fmt)
    events = change_stream(300, rows=50, commit_ts_ms=1_795_687_200_000 - 150)  # crosses 10:00 UTC
    part = stage(config, [e.to_json() for e in events])
    result = Finalizer(config).run_once()
    assert not part.exists()
    assert result.rows == 300 and len(result.files) == 2
    names = sorted(str(f.relative_to(config.output.path)) for f in result.files)
    matches = [NAME.match(n) for n in names]
    assert all(matches), names
    assert [(m[2], m[4], m[5]) for m in matches if m] == [("09", "09", "3"), ("10", "10", "3")]
    rows = output_rows(config)
    assert [r["_event_id"] for r in rows] == [e.event_id for e in events]
    first, last_delete = rows[0], next(r for r in reversed(rows) if r["_op"] == "d")
    assert events[0].after is not None
    assert str(first["amount"]) == events[0].after["AMOUNT"]  # an exact decimal
    assert first["created_at"].isoformat() == "2026-11-26T09:59:59.850000+00:00"
    assert first["_commit_ts"] == first["created_at"] and first["version"] == 1
    deleted = next(e for e in events if e.event_id == last_delete["_event_id"])
    assert deleted.before is not None and last_delete["ID"] == deleted.before["ID"]  # a delete keeps its last image


def test_identical_rows_in_all_three_formats_R3_1_R3_2_R3_3(tmp_path: Path) -> None:
    lines = lines_of(500, rows=80)
    by_format = {}
    for fmt in ("json", "parquet", "csv"):
        config = make_config(tmp_path / fmt, fmt)
        stage(config, lines)
        Finalizer(config).run_once()
        by_format[fmt] = output_rows(config)
    assert len(by_format["json"]) == 500
    assert by_format["json"] == by_format["parquet"] == by_format["csv"]


def test_a_table_without_columns_keeps_key_and_images_as_json_text(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    config.source.tables[0].columns = []
    stage(config, lines_of(20, rows=20))
    Finalizer(config).run_once()
    (file,) = [f for f in Path(config.output.path).rglob("*.parquet")]
    row = pq.read_table(file).to_pylist()[0]
    assert row["key"].startswith('{"ID":') and '"AMOUNT":"' in row["after"] and row["before"] is None


def test_crash_after_a_temporary_file_is_written_R9_2(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    stage(config, lines_of(50, rows=50))
    first = Finalizer(config)
    (target,) = first.run_once().files
    target.unlink()
    part = stage(config, lines_of(50, rows=50))  # the part is back, as if the run had died mid-way
    (target.parent / f".{target.name}.tmp").write_bytes(b"half-written")
    assert Finalizer(config).run_once().rows == 50
    assert len(output_rows(config)) == 50 and not part.exists()


def test_crash_after_the_rename_before_the_part_is_removed_R9_2(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    lines = lines_of(50, rows=50)
    stage(config, lines)
    Finalizer(config).run_once()
    stage(config, lines)  # as if the process died before unlinking the part
    Finalizer(config).run_once()
    assert len(output_rows(config)) == 50  # rewritten under the same name, not doubled


def test_in_progress_and_pending_parts_are_left_alone(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    part = stage(config, lines_of(10, rows=10), name=".TRADE.ORDERS-abc-1.jsonl.inprogress.1234")
    assert Finalizer(config).run_once().rows == 0
    assert part.exists()


def test_bad_records_become_dead_letters_with_reason_and_stage_while_good_ones_flow_R2_7(
    tmp_path: Path, emulator: DataHubEmulator
) -> None:
    config = make_config(tmp_path, endpoint=emulator.endpoint)
    good = lines_of(30, rows=30)
    wrong_decimal = good[0].replace(b'"AMOUNT":"', b'"AMOUNT":"x')
    no_op = b'{"event_id": "e", "source": {"table": "ORDERS", "commit_ts_ms": 1}}'
    stage(config, [*good[:10], b"{not json", no_op, wrong_decimal, *good[10:]])
    result = Finalizer(config).run_once()
    assert result.rows == 30 and result.dead_letters == 3
    letters = list(DeadLetterQueue(config).read())
    assert [d.stage for d in letters] == ["decode", "decode", "map"]
    assert letters[0].error.startswith("JSON parse error")
    assert letters[1].error == "op is not one of ['c', 'u', 'd', 'r']"
    assert letters[2].error.startswith("column AMOUNT (NUMBER(12,2)) of after: The string 'x")
    assert [d.event_id for d in letters] == ["", "e", change_stream(1, rows=1)[0].event_id]
    assert [d.payload.encode() for d in letters] == [b"{not json", no_op, wrong_decimal]
    assert all(d.time and d.table == "TRADE.ORDERS" and d.location["file"] for d in letters)
    assert not (tmp_path / "dlq").exists()  # DataHub took them: no dead-letter files


def test_a_write_failing_past_its_retries_sends_the_rows_to_the_dead_letter_queue_R3_7_R3_8(
    tmp_path: Path,
) -> None:
    config = make_config(tmp_path, write_retries=3)  # and DataHub unreachable: dead-letter files
    lines = lines_of(40, rows=40)
    stage(config, lines)
    finalizer = Finalizer(config)
    attempts: list[Path] = []

    def failing_disk(target: Path) -> None:
        attempts.append(target)
        raise OSError(28, "No space left on device")

    finalizer.write_hook = failing_disk
    result = finalizer.run_once()
    assert len(attempts) == 4  # the first try and 3 retries (R3.7)
    assert result.rows == 0 and result.dead_letters == 40
    letters = list(DeadLetterQueue(config).read())
    assert [d.payload.encode() for d in letters] == lines  # every row, with its original payload (R3.8)
    assert {d.stage for d in letters} == {"write"}
    assert "failed 4 times" in letters[0].error
    finalizer.write_hook = lambda _: None
    stage(config, lines_of(5, rows=5, first_position=100), name="TRADE.ORDERS-abc-1.jsonl")
    assert finalizer.run_once().rows == 5  # and the finalizer keeps going


def test_a_write_that_fails_then_succeeds_loses_nothing_R3_7(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    stage(config, lines_of(40, rows=40))
    finalizer = Finalizer(config)
    failures = iter([OSError(5, "I/O error"), OSError(5, "I/O error")])

    def flaky(_: Path) -> None:
        error = next(failures, None)
        if error:
            raise error

    finalizer.write_hook = flaky
    assert finalizer.run_once().rows == 40
    assert len(output_rows(config)) == 40


def test_read_part_takes_the_subtask_from_its_header_lines(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    part = stage(config, lines_of(3, rows=3), subtask=7)
    lines, subtask = read_part(part)
    assert subtask == "7" and len(lines) == 3


@pytest.fixture
def emulator(tmp_path: Path) -> Any:
    emu = DataHubEmulator(str(tmp_path / "datahub"), access_id=ACCESS_ID, access_key=ACCESS_KEY).start()
    yield emu
    emu.stop()
