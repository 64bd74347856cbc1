"""Per-table output columns: SQL type text → output type, and config errors that name the column."""

from __future__ import annotations

from pathlib import Path

import pytest

from obflow.columns import ColumnType, parse_sql_type
from tests.support.configs import problems_of, write_config


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("NUMBER(10)", ColumnType("int", 10)),
        ("NUMBER(19)", ColumnType("decimal", 19, 0)),
        ("number(12, 2)", ColumnType("decimal", 12, 2)),
        ("NUMBER", ColumnType("string")),  # unconstrained: exact as text
        ("INTEGER", ColumnType("int")),
        ("BIGINT UNSIGNED", ColumnType("decimal", 20, 0)),
        ("BINARY_DOUBLE", ColumnType("double")),
        ("FLOAT(53)", ColumnType("double")),
        ("BINARY_FLOAT", ColumnType("float")),
        ("VARCHAR2(40 CHAR)", ColumnType("string")),
        ("NVARCHAR2(10)", ColumnType("string")),
        ("CLOB", ColumnType("string")),
        ("DATE", ColumnType("timestamp")),
        ("DATETIME(6)", ColumnType("timestamp")),
        ("TIMESTAMP(6)", ColumnType("timestamp_tz")),
        ("TIMESTAMP(9) WITH TIME ZONE", ColumnType("timestamp_tz")),
        ("TIMESTAMP WITH LOCAL TIME ZONE", ColumnType("timestamp_tz")),
        ("RAW(16)", ColumnType("binary")),
        ("LONG RAW", ColumnType("binary")),
        ("BLOB", ColumnType("binary")),
        ("INTERVAL DAY(2) TO SECOND(6)", ColumnType("string")),
    ],
)
def test_oracle_and_mysql_types_map_to_output_types(sql: str, expected: ColumnType) -> None:
    assert parse_sql_type(sql) == expected


def test_an_unknown_column_type_is_a_config_error_naming_the_column_and_the_fix_R10_3(tmp_path: Path) -> None:
    columns = [{"name": "ID", "type": "NUMBER(10)"}, {"name": "NAME", "type": "VARCHAR3(20)"}]
    path = write_config(tmp_path, {"source": {"tables": [{"name": "T", "columns": columns}]}})
    problems = problems_of(path)
    (key,) = problems
    assert key == "source.tables.0.columns.1.type"
    assert "VARCHAR2" in problems[key] and "supported:" in problems[key]


def test_output_names_must_be_unique_and_not_reserved(tmp_path: Path) -> None:
    columns = [{"name": "A", "type": "INT", "rename": "x"}, {"name": "B", "type": "INT", "rename": "x"}]
    path = write_config(tmp_path, {"source": {"tables": [{"name": "T", "columns": columns}]}})
    assert "['x'] appear twice (use rename)" in problems_of(path)["source.tables.0.columns"]
    path = write_config(tmp_path, {"source": {"tables": [{"name": "T", "columns": [{"name": "_op", "type": "INT"}]}]}})
    assert "reserved for metadata" in problems_of(path)["source.tables.0.columns"]
