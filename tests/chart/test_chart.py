"""The Helm chart offline: it lints, renders valid Kubernetes objects, rejects bad values naming the
key, and ships the operator's CRD, the alert rules and the dashboards unchanged."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from obflow_operator.crd import crd_yaml
from tests.support.helm import CHART, by_kind, render

ALL_MONITORING: dict[str, Any] = {
    "monitoring": {
        "serviceMonitor": {"enabled": True},
        "podMonitor": {"enabled": True},
        "prometheusRule": {"enabled": True, "runbookBaseUrl": "https://git.example.com/obflow/blob/main"},
    }
}
VARIANTS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "monitoring": ALL_MONITORING,
    "two namespaces": {"watchNamespaces": ["shop", "billing"]},
    "cluster-wide": {"clusterWide": True, **ALL_MONITORING},
    "existing service account": {"serviceAccount": {"create": False, "name": "ops-operator"}},
    "network policies": {
        "networkPolicy": {
            "enabled": True,
            "apiServer": {"ports": [6443], "cidrs": ["192.168.1.10/32"]},
            "extraEgress": [{"to": [{"ipBlock": {"cidr": "198.51.100.0/24"}}], "ports": [{"port": 443}]}],
        }
    },
}
PROMETHEUS_OPERATOR_KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}


def test_the_chart_lints_clean() -> None:
    import helm_python as helm

    for values in VARIANTS.values():
        report = helm.lint(CHART, values, strict=True, kube_version="v1.20.2")
        problems = [m for m in report["messages"] if m["severity"] >= 2]
        assert not report["errors"] and not problems, report


@pytest.mark.parametrize("variant", VARIANTS)
def test_rendered_manifests_are_valid_kubernetes_objects(variant: str) -> None:
    import kubernetes_validate

    manifests = render(VARIANTS[variant])
    assert manifests
    for manifest in manifests:
        if manifest["kind"] in PROMETHEUS_OPERATOR_KINDS:
            assert manifest["apiVersion"] == "monitoring.coreos.com/v1"  # no schema bundled: checked below
            continue
        for version in ("1.25.0", kubernetes_validate.latest_version()):
            kubernetes_validate.validate(manifest, version, strict=True)


def test_the_operator_runs_alone_with_least_privilege_in_its_namespace() -> None:
    manifests = render()
    (deployment,) = by_kind(manifests, "Deployment")
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"]["type"] == "Recreate"
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][:3] == ["operator", "run", "--namespace=obflow-system"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    assert not by_kind(manifests, "ClusterRole") and not by_kind(manifests, "ClusterRoleBinding")
    (role,) = by_kind(manifests, "Role")
    assert role["metadata"]["namespace"] == "obflow-system"
    verbs = {(group, resource): set(rule["verbs"]) for rule in role["rules"]
             for group in rule["apiGroups"] for resource in rule["resources"]}  # fmt: skip
    assert verbs[("", "secrets")] == {"get"}  # read to say when one is missing; never written or listed
    assert verbs[("obflow.io", "datapipelines")] == {"get", "list", "watch", "patch", "update"}
    assert all("*" not in v for v in verbs.values()) and all("*" not in key for key in verbs)
    assert ("", "pods") not in verbs and ("", "nodes") not in verbs


def test_two_namespaces_get_a_role_each_and_cluster_wide_a_cluster_role() -> None:
    manifests = render(VARIANTS["two namespaces"])
    assert sorted(r["metadata"]["namespace"] for r in by_kind(manifests, "Role")) == ["billing", "shop"]
    assert sorted(b["metadata"]["namespace"] for b in by_kind(manifests, "RoleBinding")) == ["billing", "shop"]
    args = by_kind(manifests, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--namespace=shop" in args and "--namespace=billing" in args
    cluster = render(VARIANTS["cluster-wide"])
    assert len(by_kind(cluster, "ClusterRole")) == 1 and not by_kind(cluster, "Role")
    cluster_args = by_kind(cluster, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert not [a for a in cluster_args if a.startswith("--namespace")]
    assert by_kind(cluster, "PodMonitor")[0]["spec"]["namespaceSelector"] == {"any": True}


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"image": {"tag": 5}}, "at '/image/tag': got number, want string"),
        ({"imag": {"tag": "1"}}, "additional properties 'imag' not allowed"),
        ({"operator": {"logLevel": "LOUD"}}, "at '/operator/logLevel': value must be one of"),
        ({"watchNamespaces": "shop"}, "at '/watchNamespaces': got string, want array"),
        ({"watchNamespaces": ["Shop_1"]}, "at '/watchNamespaces/0'"),
        ({"operator": {"metricsPort": 70000}}, "at '/operator/metricsPort'"),
        ({"operator": {"flinkRestUrl": "jobmanager:8081"}}, "at '/operator/flinkRestUrl'"),
        ({"monitoring": {"podMonitor": {"interval": "30 seconds"}}}, "at '/monitoring/podMonitor/interval'"),
        ({"monitoring": {"prometheusRule": {"runbookBaseUrl": "git.example.com"}}}, "runbookBaseUrl"),
        ({"resources": {"limit": {"memory": "1Gi"}}}, "additional properties 'limit' not allowed"),
    ],
)
def test_bad_values_are_rejected_naming_the_key(values: dict[str, Any], message: str) -> None:
    import helm_python as helm

    with pytest.raises(helm.HelmValuesError) as raised:
        helm.Chart.load(CHART).validate_schema(values)
    assert message in str(raised.value)
    with pytest.raises(helm.HelmError):  # and an install would never render them
        render(values)


def test_a_service_account_that_is_not_created_must_be_named() -> None:
    import helm_python as helm

    with pytest.raises(helm.HelmError, match=r"serviceAccount\.name: set it to an existing ServiceAccount"):
        render({"serviceAccount": {"create": False}})


def test_the_chart_ships_the_operators_crd() -> None:
    assert (CHART / "crds" / "datapipeline.yaml").read_text() == crd_yaml()


def test_the_prometheus_rule_is_the_alert_file_with_runbook_links() -> None:
    (rule,) = by_kind(render(ALL_MONITORING), "PrometheusRule")
    alerts = yaml.safe_load((CHART / "files" / "alerts.yaml").read_text())
    for group in alerts["groups"]:
        for alert in group["rules"]:
            anchor = alert["annotations"]["runbook_url"].removeprefix("docs/runbooks.md")
            alert["annotations"]["runbook_url"] = f"https://git.example.com/obflow/blob/main/docs/runbooks.md{anchor}"
    assert rule["spec"] == alerts


def test_the_dashboards_are_config_maps_for_grafanas_sidecar() -> None:
    config_maps = [m for m in by_kind(render(), "ConfigMap") if "grafana_dashboard" in m["metadata"]["labels"]]
    shipped = {name: json.loads(text) for m in config_maps for name, text in m["data"].items()}
    in_repo = {path.name: json.loads(path.read_text()) for path in (CHART / "dashboards").glob("*.json")}
    assert shipped == in_repo and shipped
    assert all(m["metadata"]["labels"]["grafana_dashboard"] == "1" for m in config_maps)
    assert not [m for m in by_kind(render({"monitoring": {"dashboards": {"enabled": False}}}), "ConfigMap")]


def test_the_pod_monitor_scrapes_every_metrics_port_the_operator_gives_pipeline_pods() -> None:
    from obflow_operator.builders import BuildOptions, Owner, build_children, job_id_for
    from obflow_operator.validation import parse_spec

    example = yaml.safe_load((Path(__file__).parents[2] / "examples" / "datapipeline.yaml").read_text())
    owner = Owner("orders", "obflow-system", "00000000-0000-0000-0000-000000000000")
    children = build_children(owner, parse_spec(example["spec"]), BuildOptions(job_id=job_id_for(owner.uid, 0)))
    metric_ports = {
        port["name"]
        for child in children
        if child["kind"] == "Deployment"
        for container in child["spec"]["template"]["spec"]["containers"]
        for port in container.get("ports", [])
        if port["name"] in {"flink-metrics", "runner-metrics", "http"}
    }
    (monitor,) = by_kind(render(ALL_MONITORING), "PodMonitor")
    assert {e["port"] for e in monitor["spec"]["podMetricsEndpoints"]} == metric_ports == {
        "flink-metrics", "runner-metrics", "http",
    }  # fmt: skip
    for child in children:
        if child["kind"] == "Deployment":
            pod_labels = child["spec"]["template"]["metadata"]["labels"]
            assert monitor["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
