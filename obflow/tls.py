"""Verifying a TLS peer (DataHub, the database): the CAs its certificate must chain to, and what to tell
the user when it does not, since such a failure never passes by retrying."""

from __future__ import annotations

import ssl
from pathlib import Path

import certifi


def trusted_cas(ca_file: Path | None) -> str:
    """The PEM bundle a peer's certificate must chain to: ``ca_file``, else certifi's public CAs."""
    return str(ca_file) if ca_file else certifi.where()


def verifying_context(ca_file: Path | None) -> ssl.SSLContext:
    """A client context that requires a certificate chaining to :func:`trusted_cas` and naming the host."""
    context = ssl.create_default_context(cafile=trusted_cas(ca_file))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def certificate_failure(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    """The certificate verification failure behind ``exc``, if that is what it is."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return cause
        seen.add(id(cause))
        # PyMySQL keeps the socket's error as ``original_exception``
        cause = cause.__cause__ or cause.__context__ or getattr(cause, "original_exception", None)
    return None


def untrusted_peer(
    peer: str, host: str, failure: ssl.SSLCertVerificationError, ca_file: Path | None, ca_key: str
) -> str:
    """What to change when ``peer``'s certificate (reached as ``host``) failed verification against
    ``ca_file``, the config key ``ca_key``."""
    trusted = f"the CAs in {ca_key} ({ca_file})" if ca_file else "the public CAs (certifi)"
    return (
        f"{peer} presented a certificate that fails verification against {trusted}: {failure.verify_message}; "
        f"set {ca_key} to the PEM file of the CA that signed it, and make sure the certificate names {host}"
    )
