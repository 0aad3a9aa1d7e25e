"""Authentication as httpx auth flows: HTTP Basic (httpx's own), or a session token from
``POST /auth/login`` renewed before it expires.

Basic makes the server check the password hash (bcrypt/apr1) on every request; a session token is one
check per session, so it is the default when credentials are given. Tokens live in the memory of the
server that issued them, so each server URL (primary, read-only Service, a redirect target) gets its own
SessionAuth.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator
from dataclasses import dataclass

import httpx
import orjson

from omendb.client.errors import ClientError, error_from_response

Credentials = Callable[[], tuple[str, str]]


@dataclass(frozen=True)
class Token:
    value: str
    renew_at: float  # clock() after which the token is renewed before use


def renew_margin(lifetime: float) -> float:
    """How long before expiry to renew: a quarter of the lifetime, at most a minute. The lifetime is
    counted from before the login request left, so the server's expiry is never earlier than ours."""
    return min(60.0, lifetime / 4)


class SessionAuth(httpx.Auth):
    """``Authorization: Bearer <token>``, logging in first and again shortly before the token expires.

    If a request is still refused with 401 (the server restarted and forgot its sessions, or the token
    was revoked), the flow logs in once more and resends the request: the refusal happened before the
    request ran, so resending is safe for any call. Concurrent callers may each log in once at renewal
    time; the last token wins and both stay valid until they expire.
    """

    requires_response_body = True

    def __init__(self, login_url: str, credentials: Credentials,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.login_url = login_url
        self._credentials = credentials
        self._clock = clock
        self._token: Token | None = None
        self._auth_disabled = False
        self.logins = 0  # successful logins (tests and metrics read it)

    def _login_request(self) -> httpx.Request:
        user, password = self._credentials()
        body = orjson.dumps({"username": user, "password": password})
        return httpx.Request("POST", self.login_url, content=body,
                             headers={"content-type": "application/json"})

    def _accept(self, response: httpx.Response, asked_at: float) -> None:
        if response.status_code == 200:
            data = orjson.loads(response.content)
            lifetime = float(data["expires_in"])
            self._token = Token(str(data["token"]), asked_at + lifetime - renew_margin(lifetime))
            self.logins += 1
            return
        error: ClientError = error_from_response(response.status_code, response.content, response.headers)
        if error.code == "auth_disabled":
            self._auth_disabled = True  # the server needs no credentials; send none
            return
        error.message = f"login at {self.login_url} failed: {error.message}"
        raise error

    def _needs_login(self) -> bool:
        return not self._auth_disabled and (self._token is None or self._clock() >= self._token.renew_at)

    def _login(self) -> Generator[httpx.Request, httpx.Response, None]:
        asked_at = self._clock()
        response = yield self._login_request()
        self._accept(response, asked_at)

    def _sign(self, request: httpx.Request) -> None:
        if self._token is not None and not self._auth_disabled:
            request.headers["Authorization"] = f"Bearer {self._token.value}"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if self._needs_login():
            yield from self._login()
        self._sign(request)
        response = yield request
        if response.status_code == 401 and not self._auth_disabled:
            self._token = None
            yield from self._login()
            self._sign(request)
            yield request

    @property
    def token(self) -> Token | None:
        return self._token
