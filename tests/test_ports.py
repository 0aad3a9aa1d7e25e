"""tests.ports: the test servers' ports come from this worker's block, below the kernel's ephemeral range,
distinct within a call, and never one a socket is bound to."""

from __future__ import annotations

import socket

from tests import ports


def test_ports_are_this_workers_below_the_ephemeral_range_and_distinct():
    picked = ports.free_ports(5)
    assert len(set(picked)) == 5
    assert all(port in ports._block() for port in picked)
    assert max(ports._block()) < ports._ephemeral_start()


def test_a_port_a_server_listens_on_is_never_handed_out():
    # Listen on every port of the block it can but two that are free now: none of the held ports comes back.
    # (A port that was busy while this ran may be free again by the call, so it can be handed out too.)
    listeners: list[socket.socket] = []
    free: set[int] = set()
    try:
        for port in ports._block():
            listener = socket.socket()  # no SO_REUSEADDR, as tests.ports binds
            try:
                listener.bind((ports.HOST, port))
                listener.listen()
            except OSError:  # taken already (by a server of this worker, or its lingering connections)
                listener.close()
                continue
            if len(free) < 2:
                listener.close()
                free.add(port)
            else:
                listeners.append(listener)
        for _ in range(3):
            assert not set(ports.free_ports(2)) & {s.getsockname()[1] for s in listeners}
    finally:
        for s in listeners:
            s.close()
