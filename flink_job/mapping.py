"""Change envelopes (JSON lines) → the output rows of one table, as Arrow tables, whole batches at once.

Every output row starts with the change's metadata (``_op``, ``_event_id``, ``_commit_ts``,
``_position``, ``_txid``), then the row image (the ``after`` image, or ``before`` for a delete) as
typed columns (obflow.columns → Arrow):

* a table with configured columns (``source.tables[].columns``): those columns, selected, renamed and
  typed as configured, whatever the table's shape;
* a table without: the columns its events say the table had when the change was written
  (``source.table_schema``, from the database catalog), so the output follows the table: each shape
  (schema version) is one Arrow schema, and a run of changes of one shape is mapped on its own (a
  file never mixes two shapes: flink_job.shard rolls it). A column whose type has no typed form
  (MySQL JSON, ENUM, spatial types) holds its value's canonical JSON text;
* events that do not say (written by another producer): ``key``, ``before`` and ``after`` as
  canonical JSON text (lossless, untyped).

Decoding is one ``pyarrow.json.read_json`` per batch with an explicit schema, straight from the
payloads' Arrow buffer (the only decode of a payload). When a batch fails, each payload is tried
alone so exactly the bad ones become dead letters, with Arrow's reason (R2.7).
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

from flink_job.formats import concatenated
from obflow.columns import ColumnType, parse_sql_type
from obflow.config import ColumnConfig, TableConfig
from obflow.events import TableSchema, canonical_json

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
SCHEMA_VERSION = b"obflow.schema_version"
"""The Arrow (and Parquet) schema metadata key naming the table shape of a file's rows."""
_SHAPE = pa.struct([("version", pa.string()), ("columns", pa.list_(pa.list_(pa.string())))])


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


class ShapeChangedError(Exception):
    """A batch holds changes of another table shape than the mapping's (FollowingMapping splits it)."""

    def __init__(self, versions: list[str | None]) -> None:
        super().__init__(f"{len(versions)} changes of more than one table shape")
        self.versions = versions
        """Each change's shape version, as decoded."""


class TableMapping:
    """How one table's envelopes of one shape become output rows."""

    def __init__(self, table: TableConfig | None, shape: TableSchema | None = None, one_shape: bool = False) -> None:
        """``shape``: the table's columns from its events, used when ``table`` configures none; without
        either, the row images stay JSON text. ``one_shape``: every event must be of ``shape`` (or carry
        none, without one), else :class:`ShapeChangedError`."""
        self.shape = None if table and table.columns else shape
        self.one_shape = one_shape
        self.columns: list[ColumnConfig] = list(table.columns) if table and table.columns else []
        self.text_columns: dict[str, str] = {}
        """Columns of the shape whose type has no typed form (their values' JSON text), by output name."""
        if self.shape is not None:
            for name, sql_type in self.shape.columns:
                output = _output_name(name)
                try:
                    parse_sql_type(sql_type)
                except ValueError:
                    self.text_columns[output] = name
                    continue
                self.columns.append(ColumnConfig(name=name, type=sql_type, rename=None if output == name else output))
        row = {c.output_name: output_type(c.column_type) for c in self.columns}
        row.update({output: pa.string() for output in self.text_columns})
        if self.shape is not None:  # in the table's order
            row = {output: row[output] for output in (_output_name(name) for name, _ in self.shape.columns)}
        metadata = None if self.shape is None else {SCHEMA_VERSION: self.shape.version.encode()}
        images = JSON_IMAGES if self.shape is None and not self.columns else []
        self.schema = pa.schema([*META, *row.items(), *images], metadata=metadata)
        """The schema of the output files."""
        self.numbered_schema = self.schema.append(pa.field(LINE, pa.int64()))
        """The schema of :meth:`rows`: the output schema plus the :data:`LINE` bookkeeping column."""
        source_fields = [("table", pa.string()), ("position", pa.string()), ("txid", pa.string()),
                         ("commit_ts_ms", pa.int64())]  # fmt: skip
        if one_shape:  # the version only: the rest of the shape is known
            source_fields.append(("table_schema", pa.struct([("version", pa.string())])))
        source = pa.struct(source_fields)
        envelope = [("event_id", pa.string()), ("op", pa.string()), ("source", source)]
        if self.columns:
            image = pa.struct([(c.name, parse_type(c.column_type)) for c in self.columns])
            envelope += [("before", image), ("after", image)]
        self.parse_options = pa_json.ParseOptions(
            explicit_schema=pa.schema(envelope), unexpected_field_behavior="ignore"
        )

    @property
    def version(self) -> str | None:
        return None if self.shape is None else self.shape.version

    def runs(self, payloads: pa.Array) -> tuple[list[pa.Table], list[BadLine]]:
        """:meth:`rows` as one run (the interface of :class:`FollowingMapping`)."""
        rows, bad = self.rows(payloads)
        return ([rows] if rows.num_rows else []), bad

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
        if self.one_shape:
            versions = source.field("table_schema").field("version")
            same = (
                pc.is_null(versions) if self.version is None else pc.fill_null(pc.equal(versions, self.version), False)
            )
            if not pc.all(same).as_py():
                raise ShapeChangedError(versions.to_pylist())
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
        elif not self.text_columns:
            columns.update(_json_images(text))
        if self.text_columns:
            columns.update(_text_columns(text, self.text_columns))
        for failed, message in problems:
            if pc.any(failed).as_py():
                raise EnvelopeError(message)
        columns[LINE] = pa.array(numbers, pa.int64())
        return pa.table(columns, schema=self.numbered_schema)


