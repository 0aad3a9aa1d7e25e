"""The API's one error shape, ``{"error": {"code": ..., "message": ...}}``, and the mapping from engine
and framework exceptions onto it. Bad input is always a 4xx that says what to fix; nothing reaches the
client as a bare 500 traceback."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from omendb import errors as engine_errors
from omendb import replication

log = logging.getLogger("omendb.server")


class APIError(Exception):
    def __init__(self, status: int, code: str, message: str,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = dict(headers or {})


def error_body(code: str, message: str) -> bytes:
    return orjson.dumps({"error": {"code": code, "message": message}})


def error_response(status: int, code: str, message: str,
                   headers: Mapping[str, str] | None = None) -> Response:
    return Response(error_body(code, message), status_code=status, media_type="application/json",
                    headers=dict(headers or {}))


# Engine errors: status and whether the client can fix it by changing the request.
_ENGINE_STATUS: dict[type[Exception], int] = {
    engine_errors.InvalidInput: 422,
    engine_errors.MemoryLimitExceeded: 507,
    engine_errors.StorageFull: 507,  # a full volume; writes resume by themselves once space is freed
    engine_errors.ReadOnly: 409,
    engine_errors.Isolated: 503,  # fenced while cut off; writes resume once a replica or the operator reaches it
    engine_errors.DatabaseClosed: 503,
    engine_errors.CorruptionError: 500,
    replication.Fenced: 409,
    replication.ReplicationTimeout: 504,  # durable on the primary, not yet on enough replicas
}


def from_engine(exc: engine_errors.OmenDBError) -> APIError:
    for cls, status in _ENGINE_STATUS.items():
        if isinstance(exc, cls):
            return APIError(status, exc.code, exc.message)
    return APIError(500, exc.code, exc.message)


def _location(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body",)]
    return ".".join(parts) or "body"


def invalid_json_message(detail: str) -> str:
    """The one message for a body that is not JSON, on every route (docs/server.md, "Errors")."""
    return f"the body is not valid JSON ({detail}); send a JSON object as described in /docs"


def describe_validation(exc: RequestValidationError, content_type: str = "application/json") -> str:
    problems = []
    if "json" not in content_type and any(tuple(e.get("loc", ())) == ("body",) for e in exc.errors()):
        return (f"the body must be JSON sent with 'Content-Type: application/json' (got "
                f"'{content_type or 'no content type'}'); see /docs for the request schema")
    for err in exc.errors():
        loc = tuple(err.get("loc", ()))
        if err.get("type") == "json_invalid":
            at = f" at byte {loc[1]}" if len(loc) > 1 and isinstance(loc[1], int) else ""
            return invalid_json_message(f"{err.get('ctx', {}).get('error', 'decode error')}{at}")
        if err.get("type") == "missing" and loc == ("body",):
            return invalid_json_message("the body is empty")  # FastAPI does not parse an empty body
    for err in exc.errors()[:5]:
        msg = err.get("msg", "invalid")
        problems.append(f"{_location(tuple(err.get('loc', ())))}: {msg}")
    more = len(exc.errors()) - 5
    if more > 0:
        problems.append(f"and {more} more")
    return "; ".join(problems)


def describe_path_key(raw: Any) -> str:
    return (f"the key in the path must be a signed 64-bit integer written in plain decimal: digits with an "
            f"optional leading '-', from -9223372036854775808 to 9223372036854775807, no '+', spaces or "
            f"'_' (got {str(raw)!r})")


def install(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(_request: Request, exc: APIError) -> Response:
        return error_response(exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        bad_key = next((e for e in exc.errors() if tuple(e.get("loc", ()))[:2] == ("path", "key")), None)
        if bad_key is not None:
            return error_response(400, "invalid_key", describe_path_key(bad_key.get("input")))
        content_type = request.headers.get("content-type", "")
        return error_response(422, "invalid_request", describe_validation(exc, content_type))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        codes = {404: "not_found", 405: "method_not_allowed", 400: "bad_request", 413: "body_too_large"}
        message = str(exc.detail)
        if exc.status_code == 404:
            message = f"no such endpoint: {request.method} {request.url.path}; see /docs for the API"
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}; see /docs for the API"
        code = getattr(exc, "code", None) or codes.get(exc.status_code, "http_error")  # middleware's 413s
        return error_response(exc.status_code, code, message,
                              getattr(exc, "headers", None))

    @app.exception_handler(engine_errors.OmenDBError)
    async def _engine(_request: Request, exc: engine_errors.OmenDBError) -> Response:
        err = from_engine(exc)
        if err.status >= 500:
            log.error("engine error", extra={"code": exc.code, "error": exc.message})
        return error_response(err.status, err.code, err.message)

    @app.exception_handler(OSError)
    async def _os_error(_request: Request, exc: OSError) -> Response:
        # A full volume under a file outside the WAL's write path (e.g. <wal dir>/ARCHIVED): 507, one line.
        if not engine_errors.is_storage_full(exc):
            raise exc  # anything else is unexpected: the handler below answers 500 and logs the traceback
        message = f"{exc.strerror}: {exc.filename}; free space on that volume or expand it, then retry"
        log.error("storage full", extra={"code": "insufficient_storage", "error": message})
        return error_response(507, "insufficient_storage", message)

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> Response:
        log.exception("unexpected error while handling a request")
        return error_response(500, "internal", f"internal error ({type(exc).__name__}); see the server log")
