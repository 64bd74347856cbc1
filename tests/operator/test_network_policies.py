"""NetworkPolicies (issue 21.5): the chart's policy for the operator and the operator's policies for a
pipeline, rendered as a user deploys them, allow every flow the pipeline needs and nothing else.

No network plugin that enforces NetworkPolicies runs on this machine: the flows are checked against
the rendered policies with :mod:`tests.support.netpol`, a model of the documented rules; the real
API server accepting them and the operator deleting them again is in test_operator_on_apiserver."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from obflow_operator.builders import BuildOptions, Owner, build_children, labels
from obflow_operator.network import NetworkPolicySettings, parse_network_policy_settings
from obflow_operator.validation import parse_spec
from tests.support.helm import by_kind
from tests.support.helm import render as render_chart
from tests.support.netpol import Endpoint, allowed
from tests.support.pipelines import FULL, spec_of
from tests.support.repo import run_cli

RELEASE_NAMESPACE = "obflow-system"
DATABASE, DATAHUB, OUTSIDE = "10.20.0.5", "203.0.113.10", "198.51.100.7"
API_SERVICE, API_ENDPOINT = "10.96.0.1", "192.168.1.10"


def chart_settings(values: dict[str, Any]) -> tuple[list[dict[str, Any]], NetworkPolicySettings]:
    """The chart's own NetworkPolicies and the settings its Deployment passes the operator."""
    manifests = render_chart(values, namespace=RELEASE_NAMESPACE)
    args = by_kind(manifests, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["args"]
    (flag,) = [a for a in args if a.startswith("--network-policies=")]
    return by_kind(manifests, "NetworkPolicy"), parse_network_policy_settings(flag.partition("=")[2])


def pipeline_policies(name: str, settings: NetworkPolicySettings, **spec_changes: Any) -> list[dict[str, Any]]:
    spec = spec_of(FULL, **spec_changes)
    owner = Owner(name=name, namespace="data", uid=f"uid-{name}")
    children = build_children(owner, parse_spec(spec), BuildOptions(network_policies=settings))
    return [child for child in children if child["kind"] == "NetworkPolicy"]


def pod_of(pipeline: str, component: str, ip: str) -> Endpoint:
    return Endpoint.pod(ip, "data", **labels(Owner(pipeline, "data", "-"), component))


OPERATOR = Endpoint.pod(
    "10.0.0.2",
    RELEASE_NAMESPACE,
    **{"app.kubernetes.io/name": "obflow-operator", "app.kubernetes.io/instance": "obflow"},
)
JOBMANAGER, TASKMANAGER, OTHER_TASKMANAGER = (
    pod_of("trade", "jobmanager", "10.0.1.1"),
    pod_of("trade", "taskmanager", "10.0.1.2"),
    pod_of("trade", "taskmanager", "10.0.1.3"),
)
CAPTURE = pod_of("trade", "capture", "10.0.1.4")
AUDIT_TASKMANAGER = pod_of("audit", "taskmanager", "10.0.2.2")  # another pipeline, same namespace
PROMETHEUS = Endpoint.pod("10.0.3.1", "monitoring", app="prometheus")
DNS = Endpoint.pod("10.0.4.1", "kube-system", **{"k8s-app": "kube-dns"})
STRANGER = Endpoint.pod("10.0.5.1", "sandbox", app="curious")


def flows(policies: list[dict[str, Any]]) -> dict[str, bool]:
    """Each flow by name: whether the policies allow it."""
    cases: dict[str, tuple[Endpoint, Endpoint, int, str]] = {
        # needed
        "operator -> JobManager REST": (OPERATOR, JOBMANAGER, 8081, "TCP"),
        "operator -> API server": (OPERATOR, Endpoint(API_ENDPOINT), 6443, "TCP"),
        "operator -> DNS": (OPERATOR, DNS, 53, "UDP"),
        "TaskManager -> JobManager blob": (TASKMANAGER, JOBMANAGER, 6124, "TCP"),
        "TaskManager -> JobManager RPC": (TASKMANAGER, JOBMANAGER, 41211, "TCP"),
        "JobManager -> TaskManager RPC": (JOBMANAGER, TASKMANAGER, 38017, "TCP"),
        "TaskManager -> TaskManager exchange": (TASKMANAGER, OTHER_TASKMANAGER, 45551, "TCP"),
        "JobManager -> API server (HA)": (JOBMANAGER, Endpoint(API_ENDPOINT), 6443, "TCP"),
        "TaskManager -> API server (HA)": (TASKMANAGER, Endpoint(API_SERVICE), 443, "TCP"),
        "JobManager -> DataHub": (JOBMANAGER, Endpoint(DATAHUB), 443, "TCP"),
        "TaskManager -> DataHub": (TASKMANAGER, Endpoint(DATAHUB), 443, "TCP"),
        "capture -> DataHub": (CAPTURE, Endpoint(DATAHUB), 443, "TCP"),
        "capture -> database": (CAPTURE, Endpoint(DATABASE), 2881, "TCP"),
        "capture -> DNS": (CAPTURE, DNS, 53, "UDP"),
        "TaskManager -> DNS over TCP": (TASKMANAGER, DNS, 53, "TCP"),
        "Prometheus -> operator metrics": (PROMETHEUS, OPERATOR, 9400, "TCP"),
        "Prometheus -> JobManager Flink metrics": (PROMETHEUS, JOBMANAGER, 9249, "TCP"),
        "Prometheus -> job runner metrics": (PROMETHEUS, JOBMANAGER, 9310, "TCP"),
        "Prometheus -> TaskManager metrics": (PROMETHEUS, TASKMANAGER, 9249, "TCP"),
        "Prometheus -> capture metrics": (PROMETHEUS, CAPTURE, 9300, "TCP"),
        # not needed
        "capture -> JobManager REST": (CAPTURE, JOBMANAGER, 8081, "TCP"),
        "capture -> TaskManager": (CAPTURE, TASKMANAGER, 45551, "TCP"),
        "capture -> API server": (CAPTURE, Endpoint(API_ENDPOINT), 6443, "TCP"),
        "TaskManager -> database": (TASKMANAGER, Endpoint(DATABASE), 2881, "TCP"),
        "TaskManager -> capture": (TASKMANAGER, CAPTURE, 9300, "TCP"),
        "JobManager -> the internet over ssh": (JOBMANAGER, Endpoint(OUTSIDE), 22, "TCP"),
        "other pipeline's TaskManager -> JobManager": (AUDIT_TASKMANAGER, JOBMANAGER, 6124, "TCP"),
        "TaskManager -> other pipeline's TaskManager": (TASKMANAGER, AUDIT_TASKMANAGER, 45551, "TCP"),
        "stranger -> JobManager REST": (STRANGER, JOBMANAGER, 8081, "TCP"),
        "Prometheus -> JobManager REST": (PROMETHEUS, JOBMANAGER, 8081, "TCP"),
        "operator -> capture": (OPERATOR, CAPTURE, 9300, "TCP"),
        "operator -> the internet over http": (OPERATOR, Endpoint(OUTSIDE), 80, "TCP"),
    }
    return {name: allowed(policies, *case) for name, case in cases.items()}


NEEDED = 20  # the first twenty flows above


def test_the_policies_allow_every_flow_a_pipeline_needs_and_no_other() -> None:
    chart_policies, settings = chart_settings({"networkPolicy": {"enabled": True}})
    policies = chart_policies + pipeline_policies("trade", settings) + pipeline_policies("audit", settings)
    verdicts = flows(policies)
    needed, not_needed = list(verdicts.items())[:NEEDED], list(verdicts.items())[NEEDED:]
    assert [name for name, ok in needed if not ok] == []
    assert [name for name, ok in not_needed if ok] == []
    # and the model is not one that allows everything: without policies every flow goes
    assert all(flows([]).values())


def test_a_database_and_datahub_at_an_ip_address_are_reached_there_only() -> None:
    _, settings = chart_settings({"networkPolicy": {"enabled": True}})
    policies = pipeline_policies("trade", settings, source__host=DATABASE, datahub__endpoint=f"http://{DATAHUB}:8080")
    assert allowed(policies, CAPTURE, Endpoint(DATABASE), 2881)
    assert not allowed(policies, CAPTURE, Endpoint(OUTSIDE), 2881)
    assert allowed(policies, TASKMANAGER, Endpoint(DATAHUB), 8080)
    assert not allowed(policies, TASKMANAGER, Endpoint(DATAHUB), 9000)
    assert not allowed(policies, CAPTURE, Endpoint(OUTSIDE), 8080)


def test_the_charts_values_narrow_scrapes_the_api_server_and_add_egress() -> None:
    values = {
        "networkPolicy": {
            "enabled": True,
            "metricsFrom": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}],
            "restFrom": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress"}}}],
            "apiServer": {"ports": [6443], "cidrs": [f"{API_ENDPOINT}/32"]},
            "extraEgress": [{"to": [{"ipBlock": {"cidr": "198.51.100.0/24"}}], "ports": [{"port": 443}]}],
        }
    }
    chart_policies, settings = chart_settings(values)
    policies = chart_policies + pipeline_policies("trade", settings)
    ingress = Endpoint.pod("10.0.6.1", "ingress", app="nginx")
    assert allowed(policies, PROMETHEUS, CAPTURE, 9300)
    assert not allowed(policies, STRANGER, CAPTURE, 9300)  # no longer any pod of the cluster
    assert allowed(policies, ingress, JOBMANAGER, 8081)
    assert not allowed(policies, ingress, TASKMANAGER, 8081)
    assert allowed(policies, JOBMANAGER, Endpoint(API_ENDPOINT), 6443)
    assert not allowed(policies, JOBMANAGER, Endpoint("10.9.9.9"), 6443)
    assert not allowed(policies, TASKMANAGER, Endpoint(API_SERVICE), 6443)
    assert allowed(policies, TASKMANAGER, Endpoint(OUTSIDE), 443)  # the extra egress (object storage)
    assert allowed(policies, CAPTURE, Endpoint(OUTSIDE), 443)
    assert allowed(policies, OPERATOR, Endpoint(OUTSIDE), 443)


