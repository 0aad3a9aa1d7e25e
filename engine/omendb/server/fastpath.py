"""Single-key reads answered by the connection itself, as soon as their head is parsed.

uvicorn hands every request to the application as an asyncio Task running the ASGI call: a coroutine,
a Task, an Event and a cycle object per request, then two ASGI messages. For ``GET /v1/records/<key>``
that machinery cost more than everything OmenDB does for the read. ``PointReads.answer`` is called by the
connection (timeouts.TimedProtocol.on_headers_complete) before uvicorn builds any of it, and answers the
request there, start to finish, when the answer is certain to be what the request guard
(middleware.py) and the route would give:

- nothing is pending on the connection: no earlier response still being produced, nothing queued behind
  it (pipelined requests are answered in order);
- ``GET``, HTTP/1.1 keep-alive, no upgrade, no ``Expect``, no body (``Content-Length`` or
  ``Transfer-Encoding``), a well-formed key as the whole path (a query string, percent-encoding or
  anything else leaves it to the general path);
- no ``X-Forwarded-*`` header (uvicorn's ProxyHeadersMiddleware would rewrite the client address and
  scheme from them);
- over HTTPS when TLS is on (tlsport.PlainProbesOnly refuses plain-HTTP data requests);
- the database serving (not starting, recovering or shutting down: the general path explains those)
  and room under ``[http] max_concurrent_requests``;
- authentication off, or Basic credentials in the verified-credentials cache (credentials.py) for a
  user and address the failed-login throttle does not hold (a throttled caller gets its 429 from the
  general path).

Anything else returns False having changed nothing, and uvicorn goes on as usual. What is answered,
logged and counted is what the general path would do: the same bytes on the wire (status line, the
server's ``date`` header, content-type, content-length, ``x-request-id``, the body; tests compare
them), the same access line, and the same metrics (omendb_http_requests, omendb_query_duration_seconds,
omendb_searches, through the lock-free tallies of tallies.py).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE

from omendb.errors import OmenDBError
from omendb.server.auth import ANONYMOUS
from omendb.server.errors import APIError, error_body, from_engine
from omendb.server.middleware import RequestGuard
from omendb.server.models import INT64_MAX, INT64_MIN
from omendb.server.state import Phase
from omendb.server.tallies import CounterTally

log = logging.getLogger("omendb.server")


class _NoEvent:
    def set(self) -> None:
        pass


class Answered:
    """Stands in for uvicorn's RequestResponseCycle of a request the connection answered itself: the
    response is complete and nothing waits on it (uvicorn's protocol and timeouts.py read these)."""

    response_started = True
    response_complete = True
    disconnected = False
    keep_alive = True
    message_event = _NoEvent()


ANSWERED = Answered()
_JSON_HEAD = b"content-type: application/json\r\ncontent-length: "
# The request headers answer() reads; a body header (Content-Length, Transfer-Encoding) leaves the request
# to the general path, as does any X-Forwarded-* header.
_HEADERS_READ = frozenset((b"authorization", b"x-request-id", b"content-length", b"transfer-encoding"))


class PointReads:
    """The connection-level answer to ``GET /v1/records/<key>``; one per server (lifecycle.build_server)."""

    def __init__(self, guard: RequestGuard, https_only: bool) -> None:
        self.guard = guard
        self.state = guard.state
        self.https_only = https_only
        reader = self.state.point_reader
        assert reader is not None, "PointReads is built after the app (records.build_router sets the reader)"
        self.reader = reader
        self.prefix = reader.PREFIX.encode()
        self.prefix_length = len(self.prefix)
        self.route = reader.ROUTE
        self.user_file = self.state.users  # None: authentication is off
        self.verified = self.state.verified
        self.throttle = self.state.throttle
        self.access = guard.access
        self.requests: dict[int, CounterTally] = {}  # omendb_http_requests tallies of this route by status
        self._defaults: list[tuple[bytes, bytes]] | None = None  # uvicorn's default headers, and as bytes:
        self._defaults_head = b""

    def _remember_basic(self, protocol: Any, value: bytes | None, users: Any) -> tuple[bytes, Any, str, float] | None:
        """The connection's memo of an Authorization header found in the verified-credentials cache
        (credentials.py) under these `users`: (header, users, user, when the verification expires), kept
        on the connection; None when the header holds no Basic credentials the cache knows.

        The cache's key is an HMAC of the header, a few microseconds per request, most of an authenticated
        read's extra cost. A client sends the same header on every request of a connection, so `answer`
        takes the same header again, with the same users (a reload of the htpasswd file makes a new
        object) before the expiry, as the same answer without the HMAC. The connection holds nothing
        uvicorn does not hold anyway (the last request's headers stay on the connection until the next).
        """
        if value is None or value[:6].lower() != b"basic ":
            return None
        found = self.verified.verified(value[6:].strip(), users)
        if found is None:
            return None
        memo = (value, users, found[0], found[1])
        protocol.basic_memo = memo
        return memo

    def answer(self, protocol: Any) -> bool:
        """Answer the request whose head ``protocol`` (timeouts.TimedProtocol) has just parsed, if it
        qualifies (see the module docstring); False, having done nothing, otherwise."""
        url: bytes = protocol.url
        parser = protocol.parser
        if (not url.startswith(self.prefix) or parser.get_method() != b"GET" or protocol.expect_100_continue
                or parser.get_http_version() != "1.1" or not parser.should_keep_alive()
                or parser.should_upgrade() or protocol.flow.write_paused or protocol.transport.is_closing()):
            return False
        # The key as PointReader.parse_key reads it (the same rules, on the bytes: isdigit() of bytes is
        # ASCII digits only).
        text = url[self.prefix_length:]
        digits = text[1:] if text[:1] == b"-" else text
        if not digits.isdigit() or len(digits) > 19:
            return False
        key = int(text)
        if not INT64_MIN <= key <= INT64_MAX:
            return False
        authorization = request_id = None
        for name, value in protocol.headers:
            if name in _HEADERS_READ:  # most headers (Host, Accept, User-Agent...) are one set lookup
                if name == b"authorization":
                    if authorization is None:
                        authorization = value
                elif name == b"x-request-id":
                    if request_id is None:
                        request_id = value
                else:
                    return False  # a body
            elif name.startswith(b"x-forwarded-"):
                return False
        state = self.state
        guard = self.guard
        if (state.phase is not Phase.READY or guard.in_flight >= guard.max_concurrent
                or (self.https_only and protocol.scheme != "https")):
            return False
        client = protocol.client
        address = client[0] if client else "-"
        user = ANONYMOUS
        user_file = self.user_file
        if user_file is not None:  # what auth.cached_user answers, from the connection's memo when it holds
            users = user_file.current()
            memo = protocol.basic_memo
            if memo is None or memo[0] != authorization or memo[1] is not users or self.verified.now() >= memo[3]:
                memo = self._remember_basic(protocol, authorization, users)
                if memo is None:
                    return False  # no credentials, new ones, or wrong ones: authenticate() answers
            user = memo[2]
            throttle = self.throttle
            if throttle.active() and throttle.check(user, address) is not None:
                return False  # the failed-login throttle holds the user or address: the general path answers 429
        # Certain now: answer it here.
        started = time.perf_counter()
        rid = guard.valid_request_id(request_id) if request_id is not None else ""
        if not rid:
            guard.counter += 1
            rid = f"{guard.id_prefix}{guard.counter:08x}"  # guard.new_request_id(), inline
        extra = b""
        try:
            status, body = self.reader.read(key)
        except (APIError, OmenDBError) as exc:
            err = exc if isinstance(exc, APIError) else from_engine(exc)
            status, body = err.status, error_body(err.code, err.message)
            extra = b"".join(b"%s: %s\r\n" % (k.lower().encode(), v.encode()) for k, v in err.headers.items())
        except Exception:
            log.exception("unhandled error", extra={"request_id": rid, "path": url.decode("latin-1")})
            status, body = 500, error_body("internal", f"internal error; see the server log for request_id {rid}")
        # What uvicorn's cycle writes for the guard's start and body messages (direct.write_whole), at once.
        server_state = protocol.server_state
        defaults = server_state.default_headers  # a new list whenever uvicorn updates the date (each second)
        if defaults is not self._defaults:
            self._defaults_head = b"".join(b"%s: %s\r\n" % pair for pair in defaults)
            self._defaults = defaults
        protocol.transport.write(b"".join((STATUS_LINE[status], self._defaults_head, _JSON_HEAD, b"%d" % len(body),
                                           b"\r\n", extra, b"x-request-id: ", rid.encode(), b"\r\n\r\n", body)))
        server_state.total_requests += 1
        requests = self.requests.get(status)
        if requests is None:
            requests = self.requests[status] = guard.request_counts.get(("GET", self.route, status))
        requests.count += 1
        access = self.access
        if access.enabled():
            access.write_plain("GET", url.decode("latin-1"), status, user, address, rid,
                               time.perf_counter() - started)
        return True
