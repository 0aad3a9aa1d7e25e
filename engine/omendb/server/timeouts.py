"""Connection timeouts on the API port: a client that sends nothing, or sends its request slowly, loses
its connection instead of holding it.

A connection is always in one phase, and each phase has its own bound:

- waiting for the first request: ``[http] first_request_timeout_ms`` from the accept (with TLS: from the
  end of the handshake, which itself is bounded by the same value, see lifecycle.py); closed silently;
- receiving a request head: ``header_timeout_ms`` from the head's first byte; answered 408, closed;
- receiving a request body: ``body_timeout_ms`` from the end of the head, for the whole body; answered
  408 (unless a response already went out), closed;
- the application at work: no timer here, ``[http] request_timeout_ms`` applies (middleware.py);
- idle between requests: ``idle_timeout_ms``; closed silently.

uvicorn has only the last one (``timeout_keep_alive``) and cancels it on any byte, so a client sending a
lone CRLF every few seconds would hold the connection forever; here the idle timer is cancelled only when
a request actually begins. A timed-out connection gives up its place in ``[limits] max_connections`` at
once, not when the close completes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from omendb.config import HttpSection
from omendb.server.direct import CYCLE
from omendb.server.errors import error_body
from omendb.server.fastpath import ANSWERED, PointReads
from omendb.server.middleware import SENT_STATUS

log = logging.getLogger("omendb.server")

# Phases of a connection (see the module docstring).
IDLE, HEAD, BODY, BUSY = range(4)
# Reasons a connection is closed by the server, as counted in omendb_http_connections_closed_total.
FIRST_REQUEST, HEADER, BODY_TIMEOUT, IDLE_TIMEOUT = ("first_request_timeout", "header_timeout",
                                                     "body_timeout", "idle_timeout")


@dataclass(frozen=True)
class Timeouts:
    """The four bounds, in seconds."""

    first_request: float
    header: float
    body: float
    idle: float

    @classmethod
    def from_config(cls, http: HttpSection) -> Timeouts:
        return cls(first_request=http.first_request_timeout_ms / 1000, header=http.header_timeout_ms / 1000,
                   body=http.body_timeout_ms / 1000, idle=http.idle_timeout_ms / 1000)


def _timeout_answer(code: str, message: str) -> bytes:
    body = error_body(code, message)
    head = (f"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n")
    return head.encode() + body


class TimeoutPolicy:
    """What a server's connections are held to: the bounds, the 408 answers, and ``on_close(reason)``,
    called for each connection the server closes (metrics)."""

    def __init__(self, timeouts: Timeouts, on_close: Callable[[str], None] | None = None) -> None:
        self.timeouts = timeouts
        self.on_close = on_close or (lambda _reason: None)
        self.answers = {
            HEADER: _timeout_answer("header_timeout", "the request head (request line and headers) did not "
                                    "arrive within [http] header_timeout_ms = "
                                    f"{round(timeouts.header * 1000)}; send the whole head at once"),
            BODY_TIMEOUT: _timeout_answer("body_timeout", "the request body did not arrive within [http] "
                                          f"body_timeout_ms = {round(timeouts.body * 1000)} of its head; "
                                          "send smaller bodies or raise the limit"),
        }


class TimedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a timer per phase; a subclass sets ``policy``, and ``point_reads``
    to answer single-key reads on the connection itself (fastpath.py)."""

    policy: ClassVar[TimeoutPolicy]
    point_reads: ClassVar[PointReads | None] = None
    basic_memo: tuple[bytes, Any, str, float] | None = None  # fastpath.PointReads._remember_basic
    _phase = IDLE
    _heads = 0  # request heads begun: tells a new head from the same one across data_received calls
    _timer: asyncio.TimerHandle | None = None
    _timer_reason = ""  # what _timer is for (a reason below), "" for uvicorn's keep-alive timer taken over
    _idle_from = 0.0  # loop time the connection last became idle after a response answered on it (_rest)

    # Hooks for the connection limit (limits.py): a connection is "idle" from its accept, or the end of a
    # response, until its next request head is complete; only idle connections may be evicted.
    def _became_idle(self) -> None:
        pass

    def _became_busy(self) -> None:
        pass

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.policy.timeouts.first_request, FIRST_REQUEST)
        self._became_idle()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel()
        self._became_busy()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        phase, heads = self._phase, self._heads
        super().data_received(data)  # the parser callbacks below move the phase
        if self._phase != phase or self._heads != heads:
            self._enter(self._phase)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._phase = HEAD
        self._heads += 1

    def on_headers_complete(self) -> None:
        fast = self.point_reads
        if (fast is not None and (self.cycle is None or self.cycle.response_complete) and not self.pipeline
                and fast.answer(self)):
            # Answered: no cycle or task was made, and the connection is idle again (on_message_complete,
            # next since a GET has no body, leaves it so; data_received then calls _enter(IDLE)).
            self.cycle = ANSWERED  # type: ignore[assignment]
            self._phase = IDLE
            return
        super().on_headers_complete()
        self._phase = BODY
        cycle = self.cycle
        if cycle is not None and cycle.scope is self.scope:  # not for an upgrade request (no new cycle)
            self.scope[CYCLE] = cycle  # type: ignore[literal-required]  # for direct.write_whole

    def on_message_complete(self) -> None:
        if self.cycle is ANSWERED:
            return  # answered on the connection, in on_headers_complete just before
        super().on_message_complete()
        self._phase = BUSY

    def on_response_complete(self) -> None:
        super().on_response_complete()  # starts a pipelined request, or arms the keep-alive timer
        task = self.timeout_keep_alive_task
        if task is None:
            return
        # uvicorn would cancel its keep-alive timer on any byte; take it over as the idle timer (its
        # callback is timeout_keep_alive_handler below), or drop it while a head or body is still arriving.
        self.timeout_keep_alive_task = None
        if self._phase == BUSY:
            self._cancel()
            self._timer = task
            self._timer_reason = ""
            self._phase = IDLE
            self._became_idle()
        else:
            task.cancel()
            self._became_idle()  # answered early (413, 503): the application holds nothing for it now

    def timeout_keep_alive_handler(self) -> None:
        self._timer = None
        self.expire(IDLE_TIMEOUT)

    def _enter(self, phase: int) -> None:
        if phase == IDLE:
            self._rest()  # a request was answered on the connection itself (fastpath.py)
            return
        if phase == HEAD:
            self._arm(self.policy.timeouts.header, HEADER)
            return
        self._became_busy()
        if phase == BODY:
            self._arm(self.policy.timeouts.body, BODY_TIMEOUT)
        elif self.cycle is not None and self.cycle.response_complete:
            # The body of a request answered early (413, 503) has now arrived: the connection is idle.
            self._arm(self.policy.timeouts.idle, IDLE_TIMEOUT)
            self._phase = IDLE
            self._became_idle()
        else:
            self._cancel()  # the application runs; [http] request_timeout_ms bounds it

    def _rest(self) -> None:
        """Idle again after a response, from now on: the idle bound runs from now. An idle timer already
        pending is kept and, when it fires early, re-armed for the rest (_fire): connections answered on
        the spot many times a second would otherwise cancel and make a timer per request."""
        self._idle_from = self.loop.time()
        if self._timer is None or self._timer_reason != IDLE_TIMEOUT:
            self._arm(self.policy.timeouts.idle, IDLE_TIMEOUT)
        self._became_idle()

    def _arm(self, delay: float, reason: str) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.loop.call_later(delay, self._fire, reason)
        self._timer_reason = reason

    def _cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _fire(self, reason: str) -> None:
        self._timer = None
        if reason == IDLE_TIMEOUT and self._phase == IDLE:
            left = self._idle_from + self.policy.timeouts.idle - self.loop.time()
            if left > 0:  # answered since the timer was armed (_rest): the bound runs from the last answer
                self._arm(left, IDLE_TIMEOUT)
                return
        self.expire(reason)

    def expire(self, reason: str) -> None:
        """Close the connection for ``reason``, answering 408 when a request was cut off and nothing else
        is being sent on the connection."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        self._cancel()
        self._became_busy()
        self.connections.discard(self)  # its place under max_connections is free now
        self.policy.on_close(reason)
        log.debug("connection closed", extra={"reason": reason, "remote": self.client[0] if self.client else "-"})
        cycle = self.cycle
        if reason == HEADER and (cycle is None or cycle.response_complete):
            transport.write(self.policy.answers[reason])
        elif reason == BODY_TIMEOUT and cycle is not None and not cycle.response_started:
            # The application is waiting for the body: it sees a disconnect and its answer is dropped.
            cycle.disconnected = True
            cycle.message_event.set()
            cycle.scope[SENT_STATUS] = 408  # type: ignore[literal-required]  # for the access log
            transport.write(self.policy.answers[reason])
        transport.close()
