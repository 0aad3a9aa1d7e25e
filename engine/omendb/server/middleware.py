"""The ASGI layer every API request passes through, in one class because it is on the hot path:

- authentication for /v1 and /admin (see ``auth.gate``);
- a request id (the client's X-Request-ID if sane, else a fresh one), echoed in the response;
- ``[http] max_concurrent_requests``: excess requests get 503 with Retry-After at once, never a queue;
- the body size limit ``[http] max_body_mb`` (413), checked on Content-Length and while streaming
  (FastAPI's own ``max_body_size`` answers a too-long Content-Length in its own format, not the API's);
  batch bodies (upsert, lookup, delete) are held to what ``[limits] max_insert_batch_size`` items can
  take (``BATCH_ITEM_BYTES`` each), so an oversized batch is refused before it is buffered or parsed;
- ``[http] request_timeout_ms``: a request still unanswered by then gets 503 (deadlines.py);
- the access log line (method, path, status, user, request_id, duration_ms) and request metrics.

Probes (/health, /ready) skip the concurrency limit, so an overloaded server is not restarted for it.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from omendb.errors import OmenDBError
from omendb.server.auth import ANONYMOUS, USER_KEY, cached_basic, gate
from omendb.server.deadlines import Deadlines
from omendb.server.direct import CYCLE, write_whole
from omendb.server.errors import APIError, error_body, from_engine
from omendb.server.state import ServerState

log = logging.getLogger("omendb.server")
_PROBES = frozenset({"/health", "/ready"})
_POINT_PREFIX = "/v1/records/"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
SENT_STATUS = "omendb.sent_status"  # scope key: the status the connection layer answered in the app's stead
# Routes whose body is a batch of at most [limits] max_insert_batch_size records or keys.
_BATCH_PATHS = frozenset({"/v1/records", "/v1/records/lookup", "/v1/records/delete"})
# The most bytes one item of a valid batch needs: a record at its longest is about 70 bytes of JSON
# ({"key": -9223372036854775808, "value": -2.2250738585072014e-308}, ), the rest is room for indentation.
# Parsing costs ~10x the body in Python objects: a 61 MiB lookup refused only after parsing peaked at
# ~670 MiB RSS (tests/server/test_limits.py measures it).
BATCH_ITEM_BYTES = 128
BATCH_SLACK_BYTES = 64 * 1024


class _BodyTooLarge(HTTPException):
    """Raised from ``receive``; an HTTPException so FastAPI's body parsing passes it through as a 413.
    ``code`` is the API error code (errors.py answers with it when the app sees the exception first)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(413, message)
        self.code = code


class _BodyLimit:
    """One request's body limit: the byte count, the limit's name (metrics) and the refusal."""

    def __init__(self, limit: int, name: str, code: str, message: str) -> None:
        self.limit, self.name, self.code, self.message = limit, name, code, message

    def error(self) -> _BodyTooLarge:
        return _BodyTooLarge(self.code, self.message)


async def _send_error(send: Send, status: int, code: str, message: str,
                      headers: list[tuple[bytes, bytes]]) -> None:
    body = error_body(code, message)
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()), *headers]})
    await send({"type": "http.response.body", "body": body})


