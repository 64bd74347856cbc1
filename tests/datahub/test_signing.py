"""The emulator's signature check against the real SDK's signer (pydatahub's ``AliyunAccount.sign_request``)."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
import requests
from datahub.auth import AliyunAccount

from obflow_dev.emulator.signing import check_authorization
from obflow_dev.emulator.store import DataHubError

ACCESS_ID = "obflow-id"
ACCESS_KEY = "obflow-secret"


def sdk_signed(method: str, url: str, extra_headers: dict[str, str]) -> requests.PreparedRequest:
    headers = {"Content-Type": "application/json", "Date": "Mon, 07 Dec 2026 20:40:00 GMT", **extra_headers}
    request = requests.Request(method, url, headers=headers, data=b"{}").prepare()
    AliyunAccount(access_id=ACCESS_ID, access_key=ACCESS_KEY).sign_request(request)
    return request


def check(request: requests.PreparedRequest, access_key: str = ACCESS_KEY, path: str | None = None) -> None:
    url = urlsplit(str(request.url))
    check_authorization(ACCESS_ID, access_key, request.method or "", path or url.path, url.query, lowered(request))


def lowered(request: requests.PreparedRequest) -> dict[str, str]:
    return {name.lower(): str(value) for name, value in request.headers.items()}


CASES = [
    ("GET", "http://dh/projects/p/topics/t/shards", {}),
    ("POST", "http://dh/projects/p/topics/t/shards/0", {"x-datahub-request-action": "sub"}),
    ("POST", "http://dh/projects/p/topics/t/shards", {"X-Datahub-Client-Version": "1.1", "x-datahub-a": "b"}),
    ("GET", "http://dh/projects/p/topics?mode=list&b=2&a=&c=x%20y", {}),
]


@pytest.mark.parametrize(("method", "url", "extra_headers"), CASES)
def test_what_the_sdk_signs_is_accepted(method: str, url: str, extra_headers: dict[str, str]) -> None:
    check(sdk_signed(method, url, extra_headers))


@pytest.mark.parametrize(("method", "url", "extra_headers"), CASES)
def test_another_key_or_another_path_is_refused(method: str, url: str, extra_headers: dict[str, str]) -> None:
    request = sdk_signed(method, url, extra_headers)
    with pytest.raises(DataHubError, match="signature does not match"):
        check(request, access_key="another-secret")
    with pytest.raises(DataHubError, match="signature does not match"):
        check(request, path="/projects/other/topics")


def test_another_access_id_or_no_signature_is_named() -> None:
    request = sdk_signed(*CASES[0])
    headers = lowered(request)
    with pytest.raises(DataHubError, match="AccessKeyId 'obflow-id' is not found"):
        check_authorization("someone", ACCESS_KEY, "GET", "/projects/p/topics/t/shards", "", headers)
    with pytest.raises(DataHubError, match="missing or malformed"):
        check_authorization(ACCESS_ID, ACCESS_KEY, "GET", "/", "", {"authorization": "DATAHUB obflow-id"})