def test_no_network_policies_unless_enabled() -> None:
    chart_policies = by_kind(render_chart(None, namespace=RELEASE_NAMESPACE), "NetworkPolicy")
    spec = parse_spec(spec_of(FULL))
    children = build_children(Owner("trade", "data", "uid"), spec, BuildOptions())
    assert chart_policies == [] and [c for c in children if c["kind"] == "NetworkPolicy"] == []


def test_operator_render_prints_valid_policies_with_the_settings() -> None:
    import kubernetes_validate

    settings = json.dumps({"operatorNamespace": "ops", "operatorLabels": {"app": "obflow-operator"}})
    result = run_cli("operator", "render", "-f", str(FULL), "--network-policies", settings)
    assert result.returncode == 0, result.stderr
    policies = [d for d in yaml.safe_load_all(result.stdout) if d and d["kind"] == "NetworkPolicy"]
    assert [p["metadata"]["name"] for p in policies] == ["orders-jobmanager", "orders-taskmanager", "orders-capture"]
    for policy in policies:
        kubernetes_validate.validate(policy, kubernetes_validate.latest_version(), strict=True)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ("{", "(the document): invalid JSON"),
        ('{"operatorLabels": {"a": "b"}}', "operatorNamespace: required; set it"),
        ('{"operatorNamespace": "ops", "operatorLabels": {}}', "operatorLabels: "),
        (
            '{"operatorNamespace": "ops", "operatorLabels": {"a": "b"}, "metricsFrom": [{"pods": {}}]}',
            'metricsFrom: {"pods": {}} is not a NetworkPolicy peer',
        ),
        (
            '{"operatorNamespace": "ops", "operatorLabels": {"a": "b"}, "apiServerCidrs": ["10.0.0.300/8"]}',
            "apiServerCidrs: '10.0.0.300/8' is not a CIDR",
        ),
        (
            '{"operatorNamespace": "ops", "operatorLabels": {"a": "b"}, "apiServerPort": [1]}',
            "apiServerPort: unknown field; did you mean 'apiServerPorts'?",
        ),
    ],
)
def test_bad_settings_exit_2_naming_the_setting(settings: str, message: str) -> None:
    result = run_cli("operator", "render", "-f", str(FULL), "--network-policies", settings)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
