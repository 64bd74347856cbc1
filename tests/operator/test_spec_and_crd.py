"""The DataPipeline spec model, the CRD generated from it, and the runtime config built from a spec."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from pydantic import BaseModel

from obflow.config import ObflowConfig, flatten
from obflow.flink_rest import JobDetails, JobOverview, VertexMetrics
from obflow_operator.builders import validate
from obflow_operator.crd import crd_manifest, crd_yaml
from obflow_operator.observe import Observation, observed_phase
from obflow_operator.spec import DataPipelineSpec, SpecError, runtime_config, spec_field
from obflow_operator.status import IllegalTransitionError, Phase, check_transition
from obflow_operator.validation import parse_spec
from tests.support.pipelines import FULL, MINIMAL, fields_by_alias, spec_of
from tests.support.repo import REPO_ROOT


def test_crd_file_is_generated_from_the_spec_model() -> None:
    """crds/datapipeline.yaml is `obflow operator crd`; regenerate it when the model changes."""
    assert (REPO_ROOT / "crds" / "datapipeline.yaml").read_text() == crd_yaml()


def _assert_same_fields(model: type[BaseModel], schema: dict[str, Any], path: str) -> None:
    fields = fields_by_alias(model)
    properties = schema.get("properties") or schema.get("items", {}).get("properties", {})
    assert set(properties) == set(fields), f"{path}: CRD {sorted(properties)} vs model {sorted(fields)}"
    for name, nested in fields.items():
        if nested is not None:
            _assert_same_fields(nested, properties[name], f"{path}.{name}")


def test_every_spec_field_is_in_the_crd_schema_and_nothing_else() -> None:
    version = crd_manifest()["spec"]["versions"][0]
    _assert_same_fields(DataPipelineSpec, version["schema"]["openAPIV3Schema"]["properties"]["spec"], "spec")


def test_crd_names_printer_columns_and_status_subresource() -> None:
    crd = crd_manifest()["spec"]
    assert crd["group"] == "obflow.io"
    assert crd["names"]["kind"] == "DataPipeline"
    assert crd["names"]["plural"] == "datapipelines"
    assert crd["names"]["shortNames"] == ["dp"]
    version = crd["versions"][0]
    assert version["name"] == "v1alpha1"
    assert version["subresources"] == {"status": {}}
    columns = [c["name"] for c in version["additionalPrinterColumns"]]
    assert columns == ["Phase", "Parallelism", "TaskManagers", "Lag", "Last-Savepoint", "Age"]


def test_schema_carries_defaults_enums_and_bounds() -> None:
    spec = crd_manifest()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    flink = spec["properties"]["flink"]["properties"]
    assert flink["jobManager"]["properties"]["replicas"]["default"] == 2
    assert flink["upgradeMode"]["enum"] == ["savepoint", "last-state", "stateless"]
    assert flink["parallelism"]["minimum"] == 1
    assert spec["properties"]["output"]["properties"]["format"]["enum"] == ["json", "parquet", "csv"]
    assert spec["required"] == ["source", "datahub"]
    assert "pattern" in flink["checkpoint"]["properties"]["interval"]


def test_the_examples_are_valid_specs() -> None:
    for path in (MINIMAL, FULL):
        parse_spec(spec_of(path))


def test_spec_errors_name_the_field_and_the_fix_R10_3() -> None:
    bad = spec_of(
        FULL,
        flink__taskManager__maxReplicas=1,
        flink__checkpoint__interval="soon",
        datahub__shards=0,
        output__colour="blue",
    )
    with pytest.raises(SpecError) as caught:
        parse_spec(bad)
    problems = "\n".join(caught.value.problems)
    assert "spec.flink.taskManager.maxReplicas: must be at least minReplicas (2)" in problems
    assert "spec.flink.checkpoint.interval: expected a duration such as 500ms" in problems
    assert "spec.datahub.shards:" in problems
    assert (
        "spec.output.colour: unknown field; known fields here: claimName, format, path, rolling, writeRetries"
        in problems
    )
    missing = spec_of(MINIMAL)
    del missing["source"]["credentials"]
    with pytest.raises(SpecError, match=r"spec.source.credentials: required; set it"):
        parse_spec(missing)


def test_a_misspelt_spec_field_is_named_with_the_field_meant() -> None:
    """The spec's unknown fields get the configuration file's hint, by the spec's own (camelCase) names."""
    with pytest.raises(SpecError) as caught:
        parse_spec(spec_of(FULL, flink__taskManager__maxReplica=4, output__writeRetrys=2))
    assert sorted(caught.value.problems) == [
        "spec.flink.taskManager.maxReplica: unknown field; did you mean 'maxReplicas'?",
        "spec.output.writeRetrys: unknown field; did you mean 'writeRetries'?",
    ]


