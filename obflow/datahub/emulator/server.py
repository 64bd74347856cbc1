"""A DataHub-compatible HTTP endpoint for local runs, tests and benchmarks.

The unmodified ``pydatahub`` client works against it in the JSON and the PB protocol, with or
without LZ4 bodies. Requests are signed as on Alibaba Cloud (``Authorization: DATAHUB id:signature``)
and a wrong id or key gets DataHub's ``Unauthorized`` error. Unknown resources and malformed bodies
get DataHub's error codes. State lives in :class:`~obflow.datahub.emulator.store.Store`.

Faults for tests are switched at start or at run time through ``/_admin/faults`` (see
:class:`Faults`); ``/_admin/stats`` reports what happened to every put.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import logging
import random
import re
import socket
import ssl
import struct
import sys
import threading
import time
import uuid
import zlib
from collections import deque
from dataclasses import asdict, dataclass, field
from functools import cached_property
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import crcmod.predefined
import lz4.block
import orjson
from cprotobuf.internal import encode_data
from datahub.proto.datahub_record_proto_pb import (
    GetRecordsRequest,
    GetRecordsResponse,
    PutRecordsRequest,
    PutRecordsResponse,
)

from obflow.datahub.emulator.store import (
    DataHubError,
    Offset,
    Shard,
    Store,
    StoredRecord,
    Topic,
    cursor_text,
    invalid,
    validate_values,
)
from obflow.net import lingering_close

log = logging.getLogger("obflow.datahub.emulator")

MAX_GET_LIMIT = 1000
IDLE_CONNECTION_TIMEOUT = 300.0
MAX_RESPONSE_BYTES = 4 * 1024 * 1024
MAX_REQUEST_BYTES = 16 * 1024 * 1024  # DataHub takes at most 4 MB of records a put; JSON and base64 add to it
_BYTE_COUNT = re.compile(r"[0-9]{1,9}")
PB_MAGIC = b"DHUB"
HASH_SPACE = 1 << 128
_CRC32C = crcmod.predefined.mkCrcFun("crc-32c")


# fault → (lowest, highest, whole number, may be null)
FAULT_BOUNDS: dict[str, tuple[float, float, bool, bool]] = {
    "put_request_failure_rate": (0, 1, False, False),
    "put_record_failure_rate": (0, 1, False, False),
    "put_record_max_failures": (0, 10**6, True, True),
    "fail_next_puts": (0, 10**6, True, False),
    "latency_ms": (0, 60_000, False, False),
    "seed": (-(2**63), 2**63 - 1, True, True),
}
MAX_OUTAGE_S = 3600
MAX_LIFECYCLE_DAYS = 3650


@dataclass
class Faults:
    """Injected failures; every field can be changed at run time through ``POST /_admin/faults``."""

    put_request_failure_rate: float = 0.0
    """Share of put requests answered with HTTP 500 InternalServerError (nothing stored)."""
    put_record_failure_rate: float = 0.0
    """Share of records in each put reported as failed (LimitExceeded), the rest stored."""
    put_record_max_failures: int | None = None
    """With a record failure rate: fail each record (same content) at most this many times."""
    fail_next_puts: int = 0
    """The next N put requests fail whole, whatever the rates."""
    latency_ms: float = 0.0
    """Added to every DataHub request."""
    seed: int | None = None

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.failures_by_record: dict[bytes, int] = {}
        self.lock = threading.Lock()

    def reject_record(self, values: list[str | None] | bytes) -> bool:
        """Whether to fail this record now, by the rate and the per-record cap."""
        if not self.put_record_failure_rate:
            return False
        with self.lock:
            if self.rng.random() >= self.put_record_failure_rate:
                return False
            if self.put_record_max_failures is None:
                return True
            content = values if isinstance(values, bytes) else orjson.dumps(values)
            digest = hashlib.blake2b(content, digest_size=16).digest()
            count = self.failures_by_record.get(digest, 0)
            if count >= self.put_record_max_failures:
                return False
            self.failures_by_record[digest] = count + 1
            return True

    def update(self, changes: Any) -> None:
        """Apply ``changes`` (fault → value) whole, or none of it: InvalidParameter naming the first fault
        of an unknown name, a wrong type or a value out of its bounds (:data:`FAULT_BOUNDS`)."""
        if not isinstance(changes, dict):
            raise invalid("the faults are a JSON object of fault names and values")
        for key, value in changes.items():
            if key not in FAULT_BOUNDS:
                raise invalid(f"unknown fault {key!r}; known: {', '.join(FAULT_BOUNDS)}")
            low, high, whole, nullable = FAULT_BOUNDS[key]
            if value is None and nullable:
                continue
            kinds = (int,) if whole else (int, float)
            if isinstance(value, bool) or not isinstance(value, kinds) or not low <= value <= high:
                kind = "a whole number" if whole else "a number"
                raise invalid(f"fault {key!r} must be {kind} from {low} to {high}{' or null' if nullable else ''}")
        for key, value in changes.items():
            setattr(self, key, value)
        if "seed" in changes:
            self.rng = random.Random(self.seed)
        self.failures_by_record.clear()

    def public(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


@dataclass
class PutLogEntry:
    time: float
    shard_ids: list[str]
    records: int
    failed: int
    whole_request_failed: bool


@dataclass
class Stats:
    puts: deque[PutLogEntry] = field(default_factory=lambda: deque(maxlen=10_000))
    records_stored: int = 0
    records_read: int = 0
    requests: int = 0


class DataHubEmulator:
    """The emulator: a store, an HTTP server on ``host:port`` and the fault switches."""

    def __init__(
        self,
        data_dir: str,
        host: str = "127.0.0.1",
        port: int = 0,
        access_id: str = "obflow",
        access_key: str = "obflow-local-key",
        faults: Faults | None = None,
        fsync: bool = False,
        admin: bool = False,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        """``admin``: serve ``/_admin/`` (faults, outages, put statistics) to anything that reaches the port,
        unauthenticated; off, it answers 404. ``tls``: serve https with this server context
        (:func:`server_tls_context`)."""
        self.store = Store(data_dir, fsync=fsync)
        self.admin = admin
        self.host = host
        self.access_id = access_id
        self.access_key = access_key
        self.faults = faults or Faults()
        self.tls = tls
        self.stats = Stats()
        self._port = port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._lifecycle = threading.Lock()
        self._refusing_until = 0.0

    @property
    def port(self) -> int:
        return self._port

    @property
    def endpoint(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self._port}"

    def start(self) -> DataHubEmulator:
        with self._lifecycle:
            self._server = _Server((self.host, self._port), _Handler, self)
            self._port = self._server.server_address[1]
            self._thread = threading.Thread(
                target=self._server.serve_forever, args=(0.05,), name="datahub-emulator", daemon=True
            )
            self._thread.start()
        log.info("DataHub emulator listening on %s (data in %s)", self.endpoint, self.store.data_dir)
        return self

    def stop(self) -> None:
        with self._lifecycle:
            self._stop_server()
        self.store.close()

    def serve_forever(self) -> None:
        self.start()
        try:
            while True:
                time.sleep(3600)
        finally:
            self.stop()

    def refuse_connections(self, seconds: float) -> None:
        """Close the port (new connections are refused, open ones dropped) for ``seconds``."""
        log.warning("refusing connections for %.1fs", seconds, extra={"event": "emulator.outage"})
        with self._lifecycle:
            self._refusing_until = time.monotonic() + seconds
            self._stop_server()
        timer = threading.Timer(seconds, self._reopen_after_outage)
        timer.daemon = True
        timer.start()

    def _reopen_after_outage(self) -> None:
        with self._lifecycle:
            if self._server is not None or time.monotonic() < self._refusing_until - 0.01:
                return
        self.start()

    def _stop_server(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.drop_connections()
            server.server_close()


def server_tls_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    """A TLS 1.2+ server context presenting ``cert_file`` (the chain, PEM) with ``key_file``."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    return context


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], handler: type[_Handler], emulator: DataHubEmulator) -> None:
        self.emulator = emulator
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, handler)
        if emulator.tls:
            # The handshake happens on the connection's first read, in its own thread, so a client that
            # never completes one holds only that thread (until the handler's timeout), not the accept loop.
            self.socket = emulator.tls.wrap_socket(self.socket, server_side=True, do_handshake_on_connect=False)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A connection that fails below HTTP (a TLS handshake refused, a client gone, a read timed out)
        is one log line, not socketserver's traceback on stderr."""
        error = sys.exc_info()[1]
        if isinstance(error, OSError):
            _log_connection_ended(client_address[0], error)
        else:
            log.exception("connection from %s failed", client_address[0])

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.connections_lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.connections_lock:
            self.connections.discard(request)
        lingering_close(request)

    def drop_connections(self) -> None:
        with self.connections_lock:
            for conn in list(self.connections):
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)


