"""Clock-free checks of "fails at once": the code under test must not even try to reach the network.

An offline failure that first retries the hub shows up here as a recorded name lookup or connection
attempt, not as a slow test; how long the failure paths take is measured by benchmarks/fail_fast.py.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def no_network() -> Iterator[list]:
    """Refuse (and record) every host-name lookup and IP connection in this process while the block runs."""
    attempts: list = []
    real = {"getaddrinfo": socket.getaddrinfo, "connect": socket.socket.connect,
            "connect_ex": socket.socket.connect_ex}

    def lookup(host, port, *args, **kwargs):
        attempts.append((host, port))
        raise socket.gaierror(socket.EAI_NONAME, f"network use where none is allowed: {host}:{port}")

    def refused(connect):
        def guarded(sock, address):
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                attempts.append(address)
                raise ConnectionRefusedError(f"network use where none is allowed: {address}")
            return connect(sock, address)
        return guarded

    socket.getaddrinfo = lookup
    socket.socket.connect, socket.socket.connect_ex = refused(real["connect"]), refused(real["connect_ex"])
    try:
        yield attempts
    finally:
        socket.getaddrinfo = real["getaddrinfo"]
        socket.socket.connect, socket.socket.connect_ex = real["connect"], real["connect_ex"]
