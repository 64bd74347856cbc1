"""The health and metrics endpoints (obflow.health) against hostile clients, over real sockets: any
bytes get an HTTP answer or a closed connection within seconds and the server keeps serving; a client
that sends nothing is dropped; connections past the cap are answered 503; a failing readiness check
is an answer, not a traceback."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import obflow.health
from obflow.health import HealthServer

ANSWER_WITHIN = 5.0


@pytest.fixture
def server() -> Iterator[HealthServer]:
    health = HealthServer("test", 0, lambda: (True, "ready")).start()
    yield health
    health.stop()


def exchange(port: int, request: bytes) -> bytes:
    """Send ``request``, end the sending side, and read the answer until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=ANSWER_WITHIN) as conn:
        conn.sendall(request)
        conn.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
        return answer


def still_serving(port: int) -> bool:
    return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=ANSWER_WITHIN).text == "ok\n"


request_line = st.one_of(
    st.binary(max_size=300),
    st.builds(
        lambda method, path, version: f"{method} {path} {version}".encode("utf-8", "surrogatepass"),
        st.sampled_from(["GET", "POST", "HEAD", "DELETE", "G\x00T", ""]) | st.text(max_size=10),
        st.sampled_from(["/healthz", "/readyz", "/metrics", "/healthz?x=1", "*", "//", "/%00"]) | st.text(max_size=50),
        st.sampled_from(["HTTP/1.0", "HTTP/1.1", "HTTP/2.0", "HTTP/9", "HTTP/1.1.1"]) | st.text(max_size=10),
    ),
)
header = st.binary(max_size=100) | st.builds(
    lambda name, value: f"{name}: {value}".encode("utf-8", "surrogatepass"),
    st.sampled_from(["Content-Length", "Host", "Expect", "Connection"]) | st.text(max_size=20),
    st.text(max_size=40),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(line=request_line, headers=st.lists(header, max_size=5))
def test_any_request_gets_an_http_answer_or_a_close_and_the_server_keeps_serving(
    server: HealthServer, line: bytes, headers: list[bytes]
) -> None:
    started = time.monotonic()
    answer = exchange(server.port, b"\r\n".join([line, *headers]) + b"\r\n\r\n")
    assert time.monotonic() - started < ANSWER_WITHIN
    if answer:  # an empty request line is closed without an answer, as the standard library does
        assert answer.startswith((b"HTTP/1.0 ", b"HTTP/1.1 ")), answer[:100]
        assert int(answer.split(b" ", 2)[1]) in {200, 400, 404, 405, 414, 431, 501, 505}, answer[:100]
        assert b"Traceback" not in answer
    assert still_serving(server.port)


def test_an_oversized_request_line_is_refused_with_414(server: HealthServer) -> None:
    answer = exchange(server.port, b"GET /" + b"a" * 1024**2 + b" HTTP/1.1\r\n\r\n")
    assert answer.startswith(b"HTTP/1.0 414 "), answer[:100]


def test_a_query_string_is_ignored_and_readiness_explains_itself(server: HealthServer) -> None:
    answer = httpx.get(f"http://127.0.0.1:{server.port}/readyz?verbose=1", timeout=ANSWER_WITHIN)
    assert (answer.status_code, answer.text) == (200, "ready\n")
    assert httpx.get(f"http://127.0.0.1:{server.port}/nothing", timeout=ANSWER_WITHIN).status_code == 404


def test_a_failing_readiness_check_answers_503_with_the_error() -> None:
    def broken() -> tuple[bool, str]:
        raise RuntimeError("the database client is gone")

    health = HealthServer("test", 0, broken).start()
    try:
        answer = httpx.get(f"http://127.0.0.1:{health.port}/readyz", timeout=ANSWER_WITHIN)
        assert answer.status_code == 503
        assert answer.text == "the readiness check failed: RuntimeError('the database client is gone')\n"
        assert still_serving(health.port)
    finally:
        health.stop()


def test_a_client_that_sends_nothing_is_dropped_after_the_request_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(obflow.health, "REQUEST_TIMEOUT", 0.5)
    health = HealthServer("test", 0, lambda: (True, "ready")).start()
    try:
        with socket.create_connection(("127.0.0.1", health.port), timeout=ANSWER_WITHIN) as conn:
            conn.sendall(b"GET /healthz HTTP/1.1\r\n")  # and never the end of the headers
            started = time.monotonic()
            assert conn.recv(100) == b""  # closed by the server, unanswered
            assert time.monotonic() - started < 3
    finally:
        health.stop()


def test_connections_past_the_cap_are_answered_busy_and_served_again_once_freed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(obflow.health, "MAX_CONNECTIONS", 4)
    health = HealthServer("test", 0, lambda: (True, "ready")).start()
    idle = [socket.create_connection(("127.0.0.1", health.port), timeout=ANSWER_WITHIN) for _ in range(4)]
    try:
        time.sleep(0.5)  # each accepted and holding a slot, waiting for a request
        busy = exchange(health.port, b"GET /healthz HTTP/1.1\r\n\r\n")
        assert busy.startswith(b"HTTP/1.0 503 ") and busy.endswith(b"busy\n"), busy
    finally:
        for conn in idle:
            conn.close()
    try:
        deadline = time.monotonic() + ANSWER_WITHIN
        while not exchange(health.port, b"GET /healthz HTTP/1.0\r\n\r\n").endswith(b"ok\n"):
            assert time.monotonic() < deadline, "the freed slots were not served again"
            time.sleep(0.1)
    finally:
        health.stop()
