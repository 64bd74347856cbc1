"""One rendering of column values for envelopes, whether read by a trigger (JSON) or a snapshot SELECT.

Both paths select :func:`capture_agent.dialects.column_expression`, so values arrive already mostly
uniform; this finishes the job per column type: exact decimals as text, TIMESTAMP (epoch seconds) as
UTC ISO-8601 with ``Z`` (from epoch seconds, or a binlog's local datetime), DATETIME/DATE/TIME as
ISO-8601 text, binary as base64 without line breaks.
"""

from __future__ import annotations

import datetime as dt
import decimal
from typing import Any

import orjson

from capture_agent.dialects import BINARY_TYPES, DECIMAL_TYPES, TIMESTAMP_TYPES, TableInfo

_TEMPORAL = {"datetime", "date", "time"}


def normalize(data_type: str, value: Any) -> Any:
    if value is None:
        return None
    kind = data_type.lower()
    if kind in DECIMAL_TYPES:
        return str(value)
    if kind in TIMESTAMP_TYPES and isinstance(value, dt.datetime):
        # a TIMESTAMP decoded from the binlog
        moment = value.astimezone(dt.UTC)  # naive datetimes are taken as local time
        return moment.isoformat().replace("+00:00", "Z")
    if kind in TIMESTAMP_TYPES and not isinstance(value, str):
        seconds = decimal.Decimal(str(value))
        moment = dt.datetime.fromtimestamp(float(seconds), dt.UTC)
        micros = int((seconds % 1) * 1_000_000)
        return moment.replace(microsecond=micros).isoformat().replace("+00:00", "Z")
    if kind in _TEMPORAL or isinstance(value, dt.datetime | dt.date | dt.time | dt.timedelta):
        text = value.isoformat() if hasattr(value, "isoformat") else str(value)
        return text.replace(" ", "T") if kind == "datetime" else text
    if kind in BINARY_TYPES:
        text = value.decode("ascii") if isinstance(value, bytes | bytearray) else str(value)
        return text.replace("\n", "")
    if kind == "json" and isinstance(value, str | bytes):
        return orjson.loads(value)
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, bytes | bytearray):
        return value.decode("utf-8", errors="replace")
    return value


def normalize_row(table: TableInfo, row: dict[str, Any]) -> dict[str, Any]:
    types = {c.name: c.data_type for c in table.columns}
    return {name: normalize(types.get(name, ""), value) for name, value in row.items()}
