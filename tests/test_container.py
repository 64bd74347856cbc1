"""obflow-healthcheck picks the endpoint of the component running as PID 1 (unit level; the images'
tests run it in real containers)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from obflow.container import health_url, main, write_flink_config

JAVA = ["/usr/lib/jvm/java-17-openjdk-amd64/bin/java", "-Xmx1g", "-classpath", "/opt/obflow/flink/lib/*"]


@pytest.mark.parametrize(
    ("pid1", "env", "url"),
    [
        ([*JAVA, "org.apache.flink.runtime.taskexecutor.TaskManagerRunner", "--configDir", "/tmp/c"], {},
         "http://127.0.0.1:9249/metrics"),
        ([*JAVA, "org.apache.flink.container.entrypoint.StandaloneApplicationClusterEntryPoint"], {},
         "http://127.0.0.1:8081/config"),
        (["python3", "/opt/obflow/bin/obflow-container", "capture", "run"], {"OBFLOW_CAPTURE__HTTP_PORT": "9400"},
         "http://127.0.0.1:9400/readyz"),
        (["python3", "/opt/obflow/bin/obflow-container"], {"OBFLOW_COMMAND": "capture"},
         "http://127.0.0.1:9300/readyz"),
        (["python3", "/opt/obflow/bin/obflow-container", "operator", "run", "--liveness-port=8181"], {},
         "http://127.0.0.1:8181/healthz"),
        (["python3", "/opt/obflow/bin/obflow-container"], {"OBFLOW_COMMAND": "operator"},
         "http://127.0.0.1:8080/healthz"),
        (["python3", "/opt/obflow/bin/obflow-container", "datahub-emulator", "--port", "9000", "--data-dir", "/d"],
         {"OBFLOW_COMMAND": "capture"}, "http://127.0.0.1:9000/healthz"),
        (["anything"], {"OBFLOW_HEALTH_URL": "http://127.0.0.1:1/ok"}, "http://127.0.0.1:1/ok"),
    ],
)  # fmt: skip
def test_health_url_follows_the_component(pid1: list[str], env: dict[str, str], url: str) -> None:
    assert health_url(pid1, env) == url


def test_no_arguments_and_no_component_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "OBFLOW_COMMAND" in capsys.readouterr().err


def test_flink_config_is_flattened_and_flink_properties_win(tmp_path: Path) -> None:
    stock = {
        "jobmanager": {"rpc": {"address": "localhost", "port": 6123}},
        "env": {"java": {"opts": {"all": "--add-opens=x"}}},
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(stock))
    config = write_flink_config(tmp_path, tmp_path, "jobmanager.rpc.address: jobmanager-1\nparallelism.default: 4\n")
    assert config == {
        "jobmanager.rpc.address": "jobmanager-1", "jobmanager.rpc.port": 6123,
        "env.java.opts.all": "--add-opens=x", "parallelism.default": 4,
    }  # fmt: skip
    assert yaml.safe_load((tmp_path / "config.yaml").read_text()) == config
    with pytest.raises(ValueError, match="FLINK_PROPERTIES"):
        write_flink_config(tmp_path, tmp_path, "just words")
