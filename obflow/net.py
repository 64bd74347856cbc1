"""Small networking helpers shared by the local tools, tests and benchmarks."""

from __future__ import annotations

import contextlib
import random
import socket
import time
from pathlib import Path

EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
LOWEST_PORT = 10000
_handed_out: set[int] = set()


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = (int(part) for part in EPHEMERAL_RANGE_FILE.read_text().split())
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default
    return low, high


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now, for a process started later.

    Chosen below the kernel's ephemeral range: a port from that range (what binding port 0 gives)
    can be taken by any socket bound to port 0 in the meantime — PyFlink's Py4J gateway did exactly
    that to the job's health port. A port handed out once is not handed out again by this process.
    """
    low, _ = _ephemeral_range()
    candidates = [port for port in range(LOWEST_PORT, low) if port not in _handed_out]
    for port in random.sample(candidates, min(len(candidates), 200)):
        if _bindable(port):
            _handed_out.add(port)
            return port
    with socket.socket() as s:  # the range below is exhausted or too small: any port will have to do
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


LINGER_SECONDS = 1.0
LINGER_BYTES = 4 * 1024**2


def lingering_close(connection: socket.socket) -> None:
    """Close a server's ``connection`` after its answer without losing that answer: end the sending side,
    then read and drop what the client still sends (at most :data:`LINGER_BYTES`, for at most
    :data:`LINGER_SECONDS`). Closed with unread input, the kernel resets the connection, and the client
    may lose the answer sent just before (a 414 to an oversized request line, a 400 to a bad length)."""
    with contextlib.suppress(OSError):
        connection.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + LINGER_SECONDS
        drained = 0
        while drained < LINGER_BYTES and (left := deadline - time.monotonic()) > 0:
            connection.settimeout(left)
            chunk = connection.recv(65536)
            if not chunk:
                break
            drained += len(chunk)
    connection.close()
