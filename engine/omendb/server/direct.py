"""A complete response written to the connection in one write, for the answers the request guard gives
by itself on the hot path (single-key reads the connection did not answer itself: see fastpath.py, which
writes the same bytes without a cycle).

ASGI sends a response as two messages, and uvicorn writes each as it comes: the head, then the body, two
``send`` system calls on the socket and, on loopback, two wake-ups of the client for one small response.
Those two writes were over a third of a point read's CPU time. The guard's fast path instead hands the
whole response to ``write_whole``, which does what uvicorn's ``RequestResponseCycle.send`` does for a
start message followed by a final body message (status line, the server's default headers such as
``date``, the response headers, ``connection: close`` when the connection will not be kept alive, the
cycle's bookkeeping, the keep-alive close), with one ``transport.write``.

The connection layer (timeouts.TimedProtocol) puts the request's cycle into the ASGI scope under
``CYCLE``; the guard takes it out first thing (a scope that refers to its cycle, which refers to the scope,
would otherwise be left for the cyclic garbage collector). Without a cycle (an in-process ASGI client,
another server) or whenever the cycle is not in a plain state (response begun, writes paused by flow
control, client gone), ``write_whole`` returns False and the caller sends the usual ASGI messages.
tests/server/test_units.py checks that both ways put the same bytes on the wire.
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE

CYCLE = "omendb.cycle"  # scope key: uvicorn's RequestResponseCycle of this request


def write_whole(cycle: Any, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> bool:
    """Write a whole response (head and body) in one write; False if the caller must send it over ASGI.

    ``headers`` must be lower-case, valid, and include content-length (the guard's own headers are).
    Only for GET: a HEAD response has no body.
    """
    if (cycle is None or cycle.response_started or cycle.disconnected or cycle.flow.write_paused
            or cycle.scope["method"] != "GET"):
        return False
    cycle.response_started = True
    cycle.waiting_for_100_continue = False
    content = [STATUS_LINE[status]]
    for name, value in cycle.default_headers:
        content += (name, b": ", value, b"\r\n")
    for name, value in headers:
        content += (name, b": ", value, b"\r\n")
    keep_alive = cycle.keep_alive
    if not keep_alive:
        content.append(b"connection: close\r\n")
    content += (b"\r\n", body)
    cycle.transport.write(b"".join(content))
    cycle.response_complete = True
    cycle.message_event.set()
    if not keep_alive:
        cycle.transport.close()
    cycle.on_response()
    return True