def test_a_database_ca_without_tls_names_the_field_and_the_fix() -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec(spec_of(MINIMAL, source__caSecret={"name": "db-ca", "key": "ca.crt"}))
    assert caught.value.problems == [
        "spec.source.caSecret: is used only over TLS; set source.tls: true as well, or drop caSecret"
    ]


def test_rules_across_sections_name_the_field_and_the_fix() -> None:
    spec = parse_spec(spec_of(FULL, flink__parallelism=40))
    with pytest.raises(SpecError) as caught:
        validate("orders", spec)
    assert caught.value.problems == [
        "spec.flink.parallelism: 40 needs 20 TaskManagers of 2 slots, more than taskManager.maxReplicas (16); "
        "raise maxReplicas or slots"
    ]
    bad_column = spec_of(MINIMAL)
    bad_column["source"]["tables"][0]["columns"] = [{"name": "X", "type": "NUMBER(a)"}]
    with pytest.raises(SpecError, match=r"spec.source.tables.0.columns.0.type"):
        parse_spec(bad_column)


def test_runtime_config_comes_from_the_spec_not_the_operators_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OBFLOW_FLINK__PARALLELISM", "99")
    config = runtime_config("orders", parse_spec(spec_of(FULL)))
    assert config.flink.parallelism == 8
    assert config.checkpoint.dir == "file:///data/orders/checkpoints"
    assert config.output.path == "/data/orders/output"
    assert config.source.qualified_tables().keys() == {"TRADE.ORDERS", "TRADE.ORDER_LINES"}
    assert config.source.password.get_secret_value() == ""  # secrets come from Secrets only


# runtime settings the operator derives (paths, ports, names) or takes from Secrets, never from spec fields
OPERATOR_SETTINGS = {
    "source.password",
    "source.ca_file",
    "datahub.access_id",
    "datahub.access_key",
    "datahub.ca_file",
    "capture.state_dir",
    "capture.http_port",
    "flink.job_name",
    "flink.metrics_port",
    "checkpoint.dir",
    "checkpoint.savepoint_dir",
    "output.path",
    "output.dead_letter_path",
    "output.metrics_port",
    "logging.format",
}
# defaults a DataPipeline needs other than one machine's: required fields, and state in RocksDB
SPEC_ONLY_DEFAULTS = {
    "source.host",
    "source.database",
    "source.tables",
    "datahub.endpoint",
    "datahub.project",
    "checkpoint.backend",
}


def test_every_runtime_setting_is_a_spec_field_or_the_operators_with_the_same_default() -> None:
    secret = {"name": "s", "key": "k"}
    required_only = parse_spec(
        {
            "source": {"host": "db", "database": "TRADE", "tables": ["ORDERS"], "credentials": {"password": secret}},
            "datahub": {
                "endpoint": "http://datahub:8080",
                "project": "trade",
                "credentials": {"accessId": secret, "accessKey": secret},
            },
        }
    )
    runtime = dict(flatten(ObflowConfig.model_validate({}).model_dump(mode="json")))
    from_spec = dict(flatten(runtime_config("orders", required_only).model_dump(mode="json")))
    spec_fields = {key for key, _ in flatten(required_only.model_dump(by_alias=True, mode="json"))}
    for key in sorted(runtime.keys() - OPERATOR_SETTINGS):
        assert spec_field(key.split(".")).removeprefix("spec.") in spec_fields, f"{key} cannot be set from a spec"
        if key not in SPEC_ONLY_DEFAULTS:
            assert from_spec[key] == runtime[key], f"{key}: the spec's default is not the runtime model's"


def test_the_runtime_settings_a_spec_sets_reach_the_runtime_config() -> None:
    spec = spec_of(
        MINIMAL,
        source__connectTimeout="4s",
        source__heartbeatInterval="3s",
        source__reconnectMaxBackoff="7s",
        datahub__batchSize=250,
        datahub__requestTimeout="12s",
        datahub__retry={"attempts": 5, "interval": "500ms"},
        capture__install="never",
        capture__gapMaxCount=50,
        capture__gapMaxAge="30s",
        capture__binlogServerId=9001,
        flink__executionMode="process",
        flink__idlePollMax="1s",
        flink__outOfOrderness="2s",
        flink__checkpoint={"tolerableFailures": 4},
    )
    config = runtime_config("orders", parse_spec(spec))
    assert (config.source.connect_timeout, config.source.heartbeat_interval) == (4.0, 3.0)
    assert config.source.reconnect_max_backoff == 7.0
    assert (config.datahub.batch_size, config.datahub.request_timeout) == (250, 12.0)
    assert (config.datahub.retry.attempts, config.datahub.retry.interval) == (5, 0.5)
    assert (config.capture.install, config.capture.gap_max_count, config.capture.gap_max_age) == ("never", 50, 30.0)
    assert config.capture.binlog_server_id == 9001
    assert (config.flink.execution_mode, config.flink.idle_poll_max, config.flink.out_of_orderness) == (
        "process",
        1.0,
        2.0,
    )
    assert config.checkpoint.tolerable_failures == 4


