"""``[limits] max_connections``: a connection beyond the limit is answered 503 (JSON error, Retry-After)
and closed, without reaching the application. Request-level limits live in ``middleware.py``."""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from omendb.server.errors import error_body

REFUSED_GRACE_SECONDS = 2.0


def _refusal(limit: int) -> bytes:
    body = error_body("too_many_connections", f"the server has [limits] max_connections = {limit} open "
                                              "connections; retry after the Retry-After delay")
    head = (f"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nretry-after: 1\r\nconnection: close\r\n\r\n")
    return head.encode() + body


def limited_protocol(max_connections: int, on_refuse: Any = None) -> type[asyncio.Protocol]:
    refusal = _refusal(max_connections)

    class LimitedHttpToolsProtocol(HttpToolsProtocol):
        _refused = False

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            if len(self.connections) >= max_connections:
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
