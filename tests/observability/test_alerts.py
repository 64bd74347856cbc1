"""The alert rules (charts/obflow/files/alerts.yaml): they fire and resolve on synthetic series
(``promtool test rules``, Debian's prometheus package), read only metrics our components export,
and each has a runbook."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from tests.support.exported import exported_metric_names, metric_names_in
from tests.support.promtool import run_promtool

ROOT = Path(__file__).parents[2]
RULES = ROOT / "charts/obflow/files/alerts.yaml"
RULE_TESTS = Path(__file__).with_name("alerts_test.yaml")
RUNBOOKS = ROOT / "docs/runbooks.md"


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_rules_are_valid() -> None:
    result = run_promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_alerts_fire_and_resolve_on_synthetic_series_R4_7_R5_6_R7_6_R7_7() -> None:
    result = run_promtool("test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_is_tested_firing_and_resolving() -> None:
    firing: set[str] = set()
    resolved: set[str] = set()
    for case in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check["exp_alerts"] else resolved).add(check["alertname"])
    names = {rule["alert"] for rule in alert_rules()}
    assert names - firing == set(), "alerts never seen firing in alerts_test.yaml"
    assert names - resolved == set(), "alerts never seen resolved in alerts_test.yaml"
    required = {
        "ObflowEndToEndLatencyHigh",  # R7.6
        "ObflowCheckpointFailureRateHigh",  # R7.7
        "ObflowDeadLettersGrowing", "ObflowCaptureRetriesExhausted", "ObflowChangeLogBacklogGrowing",
        "ObflowCheckpointsStalled",  # R4.7
        "ObflowPipelineHighLoad",  # R5.6
        "ObflowComponentRestarting", "ObflowPipelineNotRunning",
    }  # fmt: skip
    assert required <= names


def test_alert_expressions_read_only_exported_metrics() -> None:
    exported = exported_metric_names()
    for rule in alert_rules():
        used = metric_names_in(rule["expr"])
        assert used, f"{rule['alert']}: no metric found in {rule['expr']!r}"
        assert used <= exported, f"{rule['alert']} reads metrics nothing exports: {sorted(used - exported)}"


def test_every_alert_has_a_severity_a_summary_and_a_runbook_section() -> None:
    anchors = {
        re.sub(r"[^a-z0-9-]", "", heading.lower().replace(" ", "-"))
        for heading in re.findall(r"^## (.+)$", RUNBOOKS.read_text(), re.MULTILINE)
    }
    for rule in alert_rules():
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]
        page, _, anchor = rule["annotations"]["runbook_url"].partition("#")
        assert page == "docs/runbooks.md" and anchor == rule["alert"].lower(), rule["alert"]
        assert anchor in anchors, f"docs/runbooks.md has no section '## {rule['alert']}'"
