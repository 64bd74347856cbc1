"""Reading a DataHub shard straight into Arrow columns: the job's read path.

The SDK still does everything on the wire — it signs each request, frames it (JSON, or protobuf with
its CRC), compresses (LZ4), sends it and maps DataHub's error codes to exceptions — but its response
body is taken raw and decoded once, into Arrow:

* JSON (the fast path): one ``pyarrow.json.read_json`` of the whole body with an explicit schema
  (``Records: list<struct<Sequence, SystemTime, Data: list<string>>>``), then each field of the
  TUPLE record is a column (``list_element``). No per-record Python object exists.
* protobuf: the SDK's own message classes (cprotobuf, C) parse the frame; each field's bytes then
  become one Arrow column. The values pass through Python ``bytes`` objects once, in C.

Either way the columns are :data:`COLUMNS`, with a record's DataHub sequence and system time first;
the ``payload`` (the envelope's JSON text) stays undecoded here: each table decodes its own payloads
once, with its own schema (flink_job.mapping). ``tests/flink/test_reading.py`` reads the same topic
through the SDK and through this path, in both protocols, and compares every value.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json
import urllib3
from datahub import DataHub
from datahub.exceptions import DatahubException, InvalidCursorException
from datahub.implement import DataHubPB
from datahub.models.compress import get_compressor
from datahub.models.params import GetPBRecordsRequestParams, GetRecordsRequestParams
from datahub.proto.datahub_record_proto_pb import GetRecordsResponse
from datahub.rest import Headers, RestClient
from datahub.rest import Path as DataHubPaths
from datahub.utils.codec import unwrap_pb_frame
from requests.structures import CaseInsensitiveDict

from obflow.datahub.client import VerifyingAdapter
from obflow.datahub.consumer import open_cursor
from obflow.events import DATAHUB_FIELDS

FIELDS = [name for name, _ in DATAHUB_FIELDS]
INTEGER_FIELDS = frozenset(name for name, kind in DATAHUB_FIELDS if kind == "BIGINT")
COLUMNS = pa.schema(
    [
        ("sequence", pa.int64()),
        ("system_time", pa.int64()),
        *((name, pa.int64() if name in INTEGER_FIELDS else pa.string()) for name in FIELDS),
    ]
)
"""The columns of a fetch: DataHub's sequence and system time, then the change topic's TUPLE fields."""

_RESPONSE = pa.schema(
    [
        ("NextCursor", pa.string()),
        (
            "Records",
            pa.list_(
                pa.struct([("Sequence", pa.int64()), ("SystemTime", pa.int64()), ("Data", pa.list_(pa.string()))])
            ),
        ),
    ]
)
SMALL_BODY = 2048
_PARSE = pa_json.ParseOptions(explicit_schema=_RESPONSE, unexpected_field_behavior="ignore", newlines_in_values=True)


class MalformedResponseError(DatahubException):  # type: ignore[misc]
    """A GetRecords response that is not what DataHub sends (the records cannot be trusted)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)


@dataclass(frozen=True)
class Fetch:
    records: pa.Table
    """One row per record, :data:`COLUMNS`, in sequence order."""
    next_sequence: int
    """The sequence to read from next."""


