"""The HTTP endpoints every long-running component serves: ``/healthz``, ``/readyz`` and ``/metrics``.

``/healthz`` answers while the process serves requests (liveness); ``/readyz`` answers 200 only when
the component's ``ready`` callable says so, with its one-line explanation as the body (readiness,
and what local supervision and Kubernetes probes wait for); ``/metrics`` is Prometheus text.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from obflow.log import log_event

log = logging.getLogger("obflow.health")

Readiness = Callable[[], tuple[bool, str]]
"""Returns (ready, explanation), e.g. ``(False, "database=down datahub=up")``."""


class HealthServer:
    def __init__(self, component: str, port: int, ready: Readiness) -> None:
        self.component = component
        self.requested_port = port
        self.ready = ready
        self.http: ThreadingHTTPServer | None = None

    def start(self) -> HealthServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                if self.path == "/healthz":
                    self._send(200, b"ok\n", "text/plain")
                elif self.path == "/readyz":
                    ready, explanation = server.ready()
                    self._send(200 if ready else 503, f"{explanation}\n".encode(), "text/plain")
                elif self.path == "/metrics":
                    self._send(200, generate_latest(), CONTENT_TYPE_LATEST)
                else:
                    self._send(404, b"not found\n", "text/plain")

            def _send(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.http = ThreadingHTTPServer(("0.0.0.0", self.requested_port), Handler)
        self.http.daemon_threads = True
        name = f"{self.component}-http"
        threading.Thread(target=self.http.serve_forever, args=(0.2,), name=name, daemon=True).start()
        log_event(log, f"{self.component}.http", f"health and metrics on port {self.port}", port=self.port)
        return self

    @property
    def port(self) -> int:
        assert self.http is not None, "start() first"
        return int(self.http.server_address[1])

    def stop(self) -> None:
        if self.http is not None:
            self.http.shutdown()
            self.http.server_close()
            self.http = None
