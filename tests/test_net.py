"""Ports handed to processes started later must not be taken in the meantime."""

from __future__ import annotations

import socket

from obflow.net import _ephemeral_range, free_port


def test_free_port_is_below_the_ephemeral_range_so_no_port_0_bind_can_take_it() -> None:
    low, high = _ephemeral_range()
    ports = [free_port() for _ in range(20)]
    assert len(set(ports)) == len(ports), "a port was handed out twice"
    assert all(port < low for port in ports)
    bound_to_zero = []
    for _ in range(50):  # what Py4J, the Flink mini-cluster and every client socket do
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        bound_to_zero.append(s)
    try:
        assert all(low <= s.getsockname()[1] <= high for s in bound_to_zero)
        assert not {s.getsockname()[1] for s in bound_to_zero} & set(ports)
    finally:
        for s in bound_to_zero:
            s.close()
    with socket.socket() as s:
        s.bind(("127.0.0.1", ports[0]))  # and each is really free
