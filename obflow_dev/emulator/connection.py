"""HTTP and connection handling: the threaded server, one handler per connection (request line, body with its
length and compression, the answer), and clients that stop mid-request."""

from __future__ import annotations

import contextlib
import logging
import re
import socket
import struct
import sys
import threading
import time
import uuid
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import lz4.block
import orjson

from obflow.net import lingering_close
from obflow_dev.emulator.faults import admin
from obflow_dev.emulator.routes import dispatch
from obflow_dev.emulator.signing import check_authorization
from obflow_dev.emulator.store import (
    DataHubError,
    invalid,
)

if TYPE_CHECKING:
    from obflow_dev.emulator.server import DataHubEmulator

log = logging.getLogger("obflow.datahub.emulator")

IDLE_CONNECTION_TIMEOUT = 300.0
MAX_REQUEST_BYTES = 16 * 1024 * 1024  # DataHub takes at most 4 MB of records a put; JSON and base64 add to it
_BYTE_COUNT = re.compile(r"[0-9]{1,9}")


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], handler: type[Handler], emulator: DataHubEmulator) -> None:
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


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; with Nagle on, the body waits for the client's delayed
    # ACK (~40 ms per request).
    disable_nagle_algorithm = True
    # A client that stops sending mid-request (or never finishes a handshake) is dropped after this long;
    # well above any client's idle gap between requests on a kept-alive connection.
    timeout = IDLE_CONNECTION_TIMEOUT
    # http.server answers a line it cannot parse as HTTP/0.9, without a status line; DataHub speaks 1.x only
    default_request_version = "HTTP/1.0"
    server: Server

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
                self._send_json(200, admin(emulator, method, url.path, body), request_id)
                return
            emulator.stats.requests += 1
            if emulator.faults.latency_ms:
                time.sleep(emulator.faults.latency_ms / 1000)
            check_authorization(
                emulator.access_id,
                emulator.access_key,
                method,
                url.path,
                url.query,
                {name.lower(): value for name, value in self.headers.items()},
            )
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
