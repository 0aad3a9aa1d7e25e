"""The ASGI layer every API request passes through, in one class because it is on the hot path:

- a request id (the client's X-Request-ID if sane, else a fresh one), echoed in the response;
- ``[http] max_concurrent_requests``: excess requests get 503 with Retry-After at once, never a queue;
- the body size limit ``[http] max_body_mb`` (413), checked on Content-Length and while streaming;
- ``[http] request_timeout_ms``: a request still unanswered by then gets 503;
- the access log line (method, path, status, user, request_id, duration_ms) and request metrics.

Probes (/health, /ready) skip the concurrency limit, so an overloaded server is not restarted for it.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from omendb.server.auth import ANONYMOUS, USER_KEY
from omendb.server.errors import error_body
from omendb.server.logs import ACCESS_LOGGER
from omendb.server.state import ServerState

access_log = logging.getLogger(ACCESS_LOGGER)
log = logging.getLogger("omendb.server")
_PROBES = frozenset({"/health", "/ready"})
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


class _BodyTooLarge(HTTPException):
    """Raised from ``receive``; an HTTPException so FastAPI's body parsing passes it through as a 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is larger than [http] max_body_mb = {limit // 2**20} MiB; "
                              "split it into smaller requests")


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
        self.timeout = http.request_timeout_ms / 1000
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        path: str = scope["path"]
        request_id = ""
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                candidate = value.decode("latin-1")
                if _REQUEST_ID.match(candidate):
                    request_id = candidate
                break
        request_id = request_id or uuid.uuid4().hex[:16]
        rid_header = (b"x-request-id", request_id.encode())
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
            receive = self._limit_body(scope, receive)
            if receive is None:
                await self._too_large(send_with_id)
                return
            try:
                async with asyncio.timeout(self.timeout):
                    await self.app(scope, receive, send_with_id)
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
                    await self._too_large(send_with_id)
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

    def _limit_body(self, scope: Scope, receive: Receive) -> Any:
        """``receive`` wrapped to enforce the size limit, or None if Content-Length already exceeds it."""
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    if int(value) > self.max_body:
                        return None
                except ValueError:
                    pass
                break
        seen = 0
        limit = self.max_body

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _BodyTooLarge(limit)
            return message

        return limited

    async def _too_large(self, send: Send) -> None:
        self.state.metrics.rejected.labels("max_body_mb").inc()
        await _send_error(send, 413, "body_too_large", str(_BodyTooLarge(self.max_body).detail),
                          [(b"connection", b"close")])

    def _log(self, scope: Scope, status: int, started: float, request_id: str) -> None:
        duration_ms = round((time.perf_counter() - started) * 1000, 3)
        route = scope.get("route")
        route_path = getattr(route, "path", "unmatched")
        self.state.metrics.requests.labels(scope["method"], route_path, str(status)).inc()
        if access_log.isEnabledFor(logging.INFO):
            client = scope.get("client")
            access_log.info("request", extra={
                "method": scope["method"], "path": scope["path"], "status": status,
                "user": scope.get(USER_KEY, ANONYMOUS), "remote": client[0] if client else "-",
                "request_id": request_id, "duration_ms": duration_ms})
