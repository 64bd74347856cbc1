"""DataHub's request signature, checked as Alibaba Cloud checks it: ``Authorization: DATAHUB <id>:<signature>``,
where the signature is base64 HMAC-SHA1, under the access key, of the canonical string (method, Content-Type, Date,
the ``x-datahub-*`` headers sorted by name, then the path with its sorted query)."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from urllib.parse import parse_qsl, unquote

from obflow_dev.emulator.store import DataHubError


def canonical_string(method: str, path: str, query: str, headers: Mapping[str, str]) -> str:
    """The text a client signs; ``headers`` are keyed by lower-case name."""
    signed = {name: value for name, value in headers.items() if name.startswith("x-datahub-")}
    pairs = sorted(parse_qsl(unquote(query), keep_blank_values=True), key=lambda pair: pair[0])
    canonical_query = "&".join(f"{name}={value}" if value else name for name, value in pairs)
    lines = [method, headers.get("content-type", ""), headers.get("date", "")]
    lines += [f"{name}:{signed[name]}" for name in sorted(signed)]
    lines.append(unquote(path) + ("?" + canonical_query if canonical_query else ""))
    return "\n".join(lines)


def signature(access_key: str, canonical: str) -> str:
    digest = hmac.new(access_key.encode("latin-1"), canonical.encode("latin-1"), hashlib.sha1)
    return base64.b64encode(digest.digest()).decode()


def check_authorization(
    access_id: str, access_key: str, method: str, path: str, query: str, headers: Mapping[str, str]
) -> None:
    """Raise DataHub's 401 unless the request is signed by ``access_id`` with ``access_key``."""
    scheme, _, credentials = headers.get("authorization", "").partition(" ")
    client_id, _, client_signature = credentials.partition(":")
    if scheme != "DATAHUB" or not client_signature:
        raise DataHubError(401, "Unauthorized", "missing or malformed Authorization header")
    if client_id != access_id:
        raise DataHubError(401, "Unauthorized", f"AccessKeyId {client_id!r} is not found")
    expected = signature(access_key, canonical_string(method, path, query, headers))
    if not hmac.compare_digest(expected, client_signature):
        raise DataHubError(401, "Unauthorized", "the request signature does not match (check the access key)")
