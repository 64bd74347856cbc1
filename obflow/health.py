"""The HTTP endpoints every long-running component serves: ``/healthz``, ``/readyz`` and ``/metrics``.

``/healthz`` answers while the process serves requests (liveness); ``/readyz`` answers 200 only when
the component's ``ready`` callable says so, with its one-line explanation as the body (readiness,
and what local supervision and Kubernetes probes wait for); ``/metrics`` is Prometheus text.

Anything on the network can reach these ports, so what a client can cost is bounded: a request
must arrive within :data:`REQUEST_TIMEOUT` seconds, at most :data:`MAX_CONNECTIONS` are served at
once (one more is answered 503 and closed), and a malformed request gets the standard library's 4xx.
A ``ready`` callable that raises answers 503 with the error; nothing prints a traceback.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from obflow.log import log_event
from obflow.net import lingering_close

log = logging.getLogger("obflow.health")

Readiness = Callable[[], tuple[bool, str]]
"""Returns (ready, explanation), e.g. ``(False, "database=down datahub=up")``."""

REQUEST_TIMEOUT = 10.0
"""Seconds a client has to send its request (and between its bytes): a probe sends it at once."""
MAX_CONNECTIONS = 32
BUSY = b"HTTP/1.0 503 Service Unavailable\r\nContent-Length: 5\r\nConnection: close\r\n\r\nbusy\n"


class _BoundedServer(ThreadingHTTPServer):
    """At most ``MAX_CONNECTIONS`` threads; the errors of one connection logged, not printed."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], component: str) -> None:
        self.component = component
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.slots.acquire(blocking=False):
            with contextlib.suppress(OSError):
                request.sendall(BUSY)
            # lingering (so the client gets the answer) in a thread of its own: this is the accepting thread
            threading.Thread(target=lingering_close, args=(request,), daemon=True).start()
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def shutdown_request(self, request: Any) -> None:
        lingering_close(request)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("%s http: a connection from %s failed", self.component, client_address[0], exc_info=True)


class HealthServer:
    def __init__(self, component: str, port: int, ready: Readiness) -> None:
        self.component = component
        self.requested_port = port
        self.ready = ready
        self.http: ThreadingHTTPServer | None = None

    def start(self) -> HealthServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            timeout = REQUEST_TIMEOUT
            default_request_version = "HTTP/1.0"  # not 0.9: an error to a one-word request keeps its status line
            error_message_format = "%(code)d %(message)s\n"
            error_content_type = "text/plain"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                path = urlsplit(self.path).path
                if path == "/healthz":
                    self._send(200, b"ok\n", "text/plain")
                elif path == "/readyz":
                    ready, explanation = server.readiness()
                    self._send(200 if ready else 503, f"{explanation}\n".encode(), "text/plain")
                elif path == "/metrics":
                    self._send(200, generate_latest(), CONTENT_TYPE_LATEST)
                else:
                    self._send(404, b"not found\n", "text/plain")

            def _send(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.http = _BoundedServer(("0.0.0.0", self.requested_port), Handler, self.component)
        name = f"{self.component}-http"
        threading.Thread(target=self.http.serve_forever, args=(0.2,), name=name, daemon=True).start()
        log_event(log, f"{self.component}.http", f"health and metrics on port {self.port}", port=self.port)
        return self

    def readiness(self) -> tuple[bool, str]:
        try:
            return self.ready()
        except Exception as exc:  # a readiness check that fails is an answer too: not ready, and why
            return False, f"the readiness check failed: {exc!r}"

    @property
    def port(self) -> int:
        assert self.http is not None, "start() first"
        return int(self.http.server_address[1])

    def stop(self) -> None:
        if self.http is not None:
            self.http.shutdown()
            self.http.server_close()
            self.http = None