def decode_json(body: bytes) -> tuple[pa.Table, str]:
    """A JSON GetRecords body → (records as :data:`COLUMNS`, next cursor)."""
    if len(body) < SMALL_BODY:  # an idle shard's answer: no records, not worth Arrow's reader
        response = _small(body)
        if not response["Records"]:
            return COLUMNS.empty_table(), str(response["NextCursor"])
    options = pa_json.ReadOptions(block_size=max(len(body) + 1, 1 << 20), use_threads=False)
    try:
        response = pa_json.read_json(pa.BufferReader(body), read_options=options, parse_options=_PARSE)
    except pa.ArrowInvalid as exc:
        raise MalformedResponseError(f"GetRecords response is not DataHub's JSON: {exc}") from None
    if response.num_rows != 1:
        raise MalformedResponseError(f"GetRecords response has {response.num_rows} objects, not one")
    records = pc.list_flatten(response.column("Records").combine_chunks())
    next_cursor = response.column("NextCursor")[0].as_py()
    if next_cursor is None:
        raise MalformedResponseError("GetRecords response has no NextCursor")
    data = records.field("Data")
    if len(records) and pc.any(pc.not_equal(pc.list_value_length(data), len(FIELDS))).as_py():
        raise MalformedResponseError(f"a record does not have the change topic's {len(FIELDS)} fields")
    columns = [records.field("Sequence"), records.field("SystemTime")]
    for index, name in enumerate(FIELDS):
        value = pc.list_element(data, index) if len(records) else pa.array([], pa.string())
        columns.append(_typed(value, name))
    return pa.Table.from_arrays(columns, schema=COLUMNS), str(next_cursor)


def _small(body: bytes) -> dict[str, Any]:
    try:
        response = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedResponseError(f"GetRecords response is not DataHub's JSON: {exc}") from None
    if not (isinstance(response, dict) and isinstance(response.get("NextCursor"), str)):
        raise MalformedResponseError("GetRecords response has no NextCursor")
    if not isinstance(response.get("Records"), list):
        raise MalformedResponseError("GetRecords response has no list of Records")
    return response


def decode_pb(body: bytes) -> tuple[pa.Table, str]:
    """A protobuf GetRecords frame → (records as :data:`COLUMNS`, next cursor)."""
    crc, computed, message = unwrap_pb_frame(body)
    if crc != computed:
        raise MalformedResponseError(f"GetRecords frame fails its CRC check ({crc!r} != {computed!r})")
    response = GetRecordsResponse()
    response.ParseFromString(message)
    records = response.records
    values: list[list[bytes | None]] = [[] for _ in FIELDS]
    for record in records:
        fields = record.data.data
        if len(fields) != len(FIELDS):
            raise MalformedResponseError(f"a record does not have the change topic's {len(FIELDS)} fields")
        for column, field in zip(values, fields, strict=True):
            # a value that is absent is NULL; cprotobuf keeps only what the message set (the SDK's
            # own read takes the default, b"", and so turns a NULL into an empty string)
            column.append(vars(field).get("value"))
    columns: list[pa.Array] = [
        pa.array([r.sequence for r in records], pa.int64()),
        pa.array([r.system_time for r in records], pa.int64()),
    ]
    for name, column in zip(FIELDS, values, strict=True):
        columns.append(_typed(pa.array(column, pa.binary()).cast(pa.string()), name))
    return pa.Table.from_arrays(columns, schema=COLUMNS), str(response.next_cursor)


def _typed(value: pa.Array, name: str) -> pa.Array:
    return pc.cast(value, pa.int64()) if name in INTEGER_FIELDS else value


@dataclass
class SignedRequest:
    """What the SDK's account signs (it reads ``method``, ``headers`` and ``path_url``), and the body."""

    method: str
    headers: CaseInsensitiveDict[str]
    path_url: str
    body: bytes


