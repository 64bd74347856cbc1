"""A DataHub-compatible HTTP endpoint for local runs, tests and benchmarks.

The unmodified ``pydatahub`` client works against it in the JSON and the PB protocol, with or
without LZ4 bodies. Requests are signed as on Alibaba Cloud (``Authorization: DATAHUB id:signature``)
and a wrong id or key gets DataHub's ``Unauthorized`` error. Unknown resources and malformed bodies
get DataHub's error codes. State lives in :class:`~obflow_dev.emulator.store.Store`.

Faults for tests are switched at start or at run time through ``/_admin/faults`` (see
:class:`Faults`); ``/_admin/stats`` reports what happened to every put.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time

from obflow_dev.emulator.connection import Handler, Server
from obflow_dev.emulator.faults import Faults, Stats
from obflow_dev.emulator.store import (
    Store,
)

log = logging.getLogger("obflow.datahub.emulator")


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
        self._server: Server | None = None
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
            self._server = Server((self.host, self._port), Handler, self)
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
