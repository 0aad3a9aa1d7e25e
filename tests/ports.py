"""Loopback ports for the servers the tests start.

A port picked by binding port 0 comes from the kernel's ephemeral range, which every outgoing connection
and every other pytest-xdist worker draws from too. Between the pick and the server's own bind, a server
of another worker can take the same port, and the test then talks to the wrong server: `make test-fast`
once saw a `/ready` of 200 from another worker's engine while its own was still importing. So the ports
come from below the ephemeral range, from a block of their own for each worker (the process outside xdist
has block 0), handed out in turn and each checked free by binding it."""

from __future__ import annotations

import itertools
import os
import socket
import threading
from pathlib import Path

HOST = "127.0.0.1"
FIRST = 20000
BLOCK = 400


def _ephemeral_start() -> int:
    return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])


def _block() -> range:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")  # gw0, gw1, ... under xdist
    index = int(worker[2:]) + 1 if worker.startswith("gw") else 0
    start = FIRST + index * BLOCK
    assert start + BLOCK <= _ephemeral_start(), (
        f"worker {worker}'s ports {start}-{start + BLOCK} reach the ephemeral range "
        f"(/proc/sys/net/ipv4/ip_local_port_range): run fewer workers")
    return range(start, start + BLOCK)


_turn = itertools.cycle(_block())
_lock = threading.Lock()


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports no socket is bound to on HOST. They are held open together while picked,
    so that one call never returns a port twice."""
    held: list[socket.socket] = []
    try:
        with _lock:
            for _ in range(BLOCK):
                if len(held) == count:
                    break
                s = socket.socket()
                try:
                    s.bind((HOST, next(_turn)))
                except OSError:  # a server of this worker still listens there, or its connections linger
                    s.close()
                    continue
                held.append(s)
        assert len(held) == count, f"fewer than {count} free ports in {_block()} on {HOST}"
        return [int(s.getsockname()[1]) for s in held]
    finally:
        for s in held:
            s.close()


def free_port() -> int:
    return free_ports(1)[0]