def _output_name(column: str) -> str:
    """A column's name in the output: its own, with a trailing ``_`` if a metadata column has it."""
    return f"{column}_" if column in META.names or column == LINE else column


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


def _text_columns(text: bytes | pa.Buffer, names: dict[str, str]) -> dict[str, pa.Array]:
    """The values of ``names`` (output name → column) in each envelope's row image as canonical JSON
    text (decoded one by one: only for shapes with a column of a type that has no typed form)."""
    values: dict[str, list[str | None]] = {output: [] for output in names}
    for line in bytes(text).splitlines():
        envelope = orjson.loads(line)
        image = (envelope.get("before") if envelope.get("op") == "d" else envelope.get("after")) or {}
        for output, name in names.items():
            value = image.get(name)
            values[output].append(None if value is None else canonical_json(value))
    return {output: pa.array(texts, pa.string()) for output, texts in values.items()}


class FollowingMapping:
    """How the envelopes of a table without configured columns become output rows: typed by the shape
    each event carries, a :class:`TableMapping` per shape, a batch split into runs of one shape."""

    def __init__(self, shapeless_error: str | None = None) -> None:
        """``shapeless_error``: changes that do not carry their shape are not mapped but rejected (stage
        ``route``) with this reason (a table not in ``source.tables``: only its shape can type it)."""
        self.shapes: dict[str | None, TableMapping] = {}
        self.current: TableMapping | None = None
        self.shapeless_error = shapeless_error

    def runs(self, payloads: pa.Array) -> tuple[list[pa.Table], list[BadLine]]:
        """The output rows of ``payloads``, as runs of consecutive changes of one shape (each its own
        schema, with :data:`LINE` numbering rows in ``payloads``), and the payloads that failed. The
        common batch, all of the shape of the batch before, is decoded once."""
        versions: list[str | None] | None = None
        if self.current is not None:
            try:
                return self.current.runs(payloads)
            except ShapeChangedError as changed:
                if len(changed.versions) == len(payloads):  # the whole batch was decoded: its versions are known
                    versions = changed.versions
        runs: list[pa.Table] = []
        bad: list[BadLine] = []
        for start, end, shape in _shape_runs(payloads, versions, self.shapes):
            if shape is None and self.shapeless_error is not None:
                bad += _rejected(payloads, start, end, self.shapeless_error, "route")
                continue
            mapping = self.shapes.get(shape.version if shape else None)
            if mapping is None:
                mapping = self.shapes[shape.version if shape else None] = TableMapping(None, shape, one_shape=True)
            self.current = mapping
            try:
                rows, failed = mapping.rows(payloads.slice(start, end - start))
            except ShapeChangedError:  # a table_schema that is not one: none of the run can be typed
                reason = "source.table_schema is not {version: text, columns: [[name, SQL type], ...]}"
                bad += _rejected(payloads, start, end, reason, "decode")
                continue
            if rows.num_rows:
                numbers = pc.add(rows.column(LINE), pa.scalar(start, pa.int64()))
                runs.append(rows.set_column(rows.schema.get_field_index(LINE), LINE, numbers))
            bad += [BadLine(line.number + start, line.line, line.error, line.stage) for line in failed]
        return runs, bad


