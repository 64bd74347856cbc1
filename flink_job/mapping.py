"""Change envelopes (JSON lines) → the output rows of one table, as an Arrow table, whole batches at once.

Every output row starts with the change's metadata (``_op``, ``_event_id``, ``_commit_ts``,
``_position``, ``_txid``). A table with configured columns (``source.tables[].columns``) then has
those columns, selected, renamed and typed (obflow.columns → Arrow), holding the row image: the
``after`` image, or ``before`` for a delete. A table without configured columns keeps ``key``,
``before`` and ``after`` as canonical JSON text (lossless, untyped).

Decoding is one ``pyarrow.json.read_json`` per batch with an explicit schema, straight from the
payloads' Arrow buffer (the only decode of a payload). When a batch fails, each payload is tried
alone so exactly the bad ones become dead letters, with Arrow's reason (R2.7).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

from flink_job.formats import concatenated
from obflow.columns import ColumnType
from obflow.config import ColumnConfig, TableConfig
from obflow.events import canonical_json

META = pa.schema(
    [
        ("_op", pa.string()),
        ("_event_id", pa.string()),
        ("_commit_ts", pa.timestamp("ms", tz="UTC")),
        ("_position", pa.string()),
        ("_txid", pa.string()),
    ]
)
JSON_IMAGES = pa.schema([("key", pa.string()), ("before", pa.string()), ("after", pa.string())])
LINE = "__line"
"""A column added while mapping: the row's line number in the batch, to find a failed row's payload."""
OPS = ["c", "u", "d", "r"]


def output_type(column: ColumnType) -> pa.DataType:
    return {
        "int": pa.int64(),
        "decimal": pa.decimal128(max(column.precision, 1), column.scale),
        "float": pa.float32(),
        "double": pa.float64(),
        "string": pa.string(),
        "timestamp": pa.timestamp("us"),
        "timestamp_tz": pa.timestamp("us", tz="UTC"),
        "binary": pa.binary(),
    }[column.kind]


def parse_type(column: ColumnType) -> pa.DataType:
    """The type to read the envelope's JSON value as (exact decimals and base64 binaries are text there)."""
    if column.kind == "int" and column.precision:
        return pa.decimal128(column.precision, 0)  # NUMBER(p,0) arrives as decimal text
    if column.kind == "binary":
        return pa.string()
    return output_type(column)


class EnvelopeError(ValueError):
    """A line is JSON but not a change envelope."""


@dataclass(frozen=True)
class BadLine:
    number: int
    """The payload's index in the batch."""
    line: bytes
    error: str
    stage: str


