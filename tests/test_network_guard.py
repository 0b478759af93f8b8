"""The suite's network guard itself: a connection or lookup off this machine fails the test."""

from __future__ import annotations

import socket

import pytest

from conftest import NetworkAttempt


def test_remote_connect_and_lookup_are_refused(block_network: list[str]) -> None:
    with pytest.raises(NetworkAttempt), socket.socket() as s:
        s.connect(("203.0.113.1", 443))
    with pytest.raises(NetworkAttempt):
        socket.getaddrinfo("huggingface.co", 443)
    assert len(block_network) == 2
    block_network.clear()  # this test expected them; any other test would now fail


def test_loopback_is_allowed() -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    with server, socket.create_connection(server.getsockname(), timeout=2):
        pass