def test_a_runtime_rule_a_spec_breaks_is_named_by_the_spec_field() -> None:
    spec = spec_of(MINIMAL, source__heartbeatInterval="0s", source__reconnectMaxBackoff="1m")
    with pytest.raises(SpecError) as caught:
        runtime_config("orders", parse_spec(spec))
    assert caught.value.problems == [
        "spec.source.heartbeatInterval: input should be greater than 0",
        "spec.source.reconnectMaxBackoff: input should be less than or equal to 30",
    ]
    with pytest.raises(SpecError) as caught:
        runtime_config("orders", parse_spec(spec_of(MINIMAL, flink__dedupRecords=10)))
    assert caught.value.problems == [
        "spec.flink.dedupRecords: must be at least capture.batch_size (1000): a capture agent re-sends up to one "
        "batch after a crash, and copies further back than the window are not dropped; raise it",
    ]
    with pytest.raises(SpecError) as caught:
        parse_spec(spec_of(MINIMAL, flink__parallelism=8, flink__maxParallelism=4))
    assert caught.value.problems == [  # the runtime model's rule, in the spec's words
        "spec.flink.maxParallelism: must be at least parallelism (8); raise it or lower parallelism"
    ]
    with pytest.raises(SpecError) as caught:
        parse_spec(spec_of(MINIMAL, capture__gapMaxCount=-1, datahub__batchSize=5000))
    assert caught.value.problems == [
        "spec.datahub.batchSize: input should be less than or equal to 1000",
        "spec.capture.gapMaxCount: input should be greater than or equal to 0",
    ]


def test_lifecycle_allows_only_named_transitions() -> None:
    check_transition(None, Phase.PENDING)
    check_transition(Phase.RUNNING, Phase.SUSPENDING)
    check_transition(Phase.SUSPENDED, Phase.DEPLOYING)
    with pytest.raises(IllegalTransitionError):
        check_transition(Phase.SUSPENDED, Phase.RUNNING)  # resuming always redeploys first
    with pytest.raises(IllegalTransitionError):
        check_transition(Phase.DELETING, Phase.RUNNING)


def seen(job_state: str | None, jobmanagers: int = 2) -> Observation:
    overview = {"jid": "j1", "name": "x", "state": job_state, "start-time": 1}
    job = JobOverview.model_validate(overview) if job_state else None
    return Observation(jobmanagers_available=jobmanagers, taskmanagers_available=1, capture_ready=1, job=job)


def test_the_observer_moves_phases_only_on_what_it_sees() -> None:
    assert observed_phase(Phase.DEPLOYING, seen("RUNNING"))[0] == Phase.RUNNING
    assert observed_phase(Phase.DEPLOYING, seen("CREATED"))[0] is None
    assert observed_phase(Phase.DEPLOYING, seen(None, jobmanagers=0))[0] is None
    assert observed_phase(Phase.RUNNING, seen("RESTARTING"))[0] is None  # Flink restarts it; not a failure yet
    assert observed_phase(Phase.RUNNING, seen("FAILED"))[0] == Phase.FAILED
    assert observed_phase(Phase.RUNNING, seen(None, jobmanagers=0))[0] == Phase.DEPLOYING
    assert observed_phase(Phase.SUSPENDED, seen("RUNNING"))[0] is None


def test_after_a_rescale_running_means_every_vertex_at_the_new_parallelism_and_processing() -> None:
    def at(parallelism: int, processing: bool = True) -> Observation:
        vertices = [
            {"id": "a", "name": "ticks", "parallelism": 1, "status": "RUNNING"},
            {"id": "b", "name": "poll", "parallelism": parallelism, "status": "RUNNING"},
        ]
        details = JobDetails.model_validate({"jid": "j1", "name": "x", "state": "RUNNING", "vertices": vertices})
        reading = VertexMetrics(
            parallelism=parallelism, busy_ratio=0.3, backpressured_ratio=0, records_in_per_second=10, lag_seconds=0
        )
        return replace(seen("RUNNING"), details=details, reading=reading if processing else None)

    assert observed_phase(Phase.RESCALING, at(2), parallelism=4)[0] is None
    assert observed_phase(Phase.RESCALING, at(4, processing=False), parallelism=4)[0] is None
    assert observed_phase(Phase.RESCALING, at(4), parallelism=4)[0] == Phase.RUNNING
    assert observed_phase(Phase.UPGRADING, seen("RUNNING"), parallelism=4)[0] is None  # no vertices seen yet
