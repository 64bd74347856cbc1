"""The text formats, encoded a column at a time (flink_job.formats): each JSON line is the object that
orjson makes of the row's Python values (the reference encoder), and both formats read back through
``obflow output show``'s reader as the rows that were written, awkward values included."""

from __future__ import annotations

import base64
import math
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.csv as pa_csv

from flink_job.formats import csv_ready, csv_schema, json_lines
from flink_job.output import read_file

UTC_US = pa.timestamp("us", tz="UTC")
AWKWARD = pa.table(
    {
        "text": pa.array(['say "hi"\\', "line\nbreak\ttab\rcr", "\x01bell\x08\x0c", None, "", "ünï€😀", "/<>"]),
        "double": pa.array([0.1, math.nan, None, 1e20, -0.0, math.inf, -1.5e-300]),
        "single": pa.array([0.1, 1.5, None, 3e38, 2.0, 7.0, -0.25], pa.float32()),
        "binary": pa.array([b"\x00\xff", None, b"", b"a", b"bc", b"\n", b'"']),
        "utc": pa.array([0, -1, None, 253402300799999999, -62135596800000000, 1, 1795686000123456], UTC_US),
        "local": pa.array([0, -1, None, 1, 2, 3, 1_795_686_000], pa.timestamp("s")),
        "amount": pa.array([None, "1.50", "-2", "0", "9999999999.99", "-0.01", "3"]).cast(pa.decimal128(12, 2)),
        "number": pa.array([None, -1, 2**62, 0, 1, -(2**63), 2], pa.int64()),
    }
)


def reference(row: dict[str, Any]) -> dict[str, Any]:
    """What a JSON line must hold for a row of AWKWARD: times as ISO-8601 text at their column's precision
    (``Z`` when in UTC), decimals as exact text, binaries as base64, a NaN or an infinity as null; then
    through orjson and back."""
    expected = dict(row)
    if row["utc"] is not None:
        expected["utc"] = row["utc"].replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"
    if row["local"] is not None:
        expected["local"] = row["local"].isoformat(timespec="seconds")
    expected["amount"] = None if row["amount"] is None else str(row["amount"])
    expected["binary"] = None if row["binary"] is None else base64.b64encode(row["binary"]).decode()
    if row["double"] is not None and not math.isfinite(row["double"]):
        expected["double"] = None
    return dict(orjson.loads(orjson.dumps(expected)))


def test_json_lines_hold_what_orjson_makes_of_each_row_R3_1() -> None:
    lines = json_lines(AWKWARD).splitlines()
    assert len(lines) == AWKWARD.num_rows
    objects = [orjson.loads(line) for line in lines]
    assert list(objects[0]) == AWKWARD.column_names  # the schema's order
    for written, row in zip(objects, AWKWARD.to_pylist(), strict=True):
        expected = reference(row)
        # a float32 is written as its shortest text (0.1, not 0.10000000149011612): the same float32
        assert pa.array([written.pop("single")], pa.float32()).equals(pa.array([expected.pop("single")], pa.float32()))
        assert written == expected
    assert b'"text":"say \\"hi\\"\\\\"' in lines[0] and b"\\u0001bell\\b\\f" in lines[2]
    assert json_lines(AWKWARD.slice(0, 0)) == b""


def test_text_formats_read_back_as_the_rows_written_R3_1_R3_3(tmp_path: Path) -> None:
    readable = AWKWARD.drop_columns(["binary"])  # CSV holds no binaries it can read back
    finite = readable.set_column(1, "double", pa.array([0.1, None, None, 1e20, -0.0, None, -1.5e-300]))
    (tmp_path / "rows.jsonl").write_bytes(json_lines(finite))
    with (tmp_path / "rows.csv").open("wb") as out:
        writer = pa_csv.CSVWriter(out, csv_schema(finite.schema))
        writer.write_table(csv_ready(finite))
        writer.close()
    for name in ("rows.jsonl", "rows.csv"):
        back = read_file(tmp_path / name, finite.schema)
        assert back.to_pylist() == finite.to_pylist(), name
    first = (tmp_path / "rows.csv").read_text().splitlines()[1]
    assert first.split(",")[-4] == '"1970-01-01 00:00:00.000000Z"'  # a time in UTC carries its zone