def _log_connection_ended(client: str, why: BaseException) -> None:
    """One line for a connection that ended below DataHub's protocol, never a traceback."""
    log.info("connection from %s ended: %s", client, why, extra={"event": "emulator.connection"})


class _BodyNotReceivedError(Exception):
    """The client stopped sending before the whole body (Content-Length) arrived: it timed out, or the
    client shut its side of the connection."""

    def __init__(self, message: str, timed_out: bool) -> None:
        super().__init__(message)
        self.timed_out = timed_out


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; with Nagle on, the body waits for the client's delayed
    # ACK (~40 ms per request).
    disable_nagle_algorithm = True
    # A client that stops sending mid-request (or never finishes a handshake) is dropped after this long;
    # well above any client's idle gap between requests on a kept-alive connection.
    timeout = IDLE_CONNECTION_TIMEOUT
    # http.server answers a line it cannot parse as HTTP/0.9, without a status line; DataHub speaks 1.x only
    default_request_version = "HTTP/1.0"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.client_address[0], *args)

    def parse_request(self) -> bool:
        if not super().parse_request():
            return False
        if len(self.requestline.split()) != 3:  # "GET /path": an HTTP/0.9 request, which DataHub has not
            self.send_error(400, "Bad request line: expected METHOD PATH HTTP/1.x")
            return False
        return True

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own refusals (a request line or header block it cannot parse, a method DataHub does
        not have: 501) in DataHub's JSON error form, which clients parse; the connection is closed."""
        reason = message or self.responses.get(code, ("",))[0]
        error = "InvalidOperation" if code == 501 else "InvalidParameter"
        body = orjson.dumps({"ErrorCode": error, "ErrorMessage": reason})
        self.log_message("answered %d: %s", code, reason)
        self.close_connection = True
        self.send_response(code, reason)
        self.send_header("Connection", "close")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    # ---- request plumbing -----------------------------------------------------------------

    def _serve(self, method: str) -> None:
        request_id = uuid.uuid4().hex
        emulator = self.server.emulator
        try:
            body = self._read_body()
            url = urlsplit(self.path)
            if url.path.startswith("/_admin/") and not emulator.admin:
                raise DataHubError(404, "InvalidUriSpec", "the admin endpoint is off; start the emulator with --admin")
            if url.path.startswith("/_admin/") or url.path == "/healthz":
                self._send_json(200, _admin(emulator, method, url.path, body), request_id)
                return
            emulator.stats.requests += 1
            if emulator.faults.latency_ms:
                time.sleep(emulator.faults.latency_ms / 1000)
            self._authenticate(method, url.path, url.query)
            status, payload = dispatch(emulator, method, url.path, body, dict(self.headers.items()))
            if isinstance(payload, bytes):
                self._send(status, payload, "application/x-protobuf", request_id)
            else:
                self._send_json(status, payload, request_id)
        except DataHubError as exc:
            self._send_json(exc.status, {"ErrorCode": exc.code, "ErrorMessage": exc.message}, request_id)
        except _BodyNotReceivedError as exc:
            self.close_connection = True
            _log_connection_ended(self.client_address[0], exc)
            status, code = (408, "RequestTimeout") if exc.timed_out else (400, "InvalidParameter")
            with contextlib.suppress(OSError):  # the client may be gone altogether
                self._send_json(status, {"ErrorCode": code, "ErrorMessage": str(exc)}, request_id)
        except Exception as exc:
            log.exception("emulator failed on %s %s", method, self.path)
            error = {"ErrorCode": "InternalServerError", "ErrorMessage": f"{type(exc).__name__}: {exc}"}
            self._send_json(500, error, request_id)

    def _byte_count(self, header: str) -> int:
        """The byte count a header gives (0 when absent), at most MAX_REQUEST_BYTES; else InvalidParameter,
        and the connection is closed (what follows a bad length cannot be framed)."""
        text = self.headers.get(header) or "0"
        if not _BYTE_COUNT.fullmatch(text) or int(text) > MAX_REQUEST_BYTES:
            self.close_connection = True
            raise invalid(f"header {header} must be a byte count from 0 to {MAX_REQUEST_BYTES}, not {text[:40]!r}")
        return int(text)

    def _read_body(self) -> bytes:
        length = self._byte_count("Content-Length")
        try:
            raw = self.rfile.read(length) if length else b""
        except TimeoutError:
            raise _BodyNotReceivedError(f"no more of the body within {self.timeout:g}s", timed_out=True) from None
        except OSError as exc:
            raise _BodyNotReceivedError(f"the body could not be read: {exc}", timed_out=False) from None
        if len(raw) < length:
            raise _BodyNotReceivedError(
                f"the body ended after {len(raw)} of the {length} bytes Content-Length gives", timed_out=False
            )
        encoding = (self.headers.get("Content-Encoding") or "").lower()
        if not raw or not encoding:
            return raw
        try:
            if encoding == "lz4":
                size = self._byte_count("x-datahub-content-raw-size")
                return bytes(lz4.block.decompress(struct.pack("<I", size) + raw))
            if encoding in ("deflate", "zlib"):
                return zlib.decompress(raw)
        except (lz4.block.LZ4BlockError, zlib.error, ValueError) as exc:
            raise invalid(f"body does not decompress as {encoding}: {exc}") from None
        raise invalid(f"unsupported Content-Encoding {encoding!r}")

    def _authenticate(self, method: str, path: str, query: str) -> None:
        emulator = self.server.emulator
        auth = self.headers.get("Authorization") or ""
        scheme, _, credentials = auth.partition(" ")
        access_id, _, signature = credentials.partition(":")
        if scheme != "DATAHUB" or not signature:
            raise DataHubError(401, "Unauthorized", "missing or malformed Authorization header")
        if access_id != emulator.access_id:
            raise DataHubError(401, "Unauthorized", f"AccessKeyId {access_id!r} is not found")
        signed = {k.lower(): v for k, v in self.headers.items() if k.lower().startswith("x-datahub-")}
        pairs = sorted(parse_qsl(unquote(query), keep_blank_values=True), key=lambda p: p[0])
        canonical_query = "&".join(f"{k}={v}" if v else k for k, v in pairs)
        lines = [method, self.headers.get("Content-Type") or "", self.headers.get("Date") or ""]
        lines += [f"{k}:{signed[k]}" for k in sorted(signed)]
        lines.append(unquote(path) + ("?" + canonical_query if canonical_query else ""))
        digest = hmac.new(emulator.access_key.encode("latin-1"), "\n".join(lines).encode("latin-1"), hashlib.sha1)
        if not hmac.compare_digest(base64.b64encode(digest.digest()).decode(), signature):
            raise DataHubError(401, "Unauthorized", "the request signature does not match (check the access key)")

    def _send_json(self, status: int, payload: Any, request_id: str) -> None:
        self._send(status, orjson.dumps(payload) if payload is not None else b"", "application/json", request_id)

    def _send(self, status: int, body: bytes, content_type: str, request_id: str) -> None:
        headers = {"Content-Type": content_type, "x-datahub-request-id": request_id}
        if "lz4" in (self.headers.get("Accept-Encoding") or "").lower() and len(body) > 256:
            compressed = lz4.block.compress(body, store_size=False)
            if len(compressed) < len(body):
                headers["Content-Encoding"] = "lz4"
                headers["x-datahub-content-raw-size"] = str(len(body))
                body = compressed
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@dataclass
class _Request:
    method: str
    path: str
    body: bytes
    pb: bool
    headers: dict[str, str]
    """Request headers, names in lower case."""

    def json(self) -> dict[str, Any]:
        """The body as a JSON object, parsed once however often it is asked for."""
        return self._json

    @cached_property
    def _json(self) -> dict[str, Any]:
        if not self.body:
            return {}
        try:
            data = orjson.loads(self.body)
        except orjson.JSONDecodeError as exc:
            raise invalid(f"request body is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise invalid("request body must be a JSON object")
        return data

    def pb_message(self) -> bytes:
        if len(self.body) < 12 or self.body[:4] != PB_MAGIC:
            raise invalid("protobuf body must start with the DHUB frame header")
        length = struct.unpack(">I", self.body[8:12])[0]
        payload = self.body[12:]
        if length != len(payload):
            raise invalid(f"protobuf frame says {length} bytes, body has {len(payload)}")
        crc = struct.unpack(">I", self.body[4:8])[0]
        if crc != _crc32c(payload):
            raise invalid("protobuf frame checksum does not match")
        return payload

    def action(self) -> str:
        header = self.headers.get("x-datahub-request-action")
        if self.pb or header:
            return str(header or "")
        return str(self.json().get("Action", ""))


def dispatch(
    emulator: DataHubEmulator, method: str, path: str, body: bytes, headers: dict[str, str]
) -> tuple[int, Any]:
    """Answer one authenticated, decompressed DataHub request: (HTTP status, JSON data or PB bytes)."""
    lowered = {k.lower(): v for k, v in headers.items()}
    pb = lowered.get("content-type", "").startswith("application/x-protobuf")
    return _route(emulator, _Request(method, path, body, pb, lowered))


def _route(emulator: DataHubEmulator, req: _Request) -> tuple[int, Any]:
    parts = [unquote(p) for p in req.path.strip("/").split("/")]
    store = emulator.store
    if not parts or parts[0] != "projects":
        raise DataHubError(400, "InvalidUriSpec", f"unknown resource {req.path!r}")
    if len(parts) == 1:
        if req.method == "GET":
            return 200, {"ProjectNames": sorted(store.projects)}
        raise _bad_method(req)
    project = parts[1]
    if len(parts) == 2:
        return _project(store, req, project)
    if parts[2] != "topics":
        raise DataHubError(400, "InvalidUriSpec", f"unknown resource {req.path!r}")
    if len(parts) == 3:
        if req.method == "GET":
            return 200, {"TopicNames": sorted(store.project(project).topics)}
        raise _bad_method(req)
    topic = parts[3]
    if len(parts) == 4:
        return _topic(store, req, project, topic)
    if parts[4] == "shards" and len(parts) == 5:
        return _shards(emulator, req, project, topic)
    if parts[4] == "shards" and len(parts) == 6:
        return _shard(emulator, req, project, topic, parts[5])
    if parts[4] == "subscriptions" and len(parts) == 5:
        return _subscriptions(store, req, project, topic)
    if parts[4] == "subscriptions" and len(parts) == 6:
        return _subscription(store, req, project, topic, parts[5])
    if parts[4] == "subscriptions" and len(parts) == 7 and parts[6] == "offsets":
        return _offsets(store, req, project, topic, parts[5])
    raise DataHubError(400, "InvalidUriSpec", f"unknown resource {req.path!r}")


def _bad_method(req: _Request) -> DataHubError:
    return DataHubError(400, "InvalidUriSpec", f"{req.method} is not supported on {req.path}")


def _unsupported(action: str, req: _Request) -> DataHubError:
    return DataHubError(400, "InvalidOperation", f"action {action!r} on {req.path} is not supported by the emulator")


def _whole(body: dict[str, Any], key: str, default: int, low: int, high: int) -> int:
    """``body[key]`` as a whole number from ``low`` to ``high`` (``default`` when absent or null), else
    InvalidParameter naming it."""
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)  # the SDK sends some counts as JSON text
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise invalid(f"{key} must be a whole number from {low} to {high}, not {value!r:.40}")
    return value


