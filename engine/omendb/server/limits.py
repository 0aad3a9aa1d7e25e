"""``[limits] max_connections``: the number of open connections on the API port never exceeds it.

A new connection beyond the limit first evicts the oldest idle connection: one that has not completed a
request head since its accept or its last response (a client that connected and sent nothing, one that
dribbles its headers, a keep-alive connection between requests). Only when every connection has a request
in progress is the new one answered 503 (JSON error, Retry-After) and closed, without reaching the
application. So idle and slow clients cannot keep working ones out; they are also timed out (timeouts.py).
Request-level limits live in ``middleware.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from omendb.server.errors import error_body
from omendb.server.fastpath import PointReads
from omendb.server.timeouts import TimedProtocol, TimeoutPolicy, Timeouts

REFUSED_GRACE_SECONDS = 2.0
EVICTED = "evicted"


def _refusal(limit: int) -> bytes:
    body = error_body("too_many_connections", f"the server has [limits] max_connections = {limit} open "
                                              "connections, each with a request in progress; retry after the "
                                              "Retry-After delay")
    head = (f"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nretry-after: 1\r\nconnection: close\r\n\r\n")
    return head.encode() + body


def limited_protocol(max_connections: int, timeouts: Timeouts, on_refuse: Callable[[], None] | None = None,
                     on_close: Callable[[str], None] | None = None,
                     point_reads: PointReads | None = None) -> type[asyncio.Protocol]:
    """The API's protocol class: timeouts, eviction of idle connections, refusal beyond the limit.
    ``on_refuse()`` counts refused connections, ``on_close(reason)`` connections the server closed;
    ``point_reads`` answers single-key reads on the connection (fastpath.py)."""
    refusal = _refusal(max_connections)
    fast = point_reads
    # Idle connections of this server, oldest first (dicts keep insertion order; re-inserting moves to the end).
    idle: dict[TimedProtocol, None] = {}

    class LimitedHttpToolsProtocol(TimedProtocol):
        policy = TimeoutPolicy(timeouts, on_close)
        point_reads = fast
        _refused = False

        def _became_idle(self) -> None:
            idle.pop(self, None)
            idle[self] = None

        def _became_busy(self) -> None:
            idle.pop(self, None)

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            if len(self.connections) >= max_connections:
                if idle:
                    victim = next(iter(idle))
                    del idle[victim]
                    self.connections.discard(victim)  # its place is free at once
                    victim.expire(EVICTED)
                    victim.transport.abort()  # and its socket: no TLS close_notify exchange to wait for
                else:
                    # Not registered with the server: answered and closed as soon as the request arrives
                    # (answering before reading it would make some clients see a reset instead of the 503).
                    self._refused = True
                    self.transport = transport
                    if on_refuse is not None:
                        on_refuse()
                    # A client that never sends a request must not hold the socket: answer it anyway, soon.
                    asyncio.get_running_loop().call_later(REFUSED_GRACE_SECONDS, self.data_received, b"")
                    return
            super().connection_made(transport)

        def data_received(self, data: bytes) -> None:
            if self._refused:
                if not self.transport.is_closing():
                    self.transport.write(refusal)
                    self.transport.close()
                return
            super().data_received(data)

        def connection_lost(self, exc: Exception | None) -> None:
            if self._refused:
                return
            super().connection_lost(exc)

        def eof_received(self) -> None:
            if self._refused:
                return
            super().eof_received()

    return LimitedHttpToolsProtocol
