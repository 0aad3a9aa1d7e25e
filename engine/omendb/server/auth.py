"""Who is calling: HTTP Basic against the htpasswd users, or a bearer token from /auth/login.

Every refusal is logged (user, remote address, path, why) and counted; passwords and tokens never are,
nor names that are not users (see ``user_fields``). Password checks go through the failed-login throttle
(throttle.py), then the cache of verified passwords (credentials.py), then bcrypt/apr1 on the auth
thread pool (state.run_auth), never on the worker threads that serve database calls.
With ``[security] auth_enabled = false`` every caller is the anonymous user with the admin role.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import logging
import secrets

from starlette.types import Scope

from omendb.server.credentials import basic_credentials
from omendb.server.errors import APIError
from omendb.server.htpasswd import UserFile
from omendb.server.state import ServerState

log = logging.getLogger("omendb.auth")

ANONYMOUS = "-"
USER_KEY = "omendb.user"  # where the authenticated name is kept in the ASGI scope for the access log
MAX_USER_LENGTH = 256  # the LoginRequest model's limit too
_CHALLENGE = {"WWW-Authenticate": 'Basic realm="omendb", charset="UTF-8"'}
# Names that are not users are logged as an HMAC under this per-process key: someone who types a password
# into the user name field must not find it in the log, and a plain hash of a short password is guessed
# back in seconds. The same wrong name still logs the same value, so repeated attempts stay visible.
_NAME_KEY = secrets.token_bytes(32)


def remote(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "-"


def header(scope: Scope, name: bytes) -> str:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return ""


def user_fields(users: UserFile | None, user: str) -> dict[str, str]:
    """How a user name appears in the log: verbatim if it is a user of the file, else only as an HMAC."""
    if user == ANONYMOUS or users is None or users.exists(user):
        return {"user": user}
    return {"user": ANONYMOUS, "user_hash": hmac.digest(_NAME_KEY, user.encode("utf-8", "surrogatepass"),
                                                         "sha256").hex()[:12]}


def refuse(state: ServerState, scope: Scope, status: int, reason: str, user: str, message: str,
           verified_name: bool = False) -> APIError:
    """The 401/403 for a refused request, logged and counted. ``verified_name``: the name was a user's
    when it was verified (a session's), so it is logged as it is even if the user is gone now."""
    names = {"user": user} if verified_name else user_fields(state.users, user)
    log.warning("auth failure", extra={"status": status, "reason": reason, **names,
                                       "remote": remote(scope), "path": scope["path"]})
    state.metrics.auth_failures.labels(reason).inc()
    return APIError(status, "unauthorized" if status == 401 else "forbidden", message,
                    _CHALLENGE if status == 401 else None)


def _throttled(state: ServerState, scope: Scope, which: str, retry_after: int) -> APIError:
    # Not logged here (the access log has every 429): under a guessing attack that would be a line per
    # guess. The audit line is written once, when throttling starts (see check_password).
    state.metrics.auth_throttled.labels(which).inc()
    limit = "login_failures_per_user" if which == "user" else "login_failures_per_address"
    return APIError(429, "too_many_failed_logins",
                    f"too many wrong passwords for this {which} ([security] {limit} within "
                    f"login_failure_window_seconds); retry after {retry_after} s",
                    {"Retry-After": str(retry_after)})


def parse_basic(header_value: str) -> tuple[str, str] | None:
    try:
        decoded = base64.b64decode(header_value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None


async def _verify(state: ServerState, user: str, password: str, credentials: str) -> tuple[str | None, int]:
    """bcrypt/apr1 on the auth pool. Identical checks running at once share one computation (a client
    opening many connections with the same credentials pays bcrypt once, not once per connection)."""
    assert state.users is not None
    key = state.verified.key(credentials)
    pending = state.verified.pending
    future = pending.get(key)
    if future is None:
        future = asyncio.ensure_future(state.run_auth(state.users.verify, user, password))
        pending[key] = future
        future.add_done_callback(lambda _f: pending.pop(key, None))
    # Shielded: a waiter cancelled by its request timeout must not cancel the others' shared check.
    return await asyncio.shield(future)


async def check_password(state: ServerState, scope: Scope, user: str, password: str,
                         credentials: str | None = None) -> str:
    """Check a user's password; the hash it matched (sessions record it). Raises 401, or 429 while the user
    name or the client address is throttled (checked first, so a throttled guess costs no bcrypt).
    ``credentials``: the Basic form of the two as the client sent it, if it did (the cache's key)."""
    users = state.users
    assert users is not None
    if len(user) > MAX_USER_LENGTH:
        # Bounds what the failed-login throttle keeps per name.
        raise refuse(state, scope, 401, "malformed_credentials", ANONYMOUS,
                     f"the user name is longer than {MAX_USER_LENGTH} characters")
    address = remote(scope)
    throttled = state.throttle.check(user, address)
    if throttled is not None:
        raise _throttled(state, scope, *throttled)
    if credentials is None:
        credentials = basic_credentials(user, password)
    current = users.current()
    if state.verified.user_of(credentials, current) == user:
        return current.entries[user]
    verified, generation = await _verify(state, user, password, credentials)
    if verified is None:
        for which in state.throttle.fail(user, address):
            log.warning("auth throttled", extra={"status": 429, "reason": f"too_many_failures_per_{which}",
                                                 "scope": which, **user_fields(users, user),
                                                 "remote": address, "path": scope["path"],
                                                 "window_seconds": state.throttle.window})
        raise refuse(state, scope, 401, "bad_credentials", user,
                     "wrong user name or password (users come from [security] htpasswd_file)")
    state.verified.remember(credentials, user, verified, generation)
    return verified


def session_of(state: ServerState, scope: Scope, token: str) -> str:
    """The user of a live session token; 401 if it is unknown, expired, or its user was removed or
    changed password since the login."""
    assert state.users is not None
    session, why = state.sessions.lookup(token)
    if session is None:
        message = ("the session token has expired; log in again with POST /auth/login" if why == "expired"
                   else "unknown session token; log in with POST /auth/login")
        raise refuse(state, scope, 401, f"{why}_token", ANONYMOUS, message)
    hash_ = state.users.hash_of(session.user)
    if hash_ is None:
        state.sessions.revoke(token)
        raise refuse(state, scope, 401, "user_removed", session.user,
                     "the session's user no longer exists in the htpasswd file", verified_name=True)
    if hash_ != session.credential:
        state.sessions.revoke(token)
        raise refuse(state, scope, 401, "password_changed", session.user,
                     "the user's password changed since this session began; log in again with POST /auth/login",
                     verified_name=True)
    return session.user


async def authenticate(state: ServerState, scope: Scope) -> str:
    if state.users is None:
        return ANONYMOUS
    value = header(scope, b"authorization")
    if not value:
        raise refuse(state, scope, 401, "missing_credentials", ANONYMOUS,
                     "authentication required: send HTTP Basic credentials or 'Authorization: Bearer "
                     "<token>' from POST /auth/login")
    scheme, _, credentials = value.partition(" ")
    scheme = scheme.lower()
    if scheme == "basic":
        parsed = parse_basic(credentials)
        if parsed is None:
            raise refuse(state, scope, 401, "malformed_credentials", ANONYMOUS,
                         "malformed Basic credentials: expected base64 of 'user:password'")
        user, password = parsed
        await check_password(state, scope, user, password, credentials.strip())
        return user
    if scheme == "bearer":
        return session_of(state, scope, credentials.strip())
    raise refuse(state, scope, 401, "unsupported_scheme", ANONYMOUS,
                 f"unsupported Authorization scheme '{scheme}'; use Basic or Bearer")


# Paths that need a user; everything else (/health, /ready, /docs, /openapi.json, /auth/login) is open.
PROTECTED_PREFIXES = ("/v1/", "/admin/")
ADMIN_PREFIX = "/admin/"


def cached_basic(state: ServerState, scope: Scope) -> str | None:
    """The user of HTTP Basic credentials verified recently, found without decoding them; None sends the
    request down the full path (which also answers everything else: errors, throttling, bcrypt)."""
    assert state.users is not None
    value = b""
    for name, raw in scope["headers"]:
        if name == b"authorization":
            value = raw
            break
    # The header's bytes as they came: the cache key is the same HMAC without decoding them to text.
    if value[:6].lower() != b"basic ":
        return None
    user = state.verified.user_of(value[6:].strip(), state.users.current())
    if user is None or (state.throttle.active() and state.throttle.check(user, remote(scope)) is not None):
        return None
    return user


async def gate(state: ServerState, scope: Scope) -> None:
    """Authenticate (and for /admin authorize) a request before routing; raises APIError with 401/403.

    Done in the ASGI layer rather than as a FastAPI dependency: it is the same check for every protected
    route, and dependency resolution on each request costs more than the point read it guards.
    """
    path: str = scope["path"]
    if state.users is None or not path.startswith(PROTECTED_PREFIXES):
        return
    user = cached_basic(state, scope) or await authenticate(state, scope)
    scope[USER_KEY] = user
    if path.startswith(ADMIN_PREFIX) and user not in state.admins:
        raise refuse(state, scope, 403, "not_admin", user,
                     f"user '{user}' may not call admin endpoints (admins: [security] admin_users)",
                     verified_name=True)
