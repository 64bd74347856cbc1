"""The change-event envelope: images per op, deterministic ids, JSON and DataHub layouts (R1.2, R9.6)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from obflow.events import (
    DATAHUB_FIELDS,
    EVENT_ID_INDEX,
    PAYLOAD_INDEX,
    ChangeEvent,
    Op,
    SourceInfo,
    make_event_id,
)


def source(position: str = "1042", table: str = "ORDERS") -> SourceInfo:
    return SourceInfo(
        method="changelog",
        database="trade",
        db_schema="TRADE",
        table=table,
        position=position,
        commit_ts_ms=1_700_000_000_000,
    )


def test_update_has_before_and_after_images_R1_2() -> None:
    event = ChangeEvent.create(
        "u", key={"ID": 7}, before={"ID": 7, "QTY": 1}, after={"ID": 7, "QTY": 2}, source=source()
    )
    decoded = ChangeEvent.from_json(event.to_json())
    assert decoded.before == {"ID": 7, "QTY": 1}
    assert decoded.after == {"ID": 7, "QTY": 2}


@pytest.mark.parametrize(
    ("op", "before", "after"),
    [
        ("u", None, {"ID": 1}),
        ("u", {"ID": 1}, None),
        ("c", {"ID": 1}, {"ID": 1}),
        ("c", None, None),
        ("d", None, None),
        ("d", {"ID": 1}, {"ID": 1}),
        ("r", None, None),
    ],
)
def test_images_must_fit_the_op(op: Op, before: dict[str, Any] | None, after: dict[str, Any] | None) -> None:
    with pytest.raises(ValidationError, match=f"op '{op}'"):
        ChangeEvent.create(op, key={"ID": 1}, before=before, after=after, source=source())


def test_every_record_gets_a_unique_identifier_R9_6() -> None:
    ids = {
        ChangeEvent.create("c", key={"ID": i}, after={"ID": i}, source=source(position=str(i))).event_id
        for i in range(10_000)
    }
    assert len(ids) == 10_000


def test_a_replayed_change_gets_the_same_id_R9_6() -> None:
    first = ChangeEvent.create("c", key={"ID": 1}, after={"ID": 1}, source=source(), ts_ms=1)
    replay = ChangeEvent.create("c", key={"ID": 1}, after={"ID": 1}, source=source(), ts_ms=99)
    assert first.event_id == replay.event_id


def test_a_tampered_event_id_is_rejected() -> None:
    event = ChangeEvent.create("c", key={"ID": 1}, after={"ID": 1}, source=source())
    data = orjson.loads(event.to_json())
    data["source"]["position"] = "9999"
    with pytest.raises(ValidationError, match="does not match the source position"):
        ChangeEvent.model_validate(data)


names = st.text(min_size=1, max_size=20)
positions = st.text(min_size=1, max_size=40)


@given(names, names, names, positions, positions)
def test_event_id_is_a_function_of_the_position_R9_6(
    database: str, schema: str, table: str, position: str, other: str
) -> None:
    same = make_event_id(database, schema, table, position)
    assert same == make_event_id(database, schema, table, position)
    assert (make_event_id(database, schema, table, other) == same) == (other == position)


@given(st.tuples(names, names), st.tuples(names, names))
def test_event_id_parts_cannot_be_shifted_between_fields(a: tuple[str, str], b: tuple[str, str]) -> None:
    if a != b and "\x1f" not in "".join(a + b):
        assert make_event_id("db", a[0], a[1], "1") != make_event_id("db", b[0], b[1], "1")


json_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30),
)
rows = st.dictionaries(st.text(min_size=1, max_size=10), json_values, min_size=1, max_size=6)


@given(st.sampled_from(["c", "u", "d", "r"]), rows, rows, positions, st.integers(0, 2**50))
def test_envelope_round_trips_through_json(
    op: Op, before: dict[str, Any], after: dict[str, Any], position: str, ts: int
) -> None:
    event = ChangeEvent.create(
        op,
        key={"K": 1},
        before=before if op in ("u", "d") else None,
        after=after if op in ("c", "u", "r") else None,
        source=source(position=position),
        ts_ms=ts,
    )
    assert ChangeEvent.from_json(event.to_json()) == event


def test_datahub_values_lead_with_the_columns_read_without_parsing() -> None:
    event = ChangeEvent.create("d", key={"B": 2, "A": 1}, before={"A": 1, "B": 2}, source=source("77"))
    values = event.to_datahub_values()
    assert len(values) == len(DATAHUB_FIELDS)
    row = dict(zip([name for name, _ in DATAHUB_FIELDS], values, strict=True))
    assert row["event_id"] == values[EVENT_ID_INDEX] == event.event_id
    assert row["op"] == "d"
    assert row["table_name"] == "TRADE.ORDERS"
    assert row["pk"] == '{"A":1,"B":2}'  # canonical: sorted keys, so equal keys give equal text
    assert row["position"] == "77"
    assert row["commit_ts_ms"] == 1_700_000_000_000
    assert ChangeEvent.from_json(values[PAYLOAD_INDEX]) == event


def test_json_uses_the_documented_field_names() -> None:
    event = ChangeEvent.create("c", key={"ID": 1}, after={"ID": 1}, source=source())
    data = orjson.loads(event.to_json())
    assert set(data) == {"event_id", "op", "key", "before", "after", "source", "ts_ms"}
    assert set(data["source"]) == {
        "method",
        "database",
        "schema",
        "table",
        "position",
        "txid",
        "commit_ts_ms",
    }
