"""Pure builders: spec in, manifests out (no cluster). Golden files pin every child of a minimal and a
full pipeline; regenerate them with UPDATE_GOLDEN=1 after an intended change and review the diff."""

from __future__ import annotations

import json
import os
import re
import time
from typing import Any

import pytest
import yaml
from hypothesis import given, settings

from obflow.config import load_config
from obflow_operator.builders import (
    CONFIG_HASH_ANNOTATION,
    HASH_ANNOTATION,
    BuildOptions,
    Owner,
    build_children,
    flink_configuration,
    job_id_for,
)
from obflow_operator.main import dump_all, render
from obflow_operator.spec import SpecError, runtime_config
from obflow_operator.validation import parse_spec
from tests.support.hostile import mutated
from tests.support.pipelines import FULL, MINIMAL, spec_of
from tests.support.repo import REPO_ROOT, run_cli

GOLDEN = REPO_ROOT / "tests" / "operator" / "golden"
OWNER = Owner(name="orders", namespace="data", uid="11111111-2222-3333-4444-555555555555")


def children(spec: dict[str, Any], options: BuildOptions | None = None) -> dict[str, dict[str, Any]]:
    built = build_children(OWNER, parse_spec(spec), options)
    return {f"{c['kind']}/{c['metadata']['name']}": c for c in built}


def containers(manifests: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        c for m in manifests.values() if m["kind"] == "Deployment" for c in m["spec"]["template"]["spec"]["containers"]
    ]


@pytest.mark.parametrize("example", [MINIMAL, FULL], ids=["minimal", "full"])
def test_children_match_the_golden_files(example: Any) -> None:
    rendered = dump_all(render(yaml.safe_load_all(example.read_text())))
    golden = GOLDEN / f"{example.stem}.yaml"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(rendered)
    assert rendered == golden.read_text(), f"children changed; if intended: UPDATE_GOLDEN=1 pytest {__file__}"


def test_render_prints_every_child_from_the_same_builders() -> None:
    result = run_cli("operator", "render", "-f", str(FULL))
    assert result.returncode == 0, result.stderr
    kinds = [(d["kind"], d["metadata"]["name"]) for d in yaml.safe_load_all(result.stdout)]
    assert kinds == [
        ("ServiceAccount", "orders-flink"),
        ("Role", "orders-flink"),
        ("RoleBinding", "orders-flink"),
        ("ConfigMap", "orders-flink-config"),
        ("ConfigMap", "orders-flink-env"),
        ("ConfigMap", "orders-capture-env"),
        ("Deployment", "orders-jobmanager"),
        ("Service", "orders-jobmanager"),
        ("Deployment", "orders-taskmanager"),
        ("Deployment", "orders-capture"),
        ("PodDisruptionBudget", "orders-jobmanager"),
        ("PodDisruptionBudget", "orders-taskmanager"),
    ]


def test_render_rejects_a_bad_spec_naming_pipeline_and_field(tmp_path: Any) -> None:
    bad = yaml.safe_load(FULL.read_text())
    bad["spec"]["flink"]["parallelism"] = 100
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    result = run_cli("operator", "render", "-f", str(path))
    assert result.returncode == 2
    assert "DataPipeline orders: spec.flink.parallelism: 100 needs 50 TaskManagers" in result.stderr


