"""Typed errors of the HTTP client, built from the server's ``{"error": {"code": ..., "message": ...}}``.

Each class also derives from the embedded engine's error of the same meaning where there is one
(``omendb.InvalidInput``, ``omendb.ReadOnly``, ``omendb.MemoryLimitExceeded``, ``omendb.StorageFull``), so
code written against ``omendb.Database`` keeps catching the same exceptions when it switches to
``omendb.client.Client``.
"""

from __future__ import annotations

import email.utils
import re
import time
from collections.abc import Mapping
from typing import Any

import orjson

from omendb import errors as engine_errors


class ClientError(engine_errors.OmenDBError):
    """An error answered by the server, or a failure to reach it. ``code`` is the server's error code
    (or the client's own: ``connection_failed``, ``timeout``, ``tls_error``, ``partial_write``)."""

    code = "client_error"

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None,
                 request_id: str | None = None, retry_after: float | None = None,
                 primary: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        self.status = status
        self.request_id = request_id
        self.retry_after = retry_after  # seconds the server asked us to wait (Retry-After), if any
        self.primary = primary  # for ReadOnly: the primary's URL, when the server names it

    def __str__(self) -> str:
        where = f"HTTP {self.status} " if self.status is not None else ""
        rid = f" (request_id {self.request_id})" if self.request_id else ""
        return f"{where}{self.code}: {self.message}{rid}"


class InvalidInput(ClientError, engine_errors.InvalidInput):
    """The request was refused as malformed (400/422); nothing was changed."""


class Unauthorized(ClientError):
    """401: missing, wrong or expired credentials."""


class Forbidden(ClientError):
    """403: the user may not do this (admin endpoints need a user listed in [security] admin_users)."""


class NotFound(ClientError):
    """404 for anything but an absent record (``get`` answers None for those, as the embedded API)."""


class Conflict(ClientError):
    """409 other than read-only."""


class ReadOnly(Conflict, engine_errors.ReadOnly):
    """The server does not accept writes (a replica, or a database being restored). ``primary`` holds the
    primary's URL when the server names it; the client has already retried there once when it could."""


class TooLarge(ClientError):
    """413: more records than [limits] max_insert_batch_size, or a body over [http] max_body_mb."""


class InsufficientStorage(ClientError, engine_errors.MemoryLimitExceeded):
    """507: the write would take the server over its memory limit; nothing was applied."""


class StorageFull(ClientError, engine_errors.StorageFull):
    """507 ``insufficient_storage``: a server volume is out of space (WAL or data directory); nothing was
    applied. Writes succeed again once space is freed there, without a restart."""


class ServerError(ClientError):
    """500 and other unexpected server answers; the server log has the details under ``request_id``."""


class Unavailable(ClientError):
    """The server cannot serve now: 503 (overloaded, not ready, timed out), 502/504, or it cannot be
    reached. Raised after the retries allowed for the call ran out."""


class RateLimited(Unavailable):
    """429 Too Many Requests."""


class ConnectionFailed(Unavailable):
    """No connection could be made, or it broke before an answer came."""


class Timeout(Unavailable):
    """No answer within the client's timeout."""


class TLSError(ClientError):
    """The server's certificate could not be verified. Never retried: point ``ca_file`` (OMENDB_CA_FILE) at
    the CA that signed it, e.g. ``ca.crt`` of the mounted NAME-ca Secret."""


class PartialWrite(ClientError):
    """A batch larger than the server's limit was split, and a later part failed. The first ``applied``
    records (in the order given) are durable up to LSN ``lsn``; the rest were not written. Retrying the
    remainder (or the whole batch: upserts and deletes are idempotent) completes it."""

    def __init__(self, message: str, *, applied: int, lsn: int | None, cause: ClientError) -> None:
        super().__init__(message, code="partial_write", status=cause.status, request_id=cause.request_id)
        self.applied = applied
        self.lsn = lsn
        self.cause = cause


_BY_CODE: dict[str, type[ClientError]] = {
    "not_found": NotFound,
    "unauthorized": Unauthorized,
    "forbidden": Forbidden,
    "read_only": ReadOnly,
    "batch_too_large": TooLarge,
    "body_too_large": TooLarge,
    "memory_limit_exceeded": InsufficientStorage,
    "insufficient_storage": StorageFull,
    "invalid_request": InvalidInput,
    "invalid_input": InvalidInput,
    "invalid_cursor": InvalidInput,
    "bad_request": InvalidInput,
    "auth_disabled": InvalidInput,
}

_BY_STATUS: dict[int, type[ClientError]] = {
    400: InvalidInput, 401: Unauthorized, 403: Forbidden, 404: NotFound, 409: Conflict, 413: TooLarge,
    422: InvalidInput, 429: RateLimited, 502: Unavailable, 503: Unavailable, 504: Unavailable,
    507: InsufficientStorage,
}

_URL = re.compile(r"https?://[^\s'\"<>;,)]+")


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header: delta-seconds or an HTTP date (RFC 9110 section 10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def primary_from_error(error: Mapping[str, Any], headers: Mapping[str, str]) -> str | None:
    """Where a replica says the primary is: the error's ``primary`` field, an ``X-OmenDB-Primary`` or
    ``Location`` header, or else the first URL in the message. None if it names none."""
    for candidate in (error.get("primary"), error.get("primary_url"), headers.get("x-omendb-primary"),
                      headers.get("location")):
        if isinstance(candidate, str) and candidate.startswith(("http://", "https://")):
            return candidate.rstrip("/")
    found = _URL.search(str(error.get("message", "")))
    return found.group(0).rstrip("/.") if found else None


def error_from_response(status: int, content: bytes, headers: Mapping[str, str]) -> ClientError:
    """The typed error for a non-2xx answer. Bodies that are not the API's error shape (a proxy's HTML
    page, say) still give a typed error, with the start of the body as the message."""
    error: Mapping[str, Any] = {}
    try:
        parsed = orjson.loads(content) if content else None
        if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
            error = parsed["error"]
    except orjson.JSONDecodeError:
        pass
    code = str(error.get("code") or f"http_{status}")
    message = str(error.get("message") or content[:200].decode("utf-8", "replace").strip()
                  or f"HTTP {status} without a body")
    cls = _BY_CODE.get(code) or _BY_STATUS.get(status) or (ServerError if status >= 500 else ClientError)
    if cls is ReadOnly or (status in (409, 503) and code == "read_only"):
        cls = ReadOnly
    return cls(message, code=code, status=status, request_id=headers.get("x-request-id"),
               retry_after=parse_retry_after(headers.get("retry-after")),
               primary=primary_from_error(error, headers) if cls is ReadOnly else None)


def as_client_error(exc: engine_errors.InvalidInput) -> InvalidInput:
    """Argument checks run in the client before any request; they raise the client's InvalidInput (which
    is also an ``omendb.InvalidInput``) with the embedded engine's message."""
    return InvalidInput(exc.message, code=exc.code)
