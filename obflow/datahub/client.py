"""The pydatahub client as obflow configures it, and the change topic it writes to."""

from __future__ import annotations

import contextlib
from importlib.metadata import version
from typing import Any, Literal
from urllib.parse import urlsplit

from datahub import DataHub
from datahub.core import DatahubProtocolType
from datahub.exceptions import ResourceExistException
from datahub.models import CompressFormat, FieldType, RecordSchema
from requests.adapters import HTTPAdapter

from obflow import tls
from obflow.config import DataHubConfig
from obflow.events import DATAHUB_FIELDS


def make_client(config: DataHubConfig, protocol: Literal["pb", "json"] | None = None, reader: bool = False) -> DataHub:
    """An SDK client for ``config`` (speaking ``protocol`` when given, else ``datahub.protocol``).

    ``reader``: for bulk reads. The SDK formats every response body into a debug message before
    checking the log level (``'%s' % resp.content``: a repr of the whole body, ≈ 6 µs per record read)
    unless the client streams responses, so a reader streams them; the body is read whole all the same.

    The user agent is always set: the SDK's default probes the local IP with a UDP connect to a
    public address. Connection-level retries are off (``retry_times=0``) so the producer's retry
    rule (R1.5) is the only one and its schedule is exactly what the config says.

    An https endpoint's certificate is verified against ``datahub.ca_file`` (or certifi's CAs): the SDK
    itself sends every request with ``verify=False``, so its session gets an adapter that overrides that.
    """
    client = DataHub(
        config.access_id,
        config.access_key.get_secret_value(),
        config.endpoint,
        protocol_type=DatahubProtocolType.PB if (protocol or config.protocol) == "pb" else DatahubProtocolType.JSON,
        compress_format=CompressFormat.LZ4 if config.compression == "lz4" else CompressFormat.NONE,
        user_agent=f"obflow/{version('obflow')}",
        retry_times=0,
        conn_timeout=min(config.request_timeout, 10),
        read_timeout=config.request_timeout,
        stream=reader,
    )
    session = client._datahub_impl._rest_client._session
    session.mount("https://", VerifyingAdapter(trusted_cas(config)))
    return client


def trusted_cas(config: DataHubConfig) -> str:
    """The CA bundle (PEM file) an https endpoint's certificate must chain to."""
    return tls.trusted_cas(config.ca_file)


def untrusted_endpoint(exc: BaseException, config: DataHubConfig) -> str | None:
    """What to change when ``exc`` is the endpoint's certificate failing verification (None when it is not)."""
    failure = tls.certificate_failure(exc)
    if failure is None:
        return None
    host = urlsplit(config.endpoint).hostname or config.endpoint
    return tls.untrusted_peer(f"DataHub endpoint {config.endpoint}", host, failure, config.ca_file, "datahub.ca_file")


class VerifyingAdapter(HTTPAdapter):
    """An adapter that verifies the server's certificate against ``ca_file`` whatever its caller asks for."""

    def __init__(self, ca_file: str) -> None:
        super().__init__(max_retries=0)
        self.ca_file = ca_file

    def send(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        kwargs["verify"] = self.ca_file
        return super().send(request, *args, **kwargs)


def change_topic_schema() -> RecordSchema:
    """The TUPLE schema of change topics (docs/events.md)."""
    names = [name for name, _ in DATAHUB_FIELDS]
    types = [FieldType(kind.lower()) for _, kind in DATAHUB_FIELDS]
    return RecordSchema.from_lists(names, types)


def ensure_change_topic(client: DataHub, config: DataHubConfig, topic: str | None = None) -> None:
    """Create the project and the change topic when missing; an existing one is left as it is."""
    with contextlib.suppress(ResourceExistException):
        client.create_project(config.project, "obflow change data")
    with contextlib.suppress(ResourceExistException):
        client.create_tuple_topic(
            config.project,
            topic or config.topic,
            config.shards,
            7,
            change_topic_schema(),
            "obflow change events",
        )
    client.wait_shards_ready(config.project, topic or config.topic)
