"""One API port for HTTPS and for plain-HTTP probes.

The operations guide turns TLS on for port 3000 and then checks the server with
``curl -f http://localhost:3000/health``. A TLS-only listener answers that with nothing at all (curl:
"Empty reply from server"), so the guide's health_check.sh fails against the guide's own configuration.

With ``[security] tls_enabled = true`` the listener therefore looks at the first byte a client sends:
0x16 (a TLS handshake record) starts TLS with the reloading certificate;
anything else is plain HTTP. Plain HTTP is answered only for ``/health`` and ``/ready`` (no
authentication and no data: the same answers a kubelet probe gets); every other plain request gets
400 ``https_required`` naming the https:// URL to use, so no credentials or records travel in clear
text by accident. ``[security] plain_http_probes = false`` refuses plain HTTP entirely.

The TLS layer is the standard library's ``asyncio.sslproto.SSLProtocol``, built by hand and given the
bytes already read (the loop's ``start_tls`` would drop them, and peeking at the socket races with
uvloop, which starts reading before a protocol can pause it). It is the same code uvloop's own TLS was
ported from, running on uvloop's transport.
"""

from __future__ import annotations

import asyncio
import ssl
from asyncio import sslproto
from collections.abc import Callable
from typing import Any, cast

from starlette.types import ASGIApp, Receive, Scope, Send

from omendb.server.errors import error_body

TLS_HANDSHAKE = 0x16
TLS_SHUTDOWN_SECONDS = 5.0  # how long a closing TLS connection waits for the peer's close_notify
PLAIN_PATHS = frozenset({"/health", "/ready"})


def sniffing_protocol(inner: type[asyncio.Protocol], tls: Callable[[], ssl.SSLContext], first_byte_timeout: float,
                      on_close: Callable[[str], None] | None = None) -> type[asyncio.Protocol]:
    """A uvicorn protocol class that hands each connection to ``inner``, over TLS or not by its first byte.

    A client that sends nothing within ``first_byte_timeout`` seconds is dropped (``on_close`` is told
    ``first_request_timeout``), and so is one whose TLS handshake takes longer than that: neither holds a
    socket for asyncio's default 60 s ([http] first_request_timeout_ms)."""

    class SniffingProtocol(asyncio.Protocol):
        def __init__(self, **kwargs: Any) -> None:
            self._kwargs = kwargs
            self._loop = kwargs.get("_loop") or asyncio.get_running_loop()
            self._transport: asyncio.Transport | None = None
            self._timeout: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self._transport = cast(asyncio.Transport, transport)  # uvloop's transports subclass nothing
            self._timeout = self._loop.call_later(first_byte_timeout, self._silent)

        def _silent(self) -> None:
            assert self._transport is not None
            self._transport.abort()
            if on_close is not None:
                on_close("first_request_timeout")

        def connection_lost(self, exc: Exception | None) -> None:
            if self._timeout is not None:
                self._timeout.cancel()

        def data_received(self, data: bytes) -> None:
            transport = self._transport
            assert transport is not None and self._timeout is not None
            self._timeout.cancel()
            protocol = inner(**self._kwargs)
            if data[0] != TLS_HANDSHAKE:
                transport.set_protocol(protocol)
                protocol.connection_made(transport)
                protocol.data_received(data)
                return
            # The event loop's start_tls() would lose the bytes already read (the ClientHello): build the
            # TLS layer by hand and give it those bytes first. The TLS layer calls the inner protocol's
            # connection_made once the handshake is done.
            waiter = self._loop.create_future()
            # A failed handshake (a client that does not trust us) is that client's problem, not a log line.
            waiter.add_done_callback(lambda f: f.cancelled() or f.exception())
            secure = sslproto.SSLProtocol(self._loop, protocol, tls(), waiter, server_side=True,
                                          ssl_handshake_timeout=first_byte_timeout,  # type: ignore[arg-type]  # a float works
                                          ssl_shutdown_timeout=TLS_SHUTDOWN_SECONDS)
            transport.set_protocol(secure)
            secure.connection_made(transport)
            view = memoryview(data)
            while view:
                buffer = secure.get_buffer(len(view))
                n = min(len(buffer), len(view))
                buffer[:n] = view[:n]
                secure.buffer_updated(n)
                view = view[n:]

        def eof_received(self) -> bool | None:
            return None  # closed before a byte was sent: let the transport close

    return SniffingProtocol


class PlainProbesOnly:
    """On a TLS port: plain-HTTP requests other than the probes get 400 with the https:// URL to use."""

    def __init__(self, app: ASGIApp, allow_probes: bool) -> None:
        self.app = app
        self.allow = PLAIN_PATHS if allow_probes else frozenset()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("scheme") != "http" or scope["path"] in self.allow:
            await self.app(scope, receive, send)
            return
        host = dict(scope["headers"]).get(b"host", b"").decode("latin-1") or "HOST:PORT"
        what = ("this port serves HTTPS ([security] tls_enabled = true); plain HTTP is answered only for "
                "/health and /ready") if self.allow else \
            "this port serves HTTPS only ([security] tls_enabled = true, plain_http_probes = false)"
        body = error_body("https_required", f"{what}: use https://{host}{scope['path']}")
        await send({"type": "http.response.start", "status": 400,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})
