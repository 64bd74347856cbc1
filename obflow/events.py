"""The change-event envelope: one model shared by capture, DataHub transport and the Flink job.

See docs/events.md for the field reference and examples. Two properties matter downstream:

* ``event_id`` is derived only from where the change sits in the source (database, schema, table,
  position), so a change captured twice — after a crash, a reconnect, a replayed batch — carries the
  same id twice, and the Flink job can drop the copy (R9.3, R9.6).
* On DataHub an event travels as one TUPLE record whose leading columns (event id, op, table, primary
  key, position, commit time) can be read without parsing the JSON ``payload`` (the full envelope).
"""

from __future__ import annotations

import hashlib
import time
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, model_validator

Op = Literal["c", "u", "d", "r"]
"""c insert, u update, d delete, r snapshot read."""

OPS: dict[str, str] = {"c": "insert", "u": "update", "d": "delete", "r": "snapshot read"}


def make_event_id(database: str, schema: str, table: str, position: str) -> str:
    """The deterministic id of the change at ``position`` of ``schema.table`` in ``database``.

    128 bits of BLAKE2b over the unit-separated parts: the same position always gives the same id;
    different positions collide with probability ~n²/2¹²⁹ (about 1e-18 for 50 billion events).
    """
    text = "\x1f".join((database, schema, table, position))
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no spaces: equal values always give equal text."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode("utf-8")


class TableSchema(BaseModel):
    """The table's shape when the change was written: its columns, as the catalog types them, and a
    short version that changes whenever they do. The job types a table's output by it when
    ``source.tables[].columns`` is not configured, and starts a new file when it changes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str = Field(min_length=1, description="Changes whenever a column's name, type or order does.")
    columns: tuple[tuple[str, str], ...] = Field(
        description='(name, SQL type) of every captured column in table order, e.g. ["AMOUNT", "number(12,2)"].'
    )


class SourceInfo(BaseModel):
    """Where and when the change happened in the source database."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    method: Literal["changelog", "binlog", "snapshot", "logproxy"] = Field(description="How the change was captured.")
    database: str = Field(description="Database, or OceanBase tenant, the change came from.")
    db_schema: str = Field(alias="schema", description="Schema (Oracle mode) or database (MySQL mode).")
    table: str
    position: str = Field(
        min_length=1,
        description="Where the change sits in the source: change-log sequence, binlog file:offset:row, "
        "SCN, or snapshot:<high-water>:<primary key>. Unique per table.",
    )
    txid: str | None = Field(None, description="Source transaction id, when the method knows it.")
    commit_ts_ms: int = Field(ge=0, description="Commit time of the transaction, ms since the epoch (UTC).")
    table_schema: TableSchema | None = Field(None, description="The table's columns when the change was written.")

    @property
    def qualified_table(self) -> str:
        return f"{self.db_schema}.{self.table}"


class ChangeEvent(BaseModel):
    """One row change: Debezium-style ``before``/``after`` images plus source coordinates."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    event_id: str = Field(pattern=r"^[0-9a-f]{32}$")
    op: Op
    key: dict[str, Any] = Field(min_length=1, description="Primary key columns and values.")
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    source: SourceInfo
    ts_ms: int = Field(ge=0, description="When the capture agent read the change, ms since the epoch.")

    @model_validator(mode="after")
    def _images_fit_op(self) -> ChangeEvent:
        needs_before = self.op in ("u", "d")
        needs_after = self.op in ("c", "u", "r")
        if needs_before != (self.before is not None):
            raise ValueError(f"op '{self.op}' ({OPS[self.op]}) {'needs' if needs_before else 'has no'} before")
        if needs_after != (self.after is not None):
            raise ValueError(f"op '{self.op}' ({OPS[self.op]}) {'needs' if needs_after else 'has no'} after")
        expected = make_event_id(self.source.database, self.source.db_schema, self.source.table, self.source.position)
        if self.event_id != expected:
            raise ValueError(f"event_id {self.event_id} does not match the source position (expected {expected})")
        return self

    @classmethod
    def create(
        cls,
        op: Op,
        *,
        key: dict[str, Any],
        source: SourceInfo,
        before: dict[str, Any] | None = None,
        after: dict[str, Any] | None = None,
        ts_ms: int | None = None,
    ) -> ChangeEvent:
        """A new event whose ``event_id`` is derived from ``source``."""
        return cls(
            event_id=make_event_id(source.database, source.db_schema, source.table, source.position),
            op=op,
            key=key,
            before=before,
            after=after,
            source=source,
            ts_ms=int(time.time() * 1000) if ts_ms is None else ts_ms,
        )

    def to_json(self) -> bytes:
        unknown_shape = {"source": {"table_schema"}} if self.source.table_schema is None else None
        return orjson.dumps(self.model_dump(mode="json", by_alias=True, exclude=unknown_shape))

    @classmethod
    def from_json(cls, data: bytes | str) -> ChangeEvent:
        return cls.model_validate_json(data)

    @property
    def key_json(self) -> str:
        return canonical_json(self.key)

    def to_datahub_values(self) -> list[Any]:
        """The TUPLE record values, in the order of :data:`DATAHUB_FIELDS`."""
        return [
            self.event_id,
            self.op,
            self.source.qualified_table,
            self.key_json,
            self.source.position,
            self.source.commit_ts_ms,
            self.ts_ms,
            self.to_json().decode("utf-8"),
        ]


DATAHUB_FIELDS: list[tuple[str, str]] = [
    ("event_id", "STRING"),
    ("op", "STRING"),
    ("table_name", "STRING"),
    ("pk", "STRING"),
    ("position", "STRING"),
    ("commit_ts_ms", "BIGINT"),
    ("ts_ms", "BIGINT"),
    ("payload", "STRING"),
]
"""The TUPLE schema of change topics: (field name, DataHub field type)."""

PAYLOAD_INDEX = [name for name, _ in DATAHUB_FIELDS].index("payload")
EVENT_ID_INDEX = [name for name, _ in DATAHUB_FIELDS].index("event_id")
