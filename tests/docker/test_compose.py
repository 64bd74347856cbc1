"""docker/compose.yaml (R8.7): valid for Docker Compose with docker/.env.example, complete (database,
DataHub emulator, capture, ZooKeeper, two JobManagers in HA, TaskManagers, Prometheus, Alertmanager,
Grafana), every container health-checked and restarted, every parameter from the environment, and
its Prometheus and pipeline configuration valid. test_compose_stack.py runs it."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from obflow.config import load_config
from tests.support.compose import ENV_EXAMPLE, env_example
from tests.support.promtool import run_promtool
from tests.support.repo import REPO_ROOT

DOCKER = REPO_ROOT / "docker"
COMPOSE = DOCKER / "compose.yaml"
OBFLOW_IMAGES_WITH_HEALTHCHECK = {
    "obflow/seekdb",
    "obflow/capture",
    "obflow/flink",
    "obflow/datahub-emulator",
}  # tests/docker/test_images.py


def resolved() -> dict[str, Any]:
    """The stack as Docker Compose sees it with .env.example."""
    compose = shutil.which("docker-compose")
    if compose is None:
        pytest.fail("docker-compose is missing: apt-get install docker-compose (scripts/bootstrap.sh does it)")
    result = subprocess.run(
        [compose, "-f", str(COMPOSE), "--env-file", str(ENV_EXAMPLE), "config"],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    stack: dict[str, Any] = yaml.safe_load(result.stdout)
    return stack


def test_the_stack_is_valid_and_complete_R8_7() -> None:
    services = resolved()["services"]
    assert {"database", "datahub", "capture-install", "capture", "zookeeper", "jobmanager-1", "jobmanager-2",
            "taskmanager", "prometheus", "alertmanager", "grafana"} <= set(services)  # fmt: skip
    for name in ("jobmanager-1", "jobmanager-2"):
        jobmanager = services[name]
        properties = yaml.safe_load(jobmanager["environment"]["FLINK_PROPERTIES"])
        assert properties["high-availability.type"] == "zookeeper"
        assert properties["high-availability.storageDir"].startswith("file:///data/")
        assert "00000000000000000000000000000001" in jobmanager["command"]  # one job, whichever leads
        assert "flink-data:/data:rw" in jobmanager["volumes"]  # checkpoints, savepoints, HA, output
    assert services["taskmanager"]["scale"] == int(env_example()["TASKMANAGER_REPLICAS"])
    assert "flink-data:/data:rw" in services["taskmanager"]["volumes"]


def test_every_container_is_health_checked_and_restarted_R4_5_R8_8() -> None:
    for name, service in resolved()["services"].items():
        if name in {"database-init", "capture-install"}:  # one-shots: run once, retried on failure
            assert service["restart"] == "on-failure"
            continue
        assert service["restart"] == "unless-stopped", name
        image = service["image"].split(":")[0]
        has_own = "healthcheck" in service and not service["healthcheck"].get("disable")
        assert has_own or image in OBFLOW_IMAGES_WITH_HEALTHCHECK, f"{name} has no health check"


def test_every_parameter_comes_from_the_environment_and_is_in_env_example_R8_6() -> None:
    text = COMPOSE.read_text()
    used = set(re.findall(r"\$\{([A-Z0-9_]+)", text))
    example = env_example()
    assert used - set(example) == set(), "variables compose.yaml uses but .env.example does not list"
    assert set(example) - used - {"COMPOSE_PROFILES"} == set(), ".env.example lists variables nothing uses"
    assert "GRAFANA_ADMIN_PASSWORD:?" in text  # no default password: the stack refuses to start without one


def test_the_pipeline_configuration_of_the_stack_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    obflow_env = resolved()["services"]["capture"]["environment"]
    for key, value in obflow_env.items():
        monkeypatch.setenv(key, str(value))
    config = load_config(DOCKER / "pipeline.yaml")
    assert config.source.host == "database" and config.datahub.endpoint == "http://datahub:8090"
    assert config.checkpoint.dir.startswith("file:///data/") and config.output.path.startswith("/data/")


def test_prometheus_configuration_is_valid_and_loads_the_alert_rules(tmp_path: Path) -> None:
    shutil.copy(DOCKER / "monitoring" / "prometheus.yml", tmp_path / "prometheus.yml")
    shutil.copy(REPO_ROOT / "charts" / "obflow" / "files" / "alerts.yaml", tmp_path / "alerts.yaml")
    result = run_promtool("check", "config", str(tmp_path / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 1 rule files found" in result.stdout + result.stderr
    jobs = {job["job_name"] for job in yaml.safe_load((tmp_path / "prometheus.yml").read_text())["scrape_configs"]}
    assert all(job.startswith("obflow-") for job in jobs)  # the alert rules select job=~"obflow.*"
    assert "obflow-job" in jobs  # ObflowJobRunnerDown
    mounts = resolved()["services"]["prometheus"]["volumes"]
    assert any("alerts.yaml" in str(mount) for mount in mounts)


def test_grafana_is_provisioned_with_the_dashboards() -> None:
    grafana = resolved()["services"]["grafana"]
    dashboards = f"{REPO_ROOT}/charts/obflow/dashboards:/var/lib/grafana/dashboards/obflow:ro"
    assert dashboards in grafana["volumes"]
    provider = yaml.safe_load((DOCKER / "monitoring" / "grafana" / "dashboards.yaml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards/obflow"
    datasource = yaml.safe_load((DOCKER / "monitoring" / "grafana" / "datasources.yaml").read_text())
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"


def test_the_sample_tables_of_initdb_are_the_tables_of_the_pipeline() -> None:
    script = (DOCKER / "initdb.sql").read_text()
    created = dict(re.findall(r"CREATE TABLE IF NOT EXISTS shop\.(\w+) \((.*?)\);", script, re.DOTALL))
    config = load_config(DOCKER / "pipeline.yaml")
    assert set(created) == {table.name for table in config.source.tables}
    for table in config.source.tables:
        declared = re.findall(r"(\w+) ([A-Z]+(?:\([\d,]+\))?)(?= NOT NULL| NULL| PRIMARY KEY)", created[table.name])
        assert declared == [(column.name, column.type) for column in table.columns], table.name
