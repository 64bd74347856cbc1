"""TLS to DataHub (issue 21): an https endpoint's certificate is verified, by the SDK's requests and by the
job's fast read path alike, against ``datahub.ca_file`` or the public CAs; a certificate that does not
verify stops a component at start with what to change. The certificates are made by the ``openssl``
command line for a CA of the test's own (tests/support/tls.py); the emulator serves https with one of them."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import urllib3
from datahub.models import CompressFormat

from flink_job.reading import ShardFetcher, Wire
from obflow.config import DataHubConfig
from obflow.datahub.client import ensure_change_topic, make_client, untrusted_endpoint
from obflow.datahub.consumer import ShardReader, decode_events
from obflow.datahub.producer import Producer
from obflow.net import free_port
from obflow_dev.emulator import DataHubEmulator
from obflow_dev.sample import change_stream
from tests.support.datahub import ACCESS_ID, ACCESS_KEY, datahub_config
from tests.support.tls import Certificates, https_emulator_at, make_certificates


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def https_emulator(tmp_path: Path, certificates: Certificates) -> Iterator[DataHubEmulator]:
    emulator = https_emulator_at(tmp_path, certificates.server)
    yield emulator
    emulator.stop()


def _config(endpoint: str, ca_file: Path | None, protocol: str = "pb") -> DataHubConfig:
    return datahub_config(endpoint, protocol, shards=2).model_copy(update={"ca_file": ca_file})


@pytest.mark.parametrize("protocol", ["json", "pb"])
def test_an_https_endpoint_is_verified_with_the_ca_file_by_the_sdk_and_the_fast_read_path(
    https_emulator: DataHubEmulator, certificates: Certificates, protocol: str
) -> None:
    assert https_emulator.endpoint.startswith("https://127.0.0.1:")
    config = _config(https_emulator.endpoint, certificates.ca, protocol)
    client = make_client(config)
    ensure_change_topic(client, config)
    events = change_stream(300, rows=40)
    assert Producer(client, config.project, config.topic, config.retry).send(events).records == len(events)

    by_sdk, by_fast_path = [], []
    for shard in ("0", "1"):
        reader = ShardReader(client, config.project, config.topic, shard)
        by_sdk += [e.event_id for batch in reader.read_all() for e in decode_events(batch.records)]
        fetcher = ShardFetcher(make_client(config, "json", reader=True), config.project, config.topic, shard)
        while (fetch := fetcher.fetch(100)).records.num_rows:
            by_fast_path += fetch.records.column("event_id").to_pylist()
        fetcher.close()
    assert sorted(by_sdk) == sorted(by_fast_path) == sorted(e.event_id for e in events)


@pytest.mark.parametrize("trust", ["the public CAs", "another CA"])
def test_a_certificate_that_does_not_chain_to_the_trusted_cas_is_refused_by_both_paths(
    https_emulator: DataHubEmulator, certificates: Certificates, trust: str
) -> None:
    config = _config(https_emulator.endpoint, None if trust == "the public CAs" else certificates.other_ca)
    with pytest.raises(requests.exceptions.SSLError) as refused:
        make_client(config).list_project()
    explanation = untrusted_endpoint(refused.value, config)
    assert explanation is not None and "set datahub.ca_file" in explanation
    assert ("certifi" if config.ca_file is None else str(certificates.other_ca)) in explanation

    wire = Wire(make_client(config, "json", reader=True))  # the fast path's own connection verifies too
    with pytest.raises(urllib3.exceptions.SSLError, match="CERTIFICATE_VERIFY_FAILED"):
        wire.post("/projects", b"{}", {}, CompressFormat.NONE)


def test_a_certificate_for_another_host_is_refused_though_its_ca_is_trusted(
    tmp_path: Path, certificates: Certificates
) -> None:
    emulator = https_emulator_at(tmp_path, certificates.wrong_host)
    try:
        config = _config(emulator.endpoint, certificates.ca)
        with pytest.raises(requests.exceptions.SSLError) as refused:
            make_client(config).list_project()
        explanation = untrusted_endpoint(refused.value, config)
        assert explanation is not None and "make sure the certificate names 127.0.0.1" in explanation
    finally:
        emulator.stop()


def test_an_error_that_is_not_about_the_certificate_is_not_explained_as_one() -> None:
    config = _config(f"http://127.0.0.1:{free_port()}", None)
    with pytest.raises(requests.exceptions.ConnectionError) as refused:
        make_client(config).list_project()
    assert untrusted_endpoint(refused.value, config) is None


def test_the_emulator_logs_a_refused_handshake_in_one_line_and_keeps_serving(
    https_emulator: DataHubEmulator, certificates: Certificates, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "obflow.datahub.emulator")
    with pytest.raises(requests.exceptions.SSLError):
        make_client(_config(https_emulator.endpoint, certificates.other_ca)).list_project()
    with pytest.raises(requests.exceptions.ConnectionError):  # plain http spoken to the https port
        requests.get(https_emulator.endpoint.replace("https", "http"), timeout=5)
    make_client(_config(https_emulator.endpoint, certificates.ca)).list_project()
    ended = [r for r in caplog.records if getattr(r, "event", None) == "emulator.connection"]
    assert len(ended) == 2 and all(not r.exc_info for r in ended), [r.getMessage() for r in caplog.records]
    assert not [r for r in caplog.records if r.exc_info], "a failed connection is not a traceback"


def _run(command: str, tmp_path: Path, endpoint: str, ca_file: Path) -> subprocess.CompletedProcess[str]:
    """``obflow COMMAND`` against ``endpoint`` trusting ``ca_file``, its state under ``tmp_path``."""
    environment = {
        "OBFLOW_DATAHUB__ENDPOINT": endpoint,
        "OBFLOW_DATAHUB__ACCESS_ID": ACCESS_ID,
        "OBFLOW_DATAHUB__ACCESS_KEY": ACCESS_KEY,
        "OBFLOW_DATAHUB__CA_FILE": str(ca_file),
        "OBFLOW_OUTPUT__METRICS_PORT": "0",
        "OBFLOW_CAPTURE__HTTP_PORT": "0",
        "PATH": "/usr/bin:/bin",
    }
    return subprocess.run(
        [sys.executable, "-m", "obflow.cli", *command.split()],
        cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


@pytest.mark.parametrize("ca_file", ["missing", "not PEM"])
def test_a_ca_file_that_cannot_be_used_is_a_config_error_naming_datahub_ca_file(tmp_path: Path, ca_file: str) -> None:
    path = tmp_path / "ca.pem"
    if ca_file == "not PEM":
        path.write_bytes(b"\x00\x01 no certificate here")
    for command in ("capture run", "job run"):
        result = _run(command, tmp_path, "https://127.0.0.1:1", path)
        assert result.returncode == 2, result.stderr
        assert "config.invalid" in result.stderr and "datahub.ca_file" in result.stderr
        assert str(path) in result.stderr and "OBFLOW_DATAHUB__CA_FILE" in result.stderr
        assert "Traceback" not in result.stderr


def test_the_job_refuses_to_start_on_an_untrusted_certificate_saying_what_to_set(
    tmp_path: Path, https_emulator: DataHubEmulator, certificates: Certificates
) -> None:
    """(The capture agent's twin is in tests/capture: it reaches DataHub only after its database.)"""
    result = _run("job run", tmp_path, https_emulator.endpoint, certificates.other_ca)
    assert result.returncode == 2, result.stderr
    assert "config.invalid" in result.stderr and "set datahub.ca_file" in result.stderr
    assert "Traceback" not in result.stderr