class TableMapping:
    """How one table's envelopes become output rows."""

    def __init__(self, table: TableConfig | None) -> None:
        self.columns: list[ColumnConfig] = list(table.columns) if table else []
        row = [(c.output_name, output_type(c.column_type)) for c in self.columns]
        self.schema = pa.schema([*META, *(row or JSON_IMAGES)])
        """The schema of the output files."""
        self.numbered_schema = self.schema.append(pa.field(LINE, pa.int64()))
        """The schema of :meth:`rows`: the output schema plus the :data:`LINE` bookkeeping column."""
        source = pa.struct(
            [("table", pa.string()), ("position", pa.string()), ("txid", pa.string()), ("commit_ts_ms", pa.int64())]
        )
        envelope = [("event_id", pa.string()), ("op", pa.string()), ("source", source)]
        if self.columns:
            image = pa.struct([(c.name, parse_type(c.column_type)) for c in self.columns])
            envelope += [("before", image), ("after", image)]
        self.parse_options = pa_json.ParseOptions(
            explicit_schema=pa.schema(envelope), unexpected_field_behavior="ignore"
        )

    def rows(self, payloads: pa.Array) -> tuple[pa.Table, list[BadLine]]:
        """The output rows of ``payloads`` (envelope JSON texts; with a :data:`LINE` column: the index of
        each row's payload), and the payloads that failed. The whole batch is decoded by one Arrow call
        on the payloads' own buffer; only a batch that fails is tried one payload at a time."""
        try:
            return self._rows(newline_delimited(payloads), list(range(len(payloads)))), []
        except (pa.ArrowInvalid, ValueError, orjson.JSONDecodeError):
            pass
        good: list[int] = []
        bad: list[BadLine] = []
        lines = [b"" if p is None else p.encode() for p in payloads.to_pylist()]
        for number, line in enumerate(lines):
            try:
                self._rows(line + b"\n", [number])
                good.append(number)
            except (pa.ArrowInvalid, ValueError, orjson.JSONDecodeError) as exc:
                undecodable = isinstance(exc, EnvelopeError | orjson.JSONDecodeError) or "JSON parse error" in str(exc)
                reason = _reason(exc) if undecodable else self._column_problem(line) or _reason(exc)
                bad.append(BadLine(number, line, reason, "decode" if undecodable else "map"))
        return self._rows(b"".join(lines[n] + b"\n" for n in good), good), bad

    def _column_problem(self, line: bytes) -> str | None:
        """Which configured column of ``line`` cannot be converted, and why (for the dead letter)."""
        envelope = orjson.loads(line)
        for column in self.columns:
            for image in ("before", "after"):
                values = envelope.get(image) or {}
                if column.name not in values:
                    continue
                try:
                    _to_output(_parse_value(values[column.name], column.column_type), column.column_type)
                except (pa.ArrowInvalid, ValueError, TypeError) as exc:
                    return f"column {column.name} ({column.type}) of {image}: {_reason(exc)}"
        return None

    def _rows(self, text: bytes | pa.Buffer, numbers: list[int]) -> pa.Table:
        if not numbers:
            return self.numbered_schema.empty_table()
        options = pa_json.ReadOptions(block_size=max(len(text) + 1, 1 << 20), use_threads=False)
        envelopes = pa_json.read_json(pa.BufferReader(text), read_options=options, parse_options=self.parse_options)
        if envelopes.num_rows != len(numbers):
            raise ValueError(f"{len(numbers)} payloads gave {envelopes.num_rows} envelopes")
        source = envelopes.column("source").combine_chunks()
        op = envelopes.column("op").combine_chunks()
        commit = source.field("commit_ts_ms")
        problems = [
            (pc.invert(pc.fill_null(pc.is_in(op, pa.array(OPS)), False)), f"op is not one of {OPS}"),
            (pc.is_null(commit), "source.commit_ts_ms is missing"),
            (pc.is_null(envelopes.column("event_id")), "event_id is missing"),
        ]
        columns: dict[str, pa.Array | pa.ChunkedArray] = {
            "_op": op,
            "_event_id": envelopes.column("event_id"),
            "_commit_ts": pc.cast(commit, pa.timestamp("ms", tz="UTC")),
            "_position": source.field("position"),
            "_txid": source.field("txid"),
        }
        if self.columns:
            is_delete = pc.fill_null(pc.equal(op, "d"), False)
            deletes = pc.sum(is_delete).as_py() or 0
            before = envelopes.column("before").combine_chunks()
            after = envelopes.column("after").combine_chunks()
            image_missing = pc.if_else(is_delete, pc.is_null(before), pc.is_null(after))
            problems.append((image_missing, "the row image (after; before for a delete) is missing"))
            for index, column in enumerate(self.columns):
                if deletes == 0:  # the common batch: the after image only
                    value = after.field(index)
                elif deletes == len(numbers):
                    value = before.field(index)
                else:
                    value = pc.if_else(is_delete, before.field(index), after.field(index))
                columns[column.output_name] = _to_output(value, column.column_type)
        else:
            columns.update(_json_images(text))
        for failed, message in problems:
            if pc.any(failed).as_py():
                raise EnvelopeError(message)
        columns[LINE] = pa.array(numbers, pa.int64())
        return pa.table(columns, schema=self.numbered_schema)


def _parse_value(value: object, column: ColumnType) -> pa.Array:
    options = pa_json.ParseOptions(explicit_schema=pa.schema([("v", parse_type(column))]))
    text = pa.py_buffer(orjson.dumps({"v": value}))
    return pa_json.read_json(pa.BufferReader(text), parse_options=options).column("v").combine_chunks()


def _to_output(value: pa.Array, column: ColumnType) -> pa.Array:
    if column.kind == "binary":
        return pa.array([None if v is None else base64.b64decode(v) for v in value.to_pylist()], pa.binary())
    return pc.cast(value, output_type(column))


def _json_images(text: bytes | pa.Buffer) -> dict[str, pa.Array]:
    """``key``, ``before`` and ``after`` as canonical JSON text (a table without configured columns:
    untyped, so each envelope is decoded on its own)."""
    keys, befores, afters = [], [], []
    for line in bytes(text).splitlines():
        envelope = orjson.loads(line)
        keys.append(canonical_json(envelope.get("key")))
        befores.append(None if envelope.get("before") is None else canonical_json(envelope["before"]))
        afters.append(None if envelope.get("after") is None else canonical_json(envelope["after"]))
    return {"key": pa.array(keys, pa.string()), "before": pa.array(befores, pa.string()), "after": pa.array(afters)}


def newline_delimited(payloads: pa.Array) -> pa.Buffer:
    """The payload texts one per line, as one buffer: each text with a newline appended, by Arrow."""
    texts = payloads.cast(pa.string()) if payloads.type != pa.string() else payloads
    if texts.null_count:
        raise ValueError("a payload is missing")
    return concatenated(pc.binary_join_element_wise(texts, pa.scalar("\n"), pa.scalar("")))


def _reason(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