def test_jobmanagers_run_in_kubernetes_ha_with_two_replicas_R5_1_R5_2() -> None:
    built = children(spec_of(FULL))
    jobmanager = built["Deployment/orders-jobmanager"]
    assert jobmanager["spec"]["replicas"] == 2
    assert jobmanager["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    conf = yaml.safe_load(built["ConfigMap/orders-flink-config"]["data"]["config.yaml"])
    assert conf["high-availability.type"] == "kubernetes"
    assert conf["high-availability.storageDir"] == "file:///data/orders/ha"
    assert conf["kubernetes.cluster-id"] == "orders"
    assert conf["kubernetes.namespace"] == "data"
    args = jobmanager["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[:2] == ["standalone-job", "-Djobmanager.rpc.address=$(POD_IP)"]  # each advertises its own address
    role = built["Role/orders-flink"]["rules"][0]
    assert role["resources"] == ["configmaps"] and {"create", "update", "watch", "delete"} <= set(role["verbs"])
    for component in ("jobmanager", "taskmanager"):
        pod = built[f"Deployment/orders-{component}"]["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] == "orders-flink"
    assert built["PodDisruptionBudget/orders-jobmanager"]["spec"]["minAvailable"] == 1


def test_flink_configuration_covers_checkpoints_restarts_metrics_and_memory() -> None:
    spec = parse_spec(spec_of(FULL))
    conf = flink_configuration(OWNER, spec, BuildOptions())
    assert conf["execution.checkpointing.interval"] == "5m"
    assert conf["execution.checkpointing.num-retained"] == "3"
    assert conf["execution.checkpointing.externalized-checkpoint-retention"] == "RETAIN_ON_CANCELLATION"
    assert conf["restart-strategy.type"] == "exponential-delay"  # a job's tenth failure in a month is not its last
    assert conf["restart-strategy.exponential-delay.initial-backoff"] == "10000 ms"
    assert conf["restart-strategy.exponential-delay.attempts-before-reset-backoff"] == "10"
    assert conf["restart-strategy.exponential-delay.reset-backoff-threshold"] == "10 min"
    assert conf["metrics.reporter.prom.port"] == "9249"
    assert conf["jobmanager.memory.process.size"] == "1600m"
    assert conf["taskmanager.memory.process.size"] == "4096m"
    assert conf["taskmanager.numberOfTaskSlots"] == "2"
    assert "--add-opens=java.base/java.util=ALL-UNNAMED" in conf["env.java.opts.all"]
    assert conf["execution.checkpointing.min-pause"] == "30s"  # spec.flink.configuration wins
    assert "execution.state-recovery.path" not in conf
    restored = flink_configuration(OWNER, spec, BuildOptions(restore_path="file:///data/orders/savepoints/sp-1"))
    assert restored["execution.state-recovery.path"] == "file:///data/orders/savepoints/sp-1"


def test_each_start_of_the_job_has_its_own_fixed_job_id() -> None:
    """A JobManager restarting after its job was stopped with a savepoint must not run it again (the
    job result store remembers the id); the operator's next start uses the next generation's id."""
    spec = parse_spec(spec_of(FULL))
    first = flink_configuration(OWNER, spec, BuildOptions(job_id=job_id_for(OWNER.uid, 0)))
    second = flink_configuration(OWNER, spec, BuildOptions(job_id=job_id_for(OWNER.uid, 1)))
    assert first["job-result-store.delete-on-commit"] == "false"
    assert len(first["$internal.pipeline.job-id"]) == 32
    assert first["$internal.pipeline.job-id"] != second["$internal.pipeline.job-id"]
    assert job_id_for(OWNER.uid, 0) == job_id_for(OWNER.uid, 0)  # deterministic across operator restarts


def test_every_container_has_liveness_readiness_and_startup_probes_R7_8() -> None:
    for container in containers(children(spec_of(FULL))):
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert probe in container, f"{container['name']} lacks {probe}"
    capture = children(spec_of(FULL))["Deployment/orders-capture"]["spec"]["template"]["spec"]["containers"][0]
    assert capture["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert capture["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}


def test_a_jobmanager_in_a_leader_election_is_not_ready_but_alive() -> None:
    """Flink's REST answers 503 while no leader is elected: that makes a JobManager unready, never
    killed (kubelet restarting both JobManagers mid-election left a pipeline without one for minutes)."""
    jobmanager = children(spec_of(FULL))["Deployment/orders-jobmanager"]["spec"]["template"]["spec"]["containers"][0]
    assert jobmanager["readinessProbe"]["httpGet"] == {"path": "/config", "port": "rest"}
    for probe in ("startupProbe", "livenessProbe"):
        assert jobmanager[probe]["tcpSocket"] == {"port": "rest"}, probe


def test_capture_runs_once_and_is_replaced_not_doubled() -> None:
    capture = children(spec_of(FULL))["Deployment/orders-capture"]
    assert capture["spec"]["replicas"] == 1
    assert capture["spec"]["strategy"] == {"type": "Recreate"}
    assert "PodDisruptionBudget/orders-capture" not in children(spec_of(FULL))


def test_parameters_reach_containers_through_environment_variables_R8_6(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading the runtime config from nothing but a container's environment gives what the spec says."""
    spec = parse_spec(spec_of(FULL))
    built = children(spec_of(FULL))
    expected = runtime_config("orders", spec).model_dump(mode="json")
    for component, sections in (("flink", ("flink", "checkpoint", "output", "datahub")), ("capture", ("source",))):
        for name, value in built[f"ConfigMap/orders-{component}-env"]["data"].items():
            monkeypatch.setenv(name, value)
        loaded = load_config(None).model_dump(mode="json")
        for section in sections:
            secrets = {"password", "access_key", "access_id", "user"}
            got = {k: v for k, v in loaded[section].items() if k not in secrets}
            want = {k: v for k, v in expected[section].items() if k not in secrets}
            assert got == want, section
        for name in list(os.environ):
            if name.startswith("OBFLOW_"):
                monkeypatch.delenv(name)
    jobmanager = built["Deployment/orders-jobmanager"]["spec"]["template"]["spec"]["containers"][0]
    assert jobmanager["envFrom"] == [{"configMapRef": {"name": "orders-flink-env"}}]


def test_credentials_come_only_from_secrets() -> None:
    built = children(spec_of(FULL))
    config_maps = json.dumps([m["data"] for m in built.values() if m["kind"] == "ConfigMap"])
    for secret_setting in ("PASSWORD", "ACCESS_KEY", "ACCESS_ID", "SOURCE__USER"):
        assert secret_setting not in config_maps
    env = {c["name"]: {e["name"]: e for e in c["env"]} for c in containers(built)}
    assert env["capture"]["OBFLOW_SOURCE__PASSWORD"]["valueFrom"] == {
        "secretKeyRef": {"name": "trade-db", "key": "password"}
    }
    assert env["capture"]["OBFLOW_SOURCE__USER"]["valueFrom"]["secretKeyRef"]["name"] == "trade-db"
    assert "OBFLOW_SOURCE__PASSWORD" not in env["jobmanager"]  # Flink never sees the database password
    assert env["taskmanager"]["OBFLOW_DATAHUB__ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["key"] == "access-key"


def test_datahubs_ca_secret_is_mounted_in_every_component_and_named_by_its_config() -> None:
    ca_secret = {"name": "datahub-ca", "key": "ca.crt"}
    built = children(spec_of(FULL, datahub__caSecret=ca_secret))
    deployments = [m for m in built.values() if m["kind"] == "Deployment"]
    assert {d["metadata"]["name"] for d in deployments} == {
        f"orders-{c}" for c in ("jobmanager", "taskmanager", "capture")
    }
    for deployment in deployments:
        pod = deployment["spec"]["template"]["spec"]
        volume = next(v for v in pod["volumes"] if v["name"] == "datahub-ca")
        assert volume["secret"] == {"secretName": "datahub-ca", "items": [{"key": "ca.crt", "path": "ca.pem"}]}
        mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "datahub-ca")
        assert mount == {"name": "datahub-ca", "mountPath": "/etc/obflow/datahub-ca", "readOnly": True}
    for component in ("flink", "capture"):
        env = built[f"ConfigMap/orders-{component}-env"]["data"]
        assert env["OBFLOW_DATAHUB__CA_FILE"] == "/etc/obflow/datahub-ca/ca.pem"

    plain = children(spec_of(FULL))
    assert "OBFLOW_DATAHUB__CA_FILE" not in json.dumps([m["data"] for m in plain.values() if m["kind"] == "ConfigMap"])
    assert "datahub-ca" not in json.dumps(plain)


def test_the_databases_ca_secret_is_mounted_in_the_capture_agent_alone() -> None:
    """Only the capture agent talks to the database: its CA and TLS setting go there, not to Flink."""
    built = children(spec_of(FULL, source__tls=True, source__caSecret={"name": "db-ca", "key": "ca.crt"}))
    capture = built["Deployment/orders-capture"]["spec"]["template"]["spec"]
    volume = next(v for v in capture["volumes"] if v["name"] == "source-ca")
    assert volume["secret"] == {"secretName": "db-ca", "items": [{"key": "ca.crt", "path": "ca.pem"}]}
    mount = next(m for m in capture["containers"][0]["volumeMounts"] if m["name"] == "source-ca")
    assert mount == {"name": "source-ca", "mountPath": "/etc/obflow/source-ca", "readOnly": True}
    env = built["ConfigMap/orders-capture-env"]["data"]
    assert env["OBFLOW_SOURCE__TLS"] == "true"
    assert env["OBFLOW_SOURCE__CA_FILE"] == "/etc/obflow/source-ca/ca.pem"
    flink = [built[f"Deployment/orders-{c}"] for c in ("jobmanager", "taskmanager")]
    assert "source-ca" not in json.dumps([*flink, built["ConfigMap/orders-flink-env"]])
    assert "OBFLOW_SOURCE__CA_FILE" not in built["ConfigMap/orders-flink-env"]["data"]

    public_cas = children(spec_of(FULL, source__tls=True))["ConfigMap/orders-capture-env"]["data"]
    assert public_cas["OBFLOW_SOURCE__TLS"] == "true" and "OBFLOW_SOURCE__CA_FILE" not in public_cas


def test_every_child_is_owned_by_the_pipeline() -> None:
    for manifest in children(spec_of(MINIMAL)).values():
        (reference,) = manifest["metadata"]["ownerReferences"]
        assert reference == {
            "apiVersion": "obflow.io/v1alpha1",
            "kind": "DataPipeline",
            "name": "orders",
            "uid": OWNER.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }
        assert manifest["metadata"]["namespace"] == "data"


def changed_children(before: dict[str, Any], after: dict[str, Any]) -> set[str]:
    def digests(spec: dict[str, Any]) -> dict[str, str]:
        return {key: child["metadata"]["annotations"][HASH_ANNOTATION] for key, child in children(spec).items()}

    old, new = digests(before), digests(after)
    return {key for key in new if old[key] != new[key]}


def test_a_capture_setting_changes_only_the_capture_children() -> None:
    assert changed_children(spec_of(FULL), spec_of(FULL, capture__pollInterval="1s")) == {
        "ConfigMap/orders-capture-env",
        "Deployment/orders-capture",
    }


def test_a_parallelism_change_touches_only_flink_children() -> None:
    assert changed_children(spec_of(FULL), spec_of(FULL, flink__parallelism=12)) == {
        "ConfigMap/orders-flink-config",
        "ConfigMap/orders-flink-env",
        "Deployment/orders-jobmanager",
        "Deployment/orders-taskmanager",
    }


def test_pods_roll_when_the_configuration_they_read_changes() -> None:
    before = children(spec_of(FULL))
    after = children(spec_of(FULL, flink__checkpoint__interval="1m"))
    for name in ("jobmanager", "taskmanager", "capture"):
        old = before[f"Deployment/orders-{name}"]["spec"]["template"]["metadata"]["annotations"]
        new = after[f"Deployment/orders-{name}"]["spec"]["template"]["metadata"]["annotations"]
        rolled = old[CONFIG_HASH_ANNOTATION] != new[CONFIG_HASH_ANNOTATION]
        assert rolled == (name != "capture"), name


def test_taskmanagers_follow_parallelism_and_slots() -> None:
    assert children(spec_of(FULL, flink__parallelism=8))["Deployment/orders-taskmanager"]["spec"]["replicas"] == 4
    assert children(spec_of(FULL, flink__parallelism=9))["Deployment/orders-taskmanager"]["spec"]["replicas"] == 5
    assert children(spec_of(FULL, flink__parallelism=1))["Deployment/orders-taskmanager"]["spec"]["replicas"] == 2


def test_suspend_scales_every_deployment_to_zero() -> None:
    built = children(spec_of(FULL, suspend=True))
    assert {k: m["spec"]["replicas"] for k, m in built.items() if m["kind"] == "Deployment"} == {
        "Deployment/orders-jobmanager": 0,
        "Deployment/orders-taskmanager": 0,
        "Deployment/orders-capture": 0,
    }


def test_pod_template_overrides_reach_every_pod() -> None:
    spec = spec_of(FULL, podTemplate__tolerations=[{"key": "dedicated", "operator": "Exists"}])
    for manifest in children(spec).values():
        if manifest["kind"] != "Deployment":
            continue
        pod = manifest["spec"]["template"]
        assert pod["metadata"]["labels"]["team"] == "data-platform"
        assert pod["spec"]["nodeSelector"] == {"pool": "streaming"}
        assert pod["spec"]["tolerations"] == [{"key": "dedicated", "operator": "Exists"}]
        assert pod["spec"]["securityContext"]["runAsNonRoot"] is True


def _pod_hashes(manifests: dict[str, dict[str, Any]]) -> dict[str, str]:
    return {
        name: manifests[f"Deployment/orders-{name}"]["spec"]["template"]["metadata"]["annotations"][
            CONFIG_HASH_ANNOTATION
        ]
        for name in ("jobmanager", "taskmanager")
    }


def test_in_place_rescaling_uses_the_adaptive_scheduler_and_keeps_the_running_pods() -> None:
    """With flink.inPlaceRescale the pods' hash keeps the parallelism they started with: a rescale in
    place rewrites the ConfigMaps (for the next start) and the TaskManager count, never the pods."""
    started = BuildOptions(pods_parallelism=4)
    before = children(spec_of(FULL, flink__inPlaceRescale=True, flink__parallelism=4), started)
    after = children(spec_of(FULL, flink__inPlaceRescale=True, flink__parallelism=12), started)
    conf = yaml.safe_load(after["ConfigMap/orders-flink-config"]["data"]["config.yaml"])
    assert conf["jobmanager.scheduler"] == "adaptive" and conf["parallelism.default"] == "12"
    assert _pod_hashes(after) == _pod_hashes(before)
    assert after["Deployment/orders-taskmanager"]["spec"]["replicas"] == 6

    restarted = children(spec_of(FULL, flink__inPlaceRescale=True, flink__parallelism=12), BuildOptions())
    assert _pod_hashes(restarted) != _pod_hashes(before)  # a new start runs at the new parallelism
    without = children(spec_of(FULL, flink__parallelism=12), started)
    assert "jobmanager.scheduler" not in yaml.safe_load(without["ConfigMap/orders-flink-config"]["data"]["config.yaml"])


def test_a_table_without_columns_added_changes_the_capture_alone() -> None:
    """The job reads only the tables with configured columns (it follows the others' shape from their
    changes): adding one without columns leaves the Flink pods as they are and rolls the capture; adding
    one with columns (or changing a table's columns) changes the Flink pods too (issue 19, item 4)."""
    base = spec_of(FULL)
    added = spec_of(FULL)
    added["source"]["tables"] = [*base["source"]["tables"], {"name": "PAYMENTS"}]
    typed = spec_of(FULL)
    typed["source"]["tables"] = [*base["source"]["tables"], {"name": "PAYMENTS", "columns": [
        {"name": "ID", "type": "NUMBER(12)"}]}]  # fmt: skip
    before, after, with_columns = children(base), children(added), children(typed)
    assert _pod_hashes(after) == _pod_hashes(before)
    assert after["ConfigMap/orders-flink-env"] == before["ConfigMap/orders-flink-env"]
    capture_env = after["ConfigMap/orders-capture-env"]["data"]["OBFLOW_SOURCE__TABLES"]
    assert "PAYMENTS" in capture_env and capture_env != before["ConfigMap/orders-capture-env"]["data"][
        "OBFLOW_SOURCE__TABLES"]  # fmt: skip
    assert _pod_hashes(with_columns) != _pod_hashes(before)


def _pipeline(**changes: Any) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(FULL.read_text())
    for key, value in changes.items():
        if value is None:
            document.pop(key, None)
        else:
            document[key] = value
    return document


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (
            yaml.safe_dump(_pipeline(apiVersion="obflow.io/v9")),
            "apiVersion: 'obflow.io/v9'; a DataPipeline is obflow.io/v1alpha1",
        ),
        (yaml.safe_dump(_pipeline(metadata={})), "a DataPipeline: metadata.name: missing"),
        (yaml.safe_dump(_pipeline(metadata={"name": "Orders_1"})), "metadata.name: 'Orders_1' cannot name"),
        (yaml.safe_dump(_pipeline(metadata={"name": "o" * 46})), "at most 45 characters"),
        (yaml.safe_dump(_pipeline(spec=["x"])), "spec: must be a mapping"),
        (b"\x89PNG\r\n\x1a\n\x00", "not UTF-8 text"),
        ("a: " + "[" * 3000 + "]" * 3000, "nest"),
        (
            "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
            + "".join(
                f"{chr(98 + n)}: &{chr(98 + n)} [" + ", ".join([f"*{chr(97 + n)}"] * 10) + "]\n" for n in range(8)
            ),
            "expands to more than 100,000 values",
        ),
    ],
    ids=["api-version", "no-name", "bad-name", "long-name", "spec-list", "binary", "deep", "aliases"],
)
def test_render_refuses_hostile_manifests_with_exit_2_and_no_traceback(
    tmp_path: Any, content: str, fragment: str
) -> None:
    """Issue 21: these rendered with exit 0 (objects named ``<unnamed>-...``) or ended in a traceback."""
    path = tmp_path / "pipeline.yaml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    result = run_cli("operator", "render", "-f", str(path))
    assert result.returncode == 2, result.stdout[:200]
    assert fragment in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_render_takes_the_pipelines_of_a_list(tmp_path: Any) -> None:
    second = _pipeline(metadata={"name": "payments"})
    path = tmp_path / "list.yaml"
    path.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": [_pipeline(), second]}))
    result = run_cli("operator", "render", "-f", str(path))
    assert result.returncode == 0, result.stderr
    names = {d["metadata"]["name"] for d in yaml.safe_load_all(result.stdout) if d["kind"] == "Deployment"}
    assert {"orders-jobmanager", "payments-jobmanager"} <= names


KUBERNETES_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


@settings(max_examples=300, deadline=None)
@given(document=mutated(yaml.safe_load(FULL.read_text())) | mutated(yaml.safe_load(MINIMAL.read_text())))
def test_any_values_in_a_manifest_render_valid_children_or_a_named_problem(document: Any) -> None:
    """Issue 21, property: ``render`` gives children a cluster accepts by name, or a SpecError naming the
    field; never another exception, within 2 s."""
    started = time.monotonic()
    try:
        children_of = list(render([document]))
    except SpecError as exc:
        assert exc.problems and all(problem.startswith(("DataPipeline ", "a DataPipeline")) for problem in exc.problems)
    else:
        for child in children_of:
            assert KUBERNETES_NAME.fullmatch(child["metadata"]["name"]), child["metadata"]["name"]
        dump_all(children_of)
    assert time.monotonic() - started < 2
