"""The Grafana dashboards (charts/obflow/dashboards/*.json, provisioned by Compose and shipped by the
chart): every query parses (promtool checks it as a recording rule) and reads only metrics our
components export; the panels cover what R7.2-R7.5 ask for."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from tests.support.exported import exported_metric_names, metric_names_in
from tests.support.promtool import run_promtool

DASHBOARDS = sorted((Path(__file__).parents[2] / "charts/obflow/dashboards").glob("*.json"))
GRAFANA_RANGE_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [panel for panel in dashboard["panels"] if panel["type"] != "row"]


def queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target and query annotation."""
    found = [(panel["title"], target["expr"]) for panel in panels(dashboard) for target in panel["targets"]]
    found += [(f"annotation {a['name']}", a["expr"]) for a in dashboard["annotations"]["list"] if "expr" in a]
    return found


def test_there_are_dashboards() -> None:
    assert [path.name for path in DASHBOARDS] == ["obflow-pipeline.json"]


def test_every_query_reads_exported_metrics_R7_2_R7_3_R7_4_R7_5() -> None:
    exported = exported_metric_names()
    for path in DASHBOARDS:
        for where, expr in queries(load(path)):
            used = metric_names_in(expr)
            assert used, f"{path.name}: {where}: no metric in {expr!r}"
            assert used <= exported, f"{path.name}: {where}: nothing exports {sorted(used - exported)}"


def test_every_query_is_valid_promql(tmp_path: Path) -> None:
    for path in DASHBOARDS:
        rules = []
        for index, (_, query) in enumerate(queries(load(path))):
            expr = query
            for variable, value in GRAFANA_RANGE_VARIABLES.items():
                expr = expr.replace(variable, value)
            rules.append({"record": f"dashboard:query_{index}", "expr": expr})
        rule_file = tmp_path / f"{path.stem}.rules.yaml"
        rule_file.write_text(yaml.safe_dump({"groups": [{"name": path.stem, "rules": rules}]}))
        result = run_promtool("check", "rules", str(rule_file))
        assert result.returncode == 0, f"{path.name}: {result.stdout}{result.stderr}"


def test_the_panels_cover_flow_latency_checkpoints_backpressure_and_the_autoscaler() -> None:
    dashboard = load(DASHBOARDS[0])
    titles = " | ".join(panel["title"] for panel in panels(dashboard))
    for required in ("R7.2", "R7.3", "R7.4", "R7.5", "DataHub lag per shard", "Capture rate", "Dead letters",
                     "Autoscaler rescales", "Load of each pipeline"):  # fmt: skip
        assert required in titles, f"no panel for {required}: {titles}"
    exprs = " ".join(expr for _, expr in queries(dashboard))
    for metric in ("flink_taskmanager_job_task_operator_obflow_end_to_end_latency_seconds_le_bucket",
                   "flink_jobmanager_job_lastCheckpointDuration",
                   "flink_taskmanager_job_task_backPressuredTimeMsPerSecond", "obflow_capture_lag_seconds_bucket",
                   "flink_taskmanager_job_task_operator_obflow_shard_lag_ms"):  # fmt: skip
        assert metric in exprs


def test_dashboards_are_well_formed_for_provisioning() -> None:
    for path in DASHBOARDS:
        dashboard = load(path)
        assert dashboard["uid"] and dashboard["title"].startswith("obflow / ")
        ids = [panel["id"] for panel in dashboard["panels"]]
        assert len(ids) == len(set(ids)), f"{path.name}: duplicate panel ids"
        assert any(v["type"] == "datasource" for v in dashboard["templating"]["list"]), "no datasource variable"
        cells: set[tuple[int, int]] = set()
        for panel in dashboard["panels"]:
            grid = panel["gridPos"]
            assert grid["x"] + grid["w"] <= 24, f"{panel['title']} is wider than the dashboard"
            xs, ys = range(grid["x"], grid["x"] + grid["w"]), range(grid["y"], grid["y"] + grid["h"])
            area = {(x, y) for x in xs for y in ys}
            assert not area & cells, f"{path.name}: {panel['title']} overlaps another panel"
            cells |= area
            if panel["type"] != "row":
                assert panel["description"] and panel["targets"], panel["title"]
                assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