def _position(offset: dict[str, Any]) -> tuple[int, int]:
    """An offset's ``Sequence`` and ``Timestamp`` (-1: none yet), else InvalidParameter naming them."""
    return _whole(offset, "Sequence", -1, -1, 2**63 - 1), _whole(offset, "Timestamp", -1, -1, 2**63 - 1)


def _project(store: Store, req: _Request, name: str) -> tuple[int, Any]:
    if req.method == "POST":
        store.create_project(name, str(req.json().get("Comment", "")))
        return 201, None
    if req.method == "GET":
        p = store.project(name)
        return 200, {"Comment": p.comment, "CreateTime": p.create_time, "LastModifyTime": p.modify_time}
    if req.method == "PUT":
        store.update_project(name, str(req.json().get("Comment", "")))
        return 200, None
    store.delete_project(name)
    return 200, None


def _topic(store: Store, req: _Request, project: str, name: str) -> tuple[int, Any]:
    if req.method == "POST":
        body = req.json()
        action = body.get("Action")
        if action == "AppendField":
            store.append_field(project, name, str(body.get("FieldName")), str(body.get("FieldType")))
            return 200, None
        if action:
            raise _unsupported(str(action), req)
        schema = body.get("RecordSchema")
        if isinstance(schema, str):
            try:
                schema = orjson.loads(schema)
            except orjson.JSONDecodeError:
                raise DataHubError(400, "InvalidSchema", "RecordSchema is not valid JSON") from None
        fields = schema.get("fields") if isinstance(schema, dict) else None
        store.create_topic(
            project,
            name,
            str(body.get("RecordType", "")),
            fields,
            body.get("ShardCount"),  # type: ignore[arg-type]
            _whole(body, "Lifecycle", 7, 1, MAX_LIFECYCLE_DAYS),
            str(body.get("Comment", "")),
        )
        return 201, None
    if req.method == "GET":
        meta = store.topic(project, name).meta()
        if meta["RecordSchema"] is not None:
            meta["RecordSchema"] = orjson.dumps({"fields": meta["RecordSchema"]}).decode()
        else:
            del meta["RecordSchema"]
        return 200, meta
    if req.method == "PUT":
        body = req.json()
        store.update_topic(
            project, name, _whole(body, "Lifecycle", 7, 1, MAX_LIFECYCLE_DAYS), str(body.get("Comment", ""))
        )
        return 200, None
    store.delete_topic(project, name)
    return 200, None