class RequestGuard:
    def __init__(self, app: ASGIApp, state: ServerState) -> None:
        self.app = app
        self.state = state
        http = state.config.http
        self.max_concurrent = http.max_concurrent_requests
        self.max_body = http.max_body_mb * 1024 * 1024
        batch = state.config.limits.max_insert_batch_size
        self.body_limit = _BodyLimit(self.max_body, "max_body_mb", "body_too_large",
                                     f"the request body is larger than [http] max_body_mb = {http.max_body_mb} "
                                     "MiB; split it into smaller requests")
        batch_bytes = batch * BATCH_ITEM_BYTES + BATCH_SLACK_BYTES
        self.batch_limit = self.body_limit if batch_bytes >= self.max_body else _BodyLimit(
            batch_bytes, "max_insert_batch_size", "batch_too_large",
            f"the request body is larger than {batch_bytes} bytes, more than a batch of [limits] "
            f"max_insert_batch_size = {batch} records or keys needs ({BATCH_ITEM_BYTES} bytes each); split it "
            "into smaller batches")
        self.timeout = http.request_timeout_ms / 1000
        self.deadlines = Deadlines(self.timeout)
        self.in_flight = 0
        self.access = state.access_log
        # Request ids: a random per-process prefix and a counter, unique across restarts and cheap to make.
        self.id_prefix = secrets.token_hex(4)
        self.counter = 0
        # omendb_http_requests by (method, route, status), as lock-free tallies folded at scrape time.
        requests = state.metrics.requests
        self.request_counts = state.metrics.tally_labelled(
            lambda key: requests.labels(key[0], key[1], str(key[2])))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        cycle = scope.pop(CYCLE, None)  # first thing: see direct.py
        path: str = scope["path"]
        request_id = ""
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                request_id = self.valid_request_id(value)
                break
        if not request_id:
            request_id = self.new_request_id()
        rid_header = (b"x-request-id", request_id.encode())
        if (cycle is not None and scope["method"] == "GET" and path.startswith(_POINT_PREFIX)
                and await self._direct_point_read(scope, send, cycle, path, request_id, rid_header, started)):
            return
        status_box = [0]

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_box[0] = message["status"]
                message["headers"] = [*message.get("headers", ()), rid_header]
            await send(message)

        probe = path in _PROBES
        counted = False
        try:
            if not probe and self.in_flight >= self.max_concurrent:
                self.state.metrics.rejected.labels("max_concurrent_requests").inc()
                await _send_error(send_with_id, 503, "overloaded",
                                  f"the server is at [http] max_concurrent_requests = {self.max_concurrent}; "
                                  "retry after the Retry-After delay", [(b"retry-after", b"1")])
                return
            self.in_flight += 1
            counted = True
            body_limit = (self.batch_limit if scope["method"] == "POST" and path in _BATCH_PATHS
                          else self.body_limit)
            receive = self._limit_body(scope, receive, body_limit)
            if receive is None:
                await self._too_large(send_with_id, body_limit)
                return
            try:
                task = asyncio.current_task()
                assert task is not None
                cancelling = task.cancelling()
                self.deadlines.watch(task)
                try:
                    await gate(self.state, scope)
                    if not await self._point_read(scope, send, rid_header, status_box):
                        await self.app(scope, receive, send_with_id)
                except asyncio.CancelledError:
                    if self.deadlines.expired(task, cancelling):
                        raise TimeoutError from None
                    raise
                finally:
                    self.deadlines.forget(task)
            except (APIError, OmenDBError) as exc:  # refused by authentication, or from the point-read path
                err = exc if isinstance(exc, APIError) else from_engine(exc)
                headers = [(k.lower().encode(), v.encode()) for k, v in err.headers.items()]
                if status_box[0] == 0:
                    await _send_error(send_with_id, err.status, err.code, err.message, headers)
            except TimeoutError:
                self.state.metrics.rejected.labels("request_timeout_ms").inc()
                if status_box[0] == 0:
                    await _send_error(send_with_id, 503, "request_timeout",
                                      f"the request did not finish within [http] request_timeout_ms = "
                                      f"{int(self.timeout * 1000)}; a write may or may not have been applied "
                                      "(writes are idempotent upserts/deletes, so retrying is safe)",
                                      [(b"retry-after", b"1")])
            except _BodyTooLarge:
                if status_box[0] == 0:
                    await self._too_large(send_with_id, body_limit, count=False)
            except Exception:
                # The exception handlers answer everything expected; this is a bug, so log it with its
                # traceback and still answer in the API's error shape.
                log.exception("unhandled error", extra={"request_id": request_id, "path": path})
                if status_box[0] == 0:
                    await _send_error(send_with_id, 500, "internal",
                                      f"internal error; see the server log for request_id {request_id}", [])
        finally:
            if counted:
                self.in_flight -= 1
            self._log(scope, status_box[0], started, request_id)

    def new_request_id(self) -> str:
        self.counter += 1
        return f"{self.id_prefix}{self.counter:08x}"

    @staticmethod
    def valid_request_id(value: bytes) -> str:
        """A client's X-Request-ID if it is sane (echoed and logged as it is), else ""."""
        candidate = value.decode("latin-1")
        return candidate if _REQUEST_ID.match(candidate) else ""

    async def _direct_point_read(self, scope: Scope, send: Send, cycle: Any, path: str, request_id: str,
                                 rid_header: tuple[bytes, bytes], started: float) -> bool:
        """``GET /v1/records/<key>`` answered start to finish without awaiting anything, when nothing but a
        lookup stands between the request and its answer. Most such reads never get here: the connection
        answers them itself before making a task (fastpath.py); this answers the ones it leaves, such as
        reads pipelined behind another request or sent through a proxy (X-Forwarded-*). The conditions:
        a well-formed key, no request body, room under ``max_concurrent_requests``, and no authentication
        or credentials verified recently (the cache in credentials.py). The response goes out in one
        write (direct.py). False, having done nothing, leaves the request to the general path below,
        which answers every other case (and explains refusals).

        Nothing here can wait, so ``request_timeout_ms`` cannot expire in it, and the concurrency count
        never sees it in flight. What is answered, logged and counted is what the general path would do:
        same status, headers and body, same access line and metrics.
        """
        state = self.state
        reader = state.point_reader
        if reader is None or self.in_flight >= self.max_concurrent:
            return False
        key = reader.parse_key(path)
        if key is None:
            return False
        for name, _value in scope["headers"]:
            if name == b"content-length" or name == b"transfer-encoding":
                return False  # a body: the general path holds it to the body limit
        if state.users is not None:
            user = cached_basic(state, scope)
            if user is None:
                return False  # no credentials, new ones, or wrong ones: authenticate() answers
            scope[USER_KEY] = user
        scope["omendb.route"] = reader.ROUTE
        extra: list[tuple[bytes, bytes]] = []
        try:
            status, body = reader.read(key)
        except (APIError, OmenDBError) as exc:
            err = exc if isinstance(exc, APIError) else from_engine(exc)
            status, body = err.status, error_body(err.code, err.message)
            extra = [(k.lower().encode(), v.encode()) for k, v in err.headers.items()]
        except Exception:
            log.exception("unhandled error", extra={"request_id": request_id, "path": path})
            status, body = 500, error_body("internal", f"internal error; see the server log for request_id "
                                                       f"{request_id}")
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                   *extra, rid_header]
        if not write_whole(cycle, status, headers, body):
            try:
                await send({"type": "http.response.start", "status": status, "headers": headers})
                await send({"type": "http.response.body", "body": body})
            finally:
                self._log(scope, status, started, request_id)
            return True
        self._log(scope, status, started, request_id)
        return True

    async def _point_read(self, scope: Scope, send: Send, rid_header: tuple[bytes, bytes],
                          status_box: list[int]) -> bool:
        """Answer ``GET /v1/records/<key>`` without FastAPI's routing and parameter machinery.

        The hottest request is a single-key read, and routing plus dependency resolution cost several
        times the lookup. The route stays registered (OpenAPI, and malformed keys, which fall through to
        it for FastAPI's error message); both paths answer through the same PointReader. It sends on the
        connection's own ``send`` with the request id already in the headers: the wrapper that adds it to
        every other response is one more coroutine call per message.
        """
        path: str = scope["path"]
        if scope["method"] != "GET" or not path.startswith(_POINT_PREFIX):
            return False
        reader = self.state.point_reader
        if reader is None:
            return False
        key = reader.parse_key(path)
        if key is None:
            return False
        scope["omendb.route"] = reader.ROUTE
        status, body = reader.read(key)
        status_box[0] = status
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()), rid_header]})
        await send({"type": "http.response.body", "body": body})
        return True

    def _limit_body(self, scope: Scope, receive: Receive, body_limit: _BodyLimit) -> Any:
        """``receive`` wrapped to enforce the size limit, or None if Content-Length already exceeds it.

        The count is taken on each chunk as it arrives, so a refused body never sits in memory beyond the
        limit plus one chunk; the refusal is counted in the metrics here, once, whoever answers it."""
        limit = body_limit.limit
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    if int(value) > limit:
                        return None
                except ValueError:
                    pass
                break
        seen = 0
        rejected = self.state.metrics.rejected

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    rejected.labels(body_limit.name).inc()
                    raise body_limit.error()
            return message

        return limited

    async def _too_large(self, send: Send, body_limit: _BodyLimit, count: bool = True) -> None:
        if count:
            self.state.metrics.rejected.labels(body_limit.name).inc()
        await _send_error(send, 413, body_limit.code, body_limit.message, [(b"connection", b"close")])

    def _log(self, scope: Scope, status: int, started: float, request_id: str) -> None:
        # A request whose body timed out was answered 408 by the connection layer (timeouts.py); what the
        # application made of the disconnect it then saw was never sent.
        status = scope.get(SENT_STATUS, status)
        duration = time.perf_counter() - started
        route = scope.get("route")
        route_path = getattr(route, "path", None) or scope.get("omendb.route", "unmatched")
        self.request_counts.get((scope["method"], route_path, status)).count += 1
        if self.access.enabled():
            client = scope.get("client")
            self.access.write(scope["method"], scope["path"], status, scope.get(USER_KEY, ANONYMOUS),
                              client[0] if client else "-", request_id, round(duration * 1000, 3))
