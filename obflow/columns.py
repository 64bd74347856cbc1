"""Column types of captured tables as the output files type them: SQL type text → a :class:`ColumnType`.

The output is typed from the configured per-table column list (``source.tables[].columns``), written
with the database's own type names (Oracle or MySQL), e.g. ``NUMBER(12,2)``, ``VARCHAR2(40)``,
``TIMESTAMP(6) WITH TIME ZONE``. This module parses and checks them (no pyarrow, so config validation
stays light); ``flink_job.mapping`` turns a :class:`ColumnType` into Arrow types. How the capture
agent renders each kind in the envelope (capture_agent/values.py) decides the JSON form parsed here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Kind = Literal["int", "decimal", "float", "double", "string", "timestamp", "timestamp_tz", "binary"]

_TYPE = re.compile(
    # NAME [(precision [CHAR|BYTE] [, scale])] [WORDS...]
    r"^\s*(?P<name>[A-Za-z][A-Za-z0-9_ ]*?)\s*(?:\(\s*(?P<p>\d+)\s*(?:CHAR|BYTE)?\s*(?:,\s*(?P<s>-?\d+)\s*)?\))?"
    r"(?P<suffix>(?:\s+[A-Za-z]+)*)\s*$",
    re.IGNORECASE,
)
_INTEGERS = {"TINYINT", "SMALLINT", "MEDIUMINT", "INT", "INTEGER", "BIGINT", "PLS_INTEGER", "BINARY_INTEGER", "YEAR"}
_DECIMALS = {"NUMBER", "NUMERIC", "DECIMAL", "DEC"}
_FLOATS = {"FLOAT", "BINARY_FLOAT", "REAL"}
_DOUBLES = {"DOUBLE", "BINARY_DOUBLE", "DOUBLE PRECISION"}
_STRINGS = {
    "VARCHAR2", "NVARCHAR2", "VARCHAR", "CHAR", "NCHAR", "CLOB", "NCLOB", "TEXT", "TINYTEXT", "MEDIUMTEXT",
    "LONGTEXT", "LONG", "ROWID", "UROWID", "ENUM", "SET", "TIME", "INTERVAL",
}  # fmt: skip
_BINARIES = {"RAW", "LONG RAW", "BLOB", "BINARY", "VARBINARY", "TINYBLOB", "MEDIUMBLOB", "LONGBLOB", "BIT"}
_TEMPORALS = {"DATE", "DATETIME", "TIMESTAMP"}
SUPPORTED = sorted(_INTEGERS | _DECIMALS | _FLOATS | _DOUBLES | _STRINGS | _BINARIES | _TEMPORALS)
_NUMBER_ATTRIBUTES = {"UNSIGNED", "SIGNED", "ZEROFILL"}
MAX_DECIMAL_PRECISION = 38
MAX_INT64_DIGITS = 18


@dataclass(frozen=True)
class ColumnType:
    """What a column becomes in the output; ``precision``/``scale`` only for decimals."""

    kind: Kind
    precision: int = 0
    scale: int = 0


def parse_sql_type(text: str) -> ColumnType:
    """The output type of a column declared as ``text``; ValueError naming what is allowed otherwise.

    NUMBER(p,0) with p ≤ 18 is a 64-bit integer, other NUMBER(p,s) an exact decimal, NUMBER without a
    precision stays exact as text; DATE and DATETIME are timestamps without a zone, TIMESTAMP (and
    WITH [LOCAL] TIME ZONE) a UTC timestamp, as the capture agent renders them.
    """
    if text.strip().upper().startswith("INTERVAL"):
        return ColumnType("string")
    match = _TYPE.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a SQL type; write it as the database does, e.g. NUMBER(12,2)")
    name = " ".join(match["name"].upper().split())
    suffix = " ".join(match["suffix"].upper().split())
    precision = int(match["p"]) if match["p"] else 0
    scale = int(match["s"]) if match["s"] else 0
    if name == "TIMESTAMP" and suffix in {"", "WITH TIME ZONE", "WITH LOCAL TIME ZONE"}:
        return ColumnType("timestamp_tz")
    if f"{name} {suffix}" in {"LONG RAW", "DOUBLE PRECISION"}:
        name, suffix = f"{name} {suffix}", ""
    if suffix and name in _INTEGERS | _DECIMALS | _FLOATS | _DOUBLES and set(suffix.split()) <= _NUMBER_ATTRIBUTES:
        if name == "BIGINT" and "UNSIGNED" in suffix:
            return ColumnType("decimal", 20, 0)  # beyond int64
        suffix = ""
    if suffix:
        raise ValueError(f"{text!r}: unexpected {suffix!r} after the type name")
    if name in _INTEGERS:
        return ColumnType("int")
    if name in _DECIMALS:
        if not precision:
            return ColumnType("string")
        if precision > MAX_DECIMAL_PRECISION or not 0 <= scale <= precision:
            raise ValueError(f"{text!r}: precision must be 1..38 and scale 0..precision")
        if scale == 0 and precision <= MAX_INT64_DIGITS:
            return ColumnType("int", precision)
        return ColumnType("decimal", precision, scale)
    if name in _FLOATS:
        return ColumnType("float" if name != "FLOAT" or precision <= 24 else "double")
    if name in _DOUBLES:
        return ColumnType("double")
    if name in _STRINGS:
        return ColumnType("string")
    if name in _BINARIES:
        return ColumnType("binary")
    if name in {"DATE", "DATETIME"}:
        return ColumnType("timestamp")
    close = [t for t in SUPPORTED if t.startswith(name[:3])]
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise ValueError(f"unsupported column type {text!r}{hint}; supported: {', '.join(SUPPORTED)}")