def _rejected(payloads: pa.Array, start: int, end: int, reason: str, stage: str) -> list[BadLine]:
    lines = payloads.slice(start, end - start).to_pylist()
    return [BadLine(start + number, (payload or "").encode(), reason, stage) for number, payload in enumerate(lines)]


def _shape_runs(
    payloads: pa.Array, known_versions: list[str | None] | None, known: dict[str | None, TableMapping]
) -> list[tuple[int, int, TableSchema | None]]:
    """``(start, end, shape)`` of each run of consecutive payloads of one table shape. A payload whose
    shape cannot be read joins the run before it (its mapping then says what is wrong with it).
    ``known_versions``: each payload's version, when already decoded; then only the first payload of a
    shape not ``known`` is decoded again, for its columns."""
    if known_versions is not None:

        def shape_at_known(index: int) -> object:
            mapping = known.get(known_versions[index])
            return mapping.shape if mapping is not None else _shape_of(payloads[index])

        return _runs(list(known_versions), shape_at_known)
    options = pa_json.ParseOptions(
        explicit_schema=pa.schema([("source", pa.struct([("table_schema", _SHAPE)]))]),
        unexpected_field_behavior="ignore",
    )
    try:
        text = newline_delimited(payloads)
        read = pa_json.ReadOptions(block_size=max(text.size + 1, 1 << 20), use_threads=False)
        decoded = pa_json.read_json(pa.BufferReader(text), read_options=read, parse_options=options)
        shapes = decoded.column("source").combine_chunks().field("table_schema")
        versions: list[object] = shapes.field("version").to_pylist()
        shape_at: Callable[[int], object] = lambda index: shapes.slice(index, 1).to_pylist()[0]  # noqa: E731
    except (pa.ArrowInvalid, ValueError):
        found = [_shape_of(p) for p in payloads.to_pylist()]
        versions = [v.get("version") if isinstance(v, dict) else v for v in found]
        shape_at = found.__getitem__
    return _runs(versions, shape_at)


def _runs(versions: list[object], shape_at: Callable[[int], object]) -> list[tuple[int, int, TableSchema | None]]:
    runs: list[tuple[int, int, TableSchema | None]] = []
    for index, version in enumerate(versions):
        if runs and (version is _UNREADABLE or version == versions[runs[-1][0]]):
            runs[-1] = (runs[-1][0], index + 1, runs[-1][2])
        else:
            shape = shape_at(index)
            runs.append((index, index + 1, shape if isinstance(shape, TableSchema) else _parsed_shape(shape)))
    return runs


_UNREADABLE = object()


def _shape_of(payload: str | pa.Scalar | None) -> object:
    """The ``source.table_schema`` of one payload, or :data:`_UNREADABLE`."""
    if isinstance(payload, pa.Scalar):
        payload = payload.as_py()
    try:
        envelope = orjson.loads(payload or "")
        return envelope["source"].get("table_schema") if isinstance(envelope, dict) else _UNREADABLE
    except (orjson.JSONDecodeError, KeyError, AttributeError, TypeError):
        return _UNREADABLE


def _parsed_shape(value: object) -> TableSchema | None:
    if not isinstance(value, dict):
        return None
    try:
        return TableSchema.model_validate(value)
    except ValueError:
        return None


def newline_delimited(payloads: pa.Array) -> pa.Buffer:
    """The payload texts one per line, as one buffer: each text with a newline appended, by Arrow."""
    texts = payloads.cast(pa.string()) if payloads.type != pa.string() else payloads
    if texts.null_count:
        raise ValueError("a payload is missing")
    return concatenated(pc.binary_join_element_wise(texts, pa.scalar("\n"), pa.scalar("")))


def _reason(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
