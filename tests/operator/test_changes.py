"""Every spec field is classified once, and a change asks for exactly what its fields need."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from obflow_operator.changes import CLASSIFICATION, Change, classify, entry_for, required_actions
from obflow_operator.spec import DataPipelineSpec
from obflow_operator.validation import parse_spec
from tests.support.pipelines import FULL, fields_by_alias, spec_of


def leaf_paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    paths = []
    for alias, nested in fields_by_alias(model).items():
        paths += leaf_paths(nested, f"{prefix}{alias}.") if nested else [f"{prefix}{alias}"]
    return paths


def test_every_spec_field_is_classified_once_and_every_entry_is_used() -> None:
    leaves = leaf_paths(DataPipelineSpec)
    used = {entry_for(path) for path in leaves}  # raises for an unclassified field
    assert used == set(CLASSIFICATION), f"unused entries: {set(CLASSIFICATION) - used}"
    assert "flink.checkpoint.interval" in leaves and "source.tables.primaryKey" in leaves


def changes(**edits: Any) -> dict[str, frozenset[Change]]:
    return classify(parse_spec(spec_of(FULL)), parse_spec(spec_of(FULL, **edits)))


def test_changes_ask_for_what_their_fields_need() -> None:
    assert changes() == {}
    assert changes(flink__parallelism=12) == {"flink.parallelism": {Change.RESCALE}}
    assert changes(capture__pollInterval="1s") == {"capture.pollInterval": {Change.CAPTURE}}
    assert changes(source__host="ob2.db.svc") == {"source.host": {Change.CAPTURE}}
    assert changes(flink__checkpoint__interval="1m") == {"flink.checkpoint.interval": {Change.UPGRADE}}
    assert changes(flink__image="obflow/flink:0.2.0") == {"flink.image": {Change.UPGRADE}}
    assert changes(datahub__shards=16) == {"datahub.shards": {Change.CAPTURE, Change.UPGRADE}}
    assert changes(autoscaler__targetUtilization=0.6) == {"autoscaler.targetUtilization": {Change.OPERATOR_ONLY}}
    assert changes(flink__jobManager__replicas=3) == {"flink.jobManager.replicas": {Change.JOBMANAGERS}}
    assert changes(flink__configuration={"pipeline.object-reuse": "true"}) == {
        "flink.configuration.execution.checkpointing.min-pause": {Change.UPGRADE},
        "flink.configuration.pipeline.object-reuse": {Change.UPGRADE},
    }


def test_required_actions_combine_every_field() -> None:
    old = parse_spec(spec_of(FULL))
    new = parse_spec(spec_of(FULL, flink__parallelism=12, capture__batchSize=10, alerts__load=0.9))
    assert required_actions(old, new) == {Change.RESCALE, Change.CAPTURE, Change.OPERATOR_ONLY}


def test_a_table_without_columns_added_or_removed_is_a_capture_change_and_one_with_columns_an_upgrade() -> None:
    old = parse_spec(spec_of(FULL))
    tables = spec_of(FULL)["source"]["tables"]
    added = parse_spec(spec_of(FULL, source__tables=[*tables, {"name": "PAYMENTS"}]))
    removed = parse_spec(spec_of(FULL, source__tables=[t for t in tables if t.get("columns")]))
    typed = parse_spec(spec_of(FULL, source__tables=[*tables, {"name": "PAYMENTS", "columns": [
        {"name": "ID", "type": "NUMBER(12)"}]}]))  # fmt: skip
    retyped = [dict(t) for t in tables]
    retyped[1]["columns"] = retyped[1]["columns"][:2]
    assert classify(old, added) == {"source.tables": {Change.CAPTURE}}
    assert classify(old, removed) == {"source.tables": {Change.CAPTURE}}
    assert classify(old, typed) == {"source.tables": {Change.CAPTURE, Change.UPGRADE}}
    assert classify(old, parse_spec(spec_of(FULL, source__tables=retyped))) == {
        "source.tables": {Change.CAPTURE, Change.UPGRADE}
    }