def _shards(emulator: DataHubEmulator, req: _Request, project: str, topic_name: str) -> tuple[int, Any]:
    topic = emulator.store.topic(project, topic_name)
    if req.method == "GET":
        return 200, {
            "Shards": [_shard_info(topic, i) for i in range(topic.shard_count)],
            "Protocol": "http1.1",
            "Interval": 500,
        }
    action = req.action()
    if req.method == "POST" and action == "pub":
        return _put(emulator, req, topic, None)
    raise _unsupported(action, req)


def _shard_info(topic: Topic, index: int) -> dict[str, Any]:
    width = HASH_SPACE // topic.shard_count
    begin = index * width
    end = HASH_SPACE if index == topic.shard_count - 1 else (index + 1) * width
    return {
        "ShardId": str(index),
        "State": "ACTIVE",
        "ClosedTime": "",
        "BeginHashKey": f"{begin:032X}",
        "EndHashKey": f"{end:032X}"[-32:] if end < HASH_SPACE else "F" * 32,
        "ParentShardIds": [],
        "LeftShardId": str(index - 1) if index else "4294967295",
        "RightShardId": str(index + 1) if index + 1 < topic.shard_count else "4294967295",
    }


def _shard(emulator: DataHubEmulator, req: _Request, project: str, topic_name: str, shard_id: str) -> tuple[int, Any]:
    topic = emulator.store.topic(project, topic_name)
    shard = topic.shard(shard_id)
    action = req.action()
    if req.method != "POST":
        raise _bad_method(req)
    if action == "cursor":
        return 200, _cursor(emulator.store, topic, shard, req.json())
    if action == "sub":
        return _get(emulator, req, topic, shard)
    if action == "pub":
        return _put(emulator, req, topic, shard)
    raise _unsupported(action, req)