class Wire:
    """GetRecords requests the SDK's way, without the cost of its transport: the SDK's rest client
    builds and signs each request (its headers, its session's defaults, its compression, its account's
    signature: the same bytes on the wire) and maps error answers to its exceptions; the request is sent
    over one kept-alive urllib3 connection instead of requests' session machinery (adapters, hooks,
    cookies, environment merging: about 2 ms of CPU a request, 2 µs a record, measured)."""

    def __init__(self, client: DataHub, timeout: float = 30.0) -> None:
        self.rest: Any = client._datahub_impl._rest_client
        endpoint = urllib3.util.parse_url(self.rest.endpoint)
        host = endpoint.host or "localhost"
        limits = urllib3.Timeout(connect=10, read=timeout)
        self.pool: urllib3.HTTPConnectionPool
        if endpoint.scheme == "https":  # verified as make_client's session verifies it
            adapter = self.rest._session.get_adapter("https://")
            if not isinstance(adapter, VerifyingAdapter):
                raise TypeError("Wire needs a client from obflow.datahub.client.make_client (it verifies https)")
            ca_file = adapter.ca_file
            self.pool = urllib3.HTTPSConnectionPool(
                host, endpoint.port, timeout=limits, cert_reqs="CERT_REQUIRED", ca_certs=ca_file
            )
        else:
            self.pool = urllib3.HTTPConnectionPool(host, endpoint.port, timeout=limits)
        self._common_headers = self.rest._RestClient__common_headers
        self._compress = RestClient._RestClient__compress_content

    def post(self, url: str, data: bytes, headers: dict[str, str], compress_format: Any) -> bytes:
        request = self.build(url, data, headers, compress_format)
        response = self.pool.urlopen("POST", request.path_url, body=request.body, headers=dict(request.headers),
                                     retries=False, preload_content=True)  # fmt: skip
        content = response.data
        compressor = get_compressor(response.headers.get(Headers.CONTENT_ENCODING, ""))
        if compressor:
            content = compressor.decompress(content, int(response.headers.get(Headers.RAW_SIZE, "0")))
        if response.status >= 400:
            self._raise(response.status, response.headers.get(Headers.REQUEST_ID, ""), content)
        return bytes(content)

    def build(self, url: str, data: bytes, headers: dict[str, str], compress_format: Any) -> SignedRequest:
        """The request the SDK's rest client would send, signed by its account: its common headers and
        its session's defaults, the compressed body and its headers, the signature."""
        all_headers = CaseInsensitiveDict(self.rest._session.headers)
        all_headers.update(self._common_headers())
        all_headers.update(headers)
        body, compress_headers = self._compress(data, compress_format)
        all_headers.update(compress_headers)
        all_headers[Headers.CONTENT_LENGTH] = str(len(body))
        request = SignedRequest(
            "POST", all_headers, urllib3.util.parse_url(f"{self.rest.endpoint}{url}").request_uri, body
        )
        self.rest._account.sign_request(request)
        return request

    def _raise(self, status: int, request_id: str, content: bytes) -> None:
        try:
            error = orjson.loads(content)
            code, message, detail = error["ErrorCode"], error.get("ErrorMessage", ""), error.get("ErrorDetail", "")
        except (orjson.JSONDecodeError, KeyError, TypeError):
            raise DatahubException(f"DataHub answered {status}: {content[:200]!r}", status, request_id, "") from None
        self.rest._exception_handler.raise_exception(message, status, request_id, code, detail)


