"""Certificates for TLS tests, made by the ``openssl`` command line, and an emulator serving https."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from obflow_dev.emulator import DataHubEmulator, server_tls_context
from tests.support.datahub import ACCESS_ID, ACCESS_KEY


@dataclass(frozen=True)
class Certificates:
    ca: Path
    other_ca: Path  # trusted by nobody here
    server: tuple[Path, Path]  # for 127.0.0.1 and localhost, signed by ca
    wrong_host: tuple[Path, Path]  # for elsewhere.invalid only, signed by ca


def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)


def _ca(directory: Path, name: str) -> tuple[Path, Path]:
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert, "-days", "2",
             "-subj", f"/CN={name}")  # fmt: skip
    return cert, key


def _server(directory: Path, name: str, ca: tuple[Path, Path], alt_names: str) -> tuple[Path, Path]:
    cert, key, request, extensions = (directory / f"{name}{suffix}" for suffix in (".pem", ".key", ".csr", ".cnf"))
    extensions.write_text(f"subjectAltName={alt_names}\n")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", request, "-subj", f"/CN={name}")
    _openssl("x509", "-req", "-in", request, "-CA", ca[0], "-CAkey", ca[1], "-CAcreateserial", "-out", cert,
             "-days", "2", "-extfile", extensions)  # fmt: skip
    return cert, key


def make_certificates(directory: Path) -> Certificates:
    ca = _ca(directory, "obflow-test-ca")
    return Certificates(
        ca=ca[0],
        other_ca=_ca(directory, "other-ca")[0],
        server=_server(directory, "server", ca, "IP:127.0.0.1,DNS:localhost"),
        wrong_host=_server(directory, "wrong-host", ca, "DNS:elsewhere.invalid"),
    )


def https_emulator_at(directory: Path, cert: tuple[Path, Path]) -> DataHubEmulator:
    """A started emulator serving https with ``cert`` (certificate, key), its data under ``directory``."""
    tls = server_tls_context(str(cert[0]), str(cert[1]))
    return DataHubEmulator(str(directory / "datahub"), access_id=ACCESS_ID, access_key=ACCESS_KEY, tls=tls).start()