# ---- records -------------------------------------------------------------------------------


def _route_record(topic: Topic, shard_id: str | None, hash_key: str | None, partition_key: str | None) -> Shard:
    if shard_id:
        return topic.shard(shard_id)
    if hash_key:
        try:
            point = int(hash_key, 16)
        except ValueError:
            raise invalid(f"HashKey {hash_key!r} is not hexadecimal") from None
    elif partition_key:
        point = int.from_bytes(hashlib.md5(partition_key.encode()).digest(), "big")
    else:
        point = random.getrandbits(128)
    return topic.shards[min(point * topic.shard_count // HASH_SPACE, topic.shard_count - 1)]


def _put(emulator: DataHubEmulator, req: _Request, topic: Topic, fixed_shard: Shard | None) -> tuple[int, Any]:
    faults = emulator.faults
    incoming: list[tuple[Shard, StoredRecord]] = []
    failures: list[tuple[int, str, str]] = []
    now_ms = int(time.time() * 1000)
    blob = topic.record_type == "BLOB"
    if req.pb:
        message = PutRecordsRequest()
        try:
            message.ParseFromString(req.pb_message())
        except Exception as exc:  # cprotobuf raises plain exceptions on malformed input
            raise invalid(f"malformed protobuf PutRecordsRequest: {exc}") from None
        entries: list[tuple[Any, Any, Any, Any, Any]] = [
            (
                e.shard_id,
                e.hash_key,
                e.partition_key,
                [d.__dict__.get("value") for d in e.data.data] if e.data else [],
                {a.key: a.value for a in e.attributes.attributes} if e.attributes else None,
            )
            for e in message.records
        ]
    else:
        records = req.json().get("Records")
        if not isinstance(records, list):
            raise invalid("Records must be a list")
        entries = []
        for r in records:
            if not isinstance(r, dict):
                raise DataHubError(400, "MalformedRecord", "each record must be a JSON object")
            entries.append(
                (
                    r.get("ShardId"),
                    r.get("HashKey"),
                    r.get("PartitionKey"),
                    r.get("Data"),
                    r.get("Attributes"),
                )
            )
    if not entries:
        raise invalid("no records to put")
    if faults.fail_next_puts > 0 or faults.rng.random() < faults.put_request_failure_rate:
        faults.fail_next_puts = max(faults.fail_next_puts - 1, 0)
        emulator.stats.puts.append(PutLogEntry(time.time(), [], len(entries), len(entries), True))
        raise DataHubError(500, "InternalServerError", "injected fault: the whole put request failed")
    for index, (shard_id, hash_key, partition_key, data, attributes) in enumerate(entries):
        try:
            _check_record_keys(shard_id, hash_key, partition_key, attributes)
            shard = fixed_shard or _route_record(topic, shard_id, hash_key, partition_key)
            values = _decode_values(data, blob, req.pb, topic)
        except DataHubError as exc:
            failures.append((index, exc.code, exc.message))
            continue
        if faults.reject_record(values):
            failures.append((index, "LimitExceeded", "injected fault: record rejected, retry it"))
            continue
        incoming.append((shard, StoredRecord(now_ms, values, attributes or None)))
    by_shard: dict[str, list[StoredRecord]] = {}
    shards: dict[str, Shard] = {}
    for shard, record in incoming:
        by_shard.setdefault(shard.shard_id, []).append(record)
        shards[shard.shard_id] = shard
    for shard_id, records in by_shard.items():
        emulator.store.append(shards[shard_id], records)
    emulator.stats.records_stored += len(incoming)
    emulator.stats.puts.append(PutLogEntry(time.time(), sorted(by_shard), len(entries), len(failures), False))
    if fixed_shard is not None:
        if failures:
            raise DataHubError(400, failures[0][1], failures[0][2])
        return 200, None
    if req.pb:
        response = {
            "failed_count": len(failures),
            "failed_records": [{"index": i, "error_code": c, "error_message": m} for i, c, m in failures],
        }
        return 200, _pb_frame(encode_data(PutRecordsResponse, response))
    return 200, {
        "FailedRecordCount": len(failures),
        "FailedRecords": [{"Index": i, "ErrorCode": c, "ErrorMessage": m} for i, c, m in failures],
    }


def _check_record_keys(shard_id: Any, hash_key: Any, partition_key: Any, attributes: Any) -> None:
    """A record's routing keys are texts (or absent), its attributes an object of texts; else MalformedRecord."""
    for name, value in (("ShardId", shard_id), ("HashKey", hash_key), ("PartitionKey", partition_key)):
        if value is not None and not isinstance(value, str):
            raise DataHubError(400, "MalformedRecord", f"record {name} must be text, not {value!r:.40}")
    if attributes is not None and not (
        isinstance(attributes, dict) and all(isinstance(v, str) for v in attributes.values())
    ):
        raise DataHubError(
            400, "MalformedRecord", f"record Attributes must be an object of texts, not {attributes!r:.40}"
        )


def _decode_values(data: Any, blob: bool, pb: bool, topic: Topic) -> list[str | None] | bytes:
    if blob:
        if pb:
            if not data or data[0] is None:
                raise DataHubError(400, "MalformedRecord", "BLOB record without data")
            return bytes(data[0])
        if not isinstance(data, str):
            raise DataHubError(400, "MalformedRecord", "BLOB record Data must be a base64 string")
        try:
            return base64.b64decode(data, validate=True)
        except ValueError:
            raise DataHubError(400, "MalformedRecord", "BLOB record Data is not valid base64") from None
    if not isinstance(data, list):
        raise DataHubError(400, "MalformedRecord", "TUPLE record Data must be a list of field values")
    try:
        values = [None if v is None else (v.decode("utf-8") if isinstance(v, bytes) else str(v)) for v in data]
    except UnicodeDecodeError:
        raise DataHubError(400, "MalformedRecord", "TUPLE field value is not UTF-8") from None
    assert topic.schema is not None
    problem = validate_values(values, len(topic.schema), topic.checks)
    if problem:
        raise DataHubError(400, "MalformedRecord", problem)
    return values


def _parse_cursor(shard: Shard, cursor: Any) -> int:
    if not isinstance(cursor, str) or len(cursor) != 32:
        raise DataHubError(400, "InvalidCursor", "the cursor is malformed")
    try:
        sequence = int(cursor[:16], 16)
    except ValueError:
        raise DataHubError(400, "InvalidCursor", "the cursor is malformed") from None
    if cursor_text(shard, sequence) != cursor:
        raise DataHubError(400, "InvalidCursor", "the cursor does not belong to this shard")
    if sequence > shard.end:
        raise DataHubError(400, "InvalidCursor", "the cursor points past the end of the shard")
    if sequence < shard.expired:
        raise DataHubError(400, "InvalidCursor", f"the cursor's record has expired (oldest: {shard.expired})")
    return sequence


def _cursor(store: Store, topic: Topic, shard: Shard, body: dict[str, Any]) -> dict[str, Any]:
    kind = body.get("Type")
    if kind == "OLDEST":
        sequence = shard.expired
    elif kind == "LATEST":
        sequence = max(shard.end - 1, 0)
    elif kind == "SYSTEM_TIME":
        at = body.get("SystemTime")
        if not isinstance(at, int) or at < 0:
            raise invalid("SystemTime must be a non-negative integer (ms)")
        if at > int(time.time() * 1000) + 1000:
            raise DataHubError(400, "SeekOutOfRange", f"SystemTime {at} is in the future")
        sequence = store.first_at_or_after(shard, at)
    elif kind == "SEQUENCE":
        requested = body.get("Sequence")
        if not isinstance(requested, int) or requested < 0:
            raise invalid("Sequence must be a non-negative integer")
        sequence = requested
        if sequence > shard.end:
            raise DataHubError(400, "SeekOutOfRange", f"sequence {sequence} is past the end ({shard.end})")
        if sequence < shard.expired:
            raise DataHubError(400, "SeekOutOfRange", f"sequence {sequence} has expired (oldest: {shard.expired})")
    else:
        raise invalid(f"cursor Type must be OLDEST, LATEST, SYSTEM_TIME or SEQUENCE, not {kind!r}")
    record_time = shard.system_times[sequence] if sequence < shard.end else int(time.time() * 1000)
    return {"Cursor": cursor_text(shard, sequence), "RecordTime": record_time, "Sequence": sequence}


def _get(emulator: DataHubEmulator, req: _Request, topic: Topic, shard: Shard) -> tuple[int, Any]:
    if req.pb:
        message = GetRecordsRequest()
        try:
            message.ParseFromString(req.pb_message())
        except Exception as exc:
            raise invalid(f"malformed protobuf GetRecordsRequest: {exc}") from None
        cursor, limit = message.cursor, message.limit
    else:
        body = req.json()
        cursor, limit = body.get("Cursor"), body.get("Limit", 1)
    if not isinstance(limit, int) or limit < 1:
        raise invalid("Limit must be a positive integer")
    start = _parse_cursor(shard, cursor)
    blob = topic.record_type == "BLOB"
    sequences: list[int] = []
    size = 0
    with emulator.store.lock:
        if start < shard.expired:  # expired since the cursor was checked
            raise DataHubError(400, "InvalidCursor", f"the cursor's record has expired (oldest: {shard.expired})")
        end = min(start + min(limit, MAX_GET_LIMIT), shard.end)
        for sequence in range(start, end):
            size += len(shard.lines[sequence])
            sequences.append(sequence)
            if size >= MAX_RESPONSE_BYTES:
                break
        fragments = shard.json_records[start : start + len(sequences)] if not req.pb else []
        stored = [shard.record(sequence, blob) for sequence in sequences] if req.pb else []
    emulator.stats.records_read += len(sequences)
    next_cursor = cursor_text(shard, start + len(sequences))
    if req.pb:
        response = {
            "next_cursor": next_cursor,
            "record_count": len(sequences),
            "start_sequence": start,
            "records": [
                {
                    "sequence": seq,
                    "system_time": r.system_time,
                    "cursor": cursor_text(shard, seq),
                    "next_cursor": cursor_text(shard, seq + 1),
                    "data": {"data": _pb_values(r.data)},
                    **(
                        {"attributes": {"attributes": [{"key": k, "value": v} for k, v in r.attributes.items()]}}
                        if r.attributes
                        else {}
                    ),
                }
                for seq, r in zip(sequences, stored, strict=True)
            ],
        }
        return 200, _pb_frame(encode_data(GetRecordsResponse, response))
    head = orjson.dumps({"NextCursor": next_cursor, "RecordCount": len(sequences), "StartSeq": start})
    return 200, orjson.Fragment(head[:-1] + b',"Records":[' + b",".join(fragments) + b"]}")


def _pb_values(data: list[str | None] | bytes) -> list[dict[str, bytes]]:
    if isinstance(data, bytes):
        return [{"value": data}]
    return [{} if v is None else {"value": v.encode("utf-8")} for v in data]


# ---- subscriptions -------------------------------------------------------------------------


def _subscription_json(sub: Any) -> dict[str, Any]:
    return {
        "SubId": sub.sub_id,
        "TopicName": sub.topic,
        "Comment": sub.comment,
        "CreateTime": sub.create_time,
        "LastModifyTime": sub.modify_time,
        "IsOwner": True,
        "State": sub.state,
        "Type": 0,
    }


def _subscriptions(store: Store, req: _Request, project: str, topic: str) -> tuple[int, Any]:
    body = req.json()
    action = body.get("Action")
    if req.method == "POST" and action == "create":
        return 201, {"SubId": store.create_subscription(project, topic, str(body.get("Comment", "")))}
    if req.method == "POST" and action == "list":
        store.topic(project, topic)
        subs = [s for s in store.project(project).subscriptions.values() if s.topic == topic]
        search = body.get("Search")
        if search is not None and not isinstance(search, str):
            raise invalid(f"Search must be text, not {search!r:.40}")
        if search:
            subs = [s for s in subs if search in s.comment or search in s.sub_id]
        page, size = _whole(body, "PageIndex", 1, 1, 10**6), _whole(body, "PageSize", 10, 1, 10**4)
        chosen = subs[(page - 1) * size : page * size]
        return 200, {"TotalCount": len(subs), "Subscriptions": [_subscription_json(s) for s in chosen]}
    raise _unsupported(str(action), req)


def _subscription(store: Store, req: _Request, project: str, topic: str, sub_id: str) -> tuple[int, Any]:
    sub = store.subscription(project, topic, sub_id)
    if req.method == "GET":
        return 200, _subscription_json(sub)
    if req.method == "DELETE":
        store.delete_subscription(project, topic, sub_id)
        return 200, None
    if req.method == "PUT":
        body = req.json()
        with store.lock:
            if "State" in body:
                if body["State"] not in (0, 1):
                    raise invalid("State must be 0 (INACTIVE) or 1 (ACTIVE)")
                sub.state = body["State"]
            if "Comment" in body:
                sub.comment = str(body["Comment"])
            sub.modify_time = int(time.time())
            store.save()
        return 200, None
    raise _unsupported(str(req.json().get("Action")), req)


def _offsets(store: Store, req: _Request, project: str, topic_name: str, sub_id: str) -> tuple[int, Any]:
    sub = store.subscription(project, topic_name, sub_id)
    topic = store.topic(project, topic_name)
    body = req.json()
    action = body.get("Action")
    with store.lock:
        if req.method == "POST" and action in ("open", "get"):
            shard_ids = body.get("ShardIds") or [s.shard_id for s in topic.shards]
            if not isinstance(shard_ids, list):
                raise invalid("ShardIds must be a list")
            result = {}
            for shard_id in shard_ids:
                topic.shard(str(shard_id))
                offset = sub.offsets.setdefault(str(shard_id), Offset())
                if action == "open":
                    offset.session_id = store.new_session()
                result[str(shard_id)] = {
                    "Sequence": offset.sequence,
                    "Timestamp": offset.timestamp,
                    "Version": offset.version,
                    "SessionId": offset.session_id,
                    "BatchIndex": 0,
                }
            if action == "open":
                store.save()
            return 200, {"Offsets": result}
        if req.method == "PUT" and action in ("commit", "reset"):
            offsets = body.get("Offsets")
            if not isinstance(offsets, dict) or not offsets:
                raise invalid("Offsets must be a non-empty object keyed by shard id")
            if action == "commit" and sub.state != 1:
                raise DataHubError(400, "SubscriptionOffline", f"subscription {sub_id} is inactive")
            for shard_id, value in offsets.items():
                topic.shard(shard_id)
                if not isinstance(value, dict):
                    raise invalid(f"offset of shard {shard_id} must be an object")
                current = sub.offsets.setdefault(shard_id, Offset())
                if action == "commit":
                    if value.get("Version", 0) != current.version:
                        raise DataHubError(400, "OffsetReseted", f"offset of shard {shard_id} was reset; open it again")
                    if current.session_id is None or str(value.get("SessionId")) != str(current.session_id):
                        raise DataHubError(
                            400,
                            "OffsetSessionChanged",
                            f"offset session of shard {shard_id} changed; open it again",
                        )
                current.sequence, current.timestamp = _position(value)
                if action == "reset":
                    current.version += 1
                    current.session_id = None
            store.save()
            return 200, None
    raise _unsupported(str(action), req)


# ---- admin ---------------------------------------------------------------------------------


def _admin_json(body: bytes) -> Any:
    try:
        return orjson.loads(body or b"{}")
    except orjson.JSONDecodeError as exc:
        raise invalid(f"the request body is not JSON: {exc}") from None


def _admin(emulator: DataHubEmulator, method: str, path: str, body: bytes) -> Any:
    if path == "/healthz":
        return {"status": "ok"}
    if path == "/_admin/faults":
        if method == "POST":
            emulator.faults.update(_admin_json(body))
        return emulator.faults.public()
    if path == "/_admin/outage" and method == "POST":
        request = _admin_json(body)
        seconds = request.get("seconds", 1) if isinstance(request, dict) else None
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not 0 < seconds <= MAX_OUTAGE_S:
            raise invalid(f"outage 'seconds' must be a number above 0 and at most {MAX_OUTAGE_S}")
        threading.Timer(0.05, emulator.refuse_connections, args=(seconds,)).start()
        return {"refusing_for": seconds}
    if path == "/_admin/stats":
        return {
            "requests": emulator.stats.requests,
            "records_stored": emulator.stats.records_stored,
            "records_read": emulator.stats.records_read,
            "puts": [asdict(p) for p in emulator.stats.puts],
        }
    raise DataHubError(404, "InvalidUriSpec", f"unknown admin resource {path!r}")


def _pb_frame(payload: bytes) -> bytes:
    return PB_MAGIC + struct.pack(">I", _crc32c(payload)) + struct.pack(">I", len(payload)) + payload


def _crc32c(data: bytes) -> int:
    return int(_CRC32C(data)) & 0xFFFFFFFF
