"""What the synchronous and asyncio clients share around httpx: one endpoint per server URL (its own
connection pool and session), request building, and turning answers and httpx failures into typed
results."""

from __future__ import annotations

import random
import ssl
import time
import uuid
from typing import Any

import httpx
import orjson

import omendb
from omendb.client.auth import SessionAuth
from omendb.client.config import Settings
from omendb.client.errors import (
    ClientError,
    ConnectionFailed,
    ReadOnly,
    Timeout,
    TLSError,
    error_from_response,
)
from omendb.client.ops import Call
from omendb.client.retry import Kind, retry_delay

USER_AGENT = f"omendb-client/{omendb.__version__}"


def make_auth(settings: Settings, base_url: str) -> httpx.Auth | None:
    if settings.auth == "none":
        return None
    if settings.auth == "basic":
        user, password = settings.credentials()
        return httpx.BasicAuth(user, password)
    return SessionAuth(f"{base_url}/auth/login", settings.credentials)


def client_options(settings: Settings, base_url: str, verify: bool | ssl.SSLContext) -> dict[str, Any]:
    return {"base_url": base_url, "auth": make_auth(settings, base_url), "verify": verify,
            "timeout": httpx.Timeout(settings.timeout), "headers": {"user-agent": USER_AGENT},
            "follow_redirects": False}


def build_request(http: httpx.Client | httpx.AsyncClient, call: Call, request_id: str) -> httpx.Request:
    headers = {"x-request-id": request_id}
    if call.body is not None:
        headers["content-type"] = "application/json"
    return http.build_request(call.method, call.path, params=call.params, content=call.body, headers=headers)


def new_request_id() -> str:
    # One id for all tries of a call, so the server's access log ties the retries together.
    return uuid.uuid4().hex[:16]


def decode(response: httpx.Response) -> Any:
    """The JSON of a 2xx answer; raises the typed error for anything else."""
    if 200 <= response.status_code < 300:
        return orjson.loads(response.content) if response.content else None
    raise error_from_response(response.status_code, response.content, response.headers)


def _is_tls_failure(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def transport_error(exc: httpx.TransportError, url: str) -> ClientError:
    """The typed error for a failure below HTTP. ``connect_failed`` means the request never left."""
    if _is_tls_failure(exc):
        return TLSError(f"the certificate of {url} could not be verified ({exc}); set ca_file / "
                        "OMENDB_CA_FILE to the ca.crt of the NAME-ca Secret that signed it", code="tls_error")
    if isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout):
        return ConnectionFailed(f"could not connect to {url} in time ({type(exc).__name__})",
                                code="connect_failed")
    if isinstance(exc, httpx.TimeoutException):
        return Timeout(f"no answer from {url} within the timeout ({type(exc).__name__}); the request may "
                       "have run on the server", code="timeout")
    if isinstance(exc, httpx.ConnectError):
        return ConnectionFailed(f"could not connect to {url}: {exc}", code="connect_failed")
    return ConnectionFailed(f"the connection to {url} failed: {type(exc).__name__}: {exc}",
                            code="connection_broken")


class Attempts:
    """The tries of one call: which server URL the next try goes to and how long to wait before it.
    Pure bookkeeping, shared by both clients, which only send and sleep."""

    def __init__(self, settings: Settings, call: Call, rng: random.Random) -> None:
        self.settings, self.call, self.rng = settings, call, rng
        self.primary = settings.url
        self.base = settings.read_url if call.read and settings.read_url else settings.url
        self.request_id = new_request_id()
        self.started = time.monotonic()
        self.retries = 0
        self.redirected = False

    def after(self, error: ClientError) -> float:
        """Seconds to wait before the next try (``self.base`` may have changed), or raise ``error``."""
        if isinstance(error, ReadOnly) and self.call.kind is not Kind.READ and not self.redirected:
            # The replica refused before running the write, so sending it to the primary is safe.
            target = error.primary or (self.primary if self.base != self.primary else None)
            if target is not None and target != self.base:
                self.base, self.redirected = target, True
                return 0.0
        if (isinstance(error, ConnectionFailed) and error.code == "connect_failed"
                and self.call.kind is Kind.READ and self.base != self.primary):
            self.base = self.primary  # no replica reachable (the -ro Service has no ready endpoint)
            return 0.0
        delay = retry_delay(self.settings.retry, self.call.kind, error, self.retries,
                            time.monotonic() - self.started, self.rng) if self.call.retry else None
        if delay is None:
            raise error
        self.retries += 1
        return delay