class ShardFetcher:
    """Sequential reader of one shard of a change topic, from a given sequence, into Arrow.

    ``on_expired(first, end)``: called when the records from ``first`` to before ``end`` expired from
    the shard (DataHub's lifecycle) before they were read; reading goes on at ``end``.

    ``read_ahead``: while the shard has more waiting (its fetches come back full), the next
    ``read_ahead_fetches`` requests are read and decoded on this executor, one after the other (a
    shard's reads follow its cursors), so that the waits for DataHub and Arrow's decoding (which lets
    go of the GIL) overlap the caller's work on the records it has. Only requests and their decoding
    run there; the cursor, the position and everything else stay with the caller's thread. At most
    twice ``read_ahead_fetches`` fetches are held (read, and being read); a shard read to its end reads
    nothing ahead, so an idle shard costs nothing more."""

    def __init__(
        self,
        client: DataHub,
        project: str,
        topic: str,
        shard_id: str,
        next_sequence: int = 0,
        on_expired: Callable[[int, int], None] = lambda first, end: None,
        read_ahead: Executor | None = None,
        read_ahead_fetches: int = 1,
    ) -> None:
        self.client = client
        self.on_expired = on_expired
        self.project, self.topic, self.shard_id = project, topic, shard_id
        self.next_sequence = next_sequence
        self._impl: Any = client._datahub_impl
        self._wire = Wire(client)
        self._pb = isinstance(self._impl, DataHubPB)
        self._url = DataHubPaths.SHARD % (project, topic, shard_id)
        self._cursor: str | None = None
        self._executor, self._depth = read_ahead, max(read_ahead_fetches, 1)
        self._ready: deque[tuple[pa.Table, str]] = deque()
        self._ahead: Future[list[tuple[pa.Table, str]]] | None = None
        self._ahead_limit = 0

    def seek(self, sequence: int) -> None:
        """Read from ``sequence`` next."""
        self._drop_ahead()
        self.next_sequence, self._cursor = sequence, None

    def close(self) -> None:
        """Forget what was read ahead (a request on its way ends on its own)."""
        self._drop_ahead()

    def _drop_ahead(self) -> None:
        self._ready.clear()
        if self._ahead is not None:
            self._ahead.cancel()
            self._ahead = None

    def _open(self) -> str:
        at = self.next_sequence
        cursor, self.next_sequence = open_cursor(self.client, self.project, self.topic, self.shard_id, at)
        if self.next_sequence > at:
            self.on_expired(at, self.next_sequence)
        return cursor

    def fetch(self, limit: int = 1000) -> Fetch:
        """Up to ``limit`` records from ``next_sequence`` on (none when nothing new arrived)."""
        if self._ahead_limit != limit:
            self._drop_ahead()
        if not self._ready and self._ahead is not None:
            ahead, self._ahead = self._ahead, None
            try:
                self._ready.extend(ahead.result())
            except InvalidCursorException:  # expired while it waited: open again below
                self._cursor = None
            if self._ready and self._ready[-1][0].num_rows >= limit:  # the next run while these are used
                self._read_ahead(self._ready[-1][1], limit)
        if self._ready:
            records, next_cursor = self._ready.popleft()
        else:
            if self._cursor is None:
                self._cursor = self._open()
            try:
                records, next_cursor = self._read(self._cursor, limit)
            except InvalidCursorException:  # expired: open again at the same sequence
                self._cursor = self._open()
                records, next_cursor = self._read(self._cursor, limit)
        if records.num_rows:
            last = records.column("sequence")[-1].as_py()
            if last < self.next_sequence:
                raise MalformedResponseError(
                    f"shard {self.shard_id} answered sequence {last} before {self.next_sequence}"
                )
            self.next_sequence = last + 1
        self._cursor = next_cursor
        if not self._ready and records.num_rows >= limit:
            self._read_ahead(next_cursor, limit)
        return Fetch(records, self.next_sequence)

    def _read_ahead(self, cursor: str, limit: int) -> None:
        """Start reading the fetches from ``cursor`` on (after a full one), unless they are on their way."""
        if self._executor is not None and self._ahead is None:
            self._ahead, self._ahead_limit = self._executor.submit(self._read_run, cursor, limit), limit

    def _read_run(self, cursor: str, limit: int) -> list[tuple[pa.Table, str]]:
        """Up to ``read_ahead_fetches`` fetches from ``cursor`` on, while they come back full."""
        run: list[tuple[pa.Table, str]] = []
        while len(run) < self._depth:
            try:
                records, cursor = self._read(cursor, limit)
            except InvalidCursorException:
                if run:
                    return run  # the caller goes on from the last of them, and meets it again
                raise
            run.append((records, cursor))
            if records.num_rows < limit:
                break
        return run

    def _read(self, cursor: str, limit: int) -> tuple[pa.Table, str]:
        """One GetRecords at ``cursor``, decoded: (records, the next cursor)."""
        params = GetPBRecordsRequestParams if self._pb else GetRecordsRequestParams
        request = params(cursor, limit)
        headers = request.extra_headers() if self._pb else {}
        body = self._wire.post(self._url, request.content(), headers, self._impl._compress_format)
        return decode_pb(body) if self._pb else decode_json(body)
