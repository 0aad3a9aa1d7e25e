"""Who is calling: HTTP Basic against the htpasswd users, or a bearer token from /auth/login.

Every refusal is logged (user, remote address, path, why) and counted; passwords and tokens never are.
With ``[security] auth_enabled = false`` every caller is the anonymous user with the admin role.
"""

from __future__ import annotations

import base64
import binascii
import logging

from fastapi import Request
from starlette.types import Scope

from omendb.server.errors import APIError
from omendb.server.state import ServerState

log = logging.getLogger("omendb.auth")

ANONYMOUS = "-"
USER_KEY = "omendb.user"  # where the authenticated name is kept in the ASGI scope for the access log
_CHALLENGE = {"WWW-Authenticate": 'Basic realm="omendb", charset="UTF-8"'}


def _remote(request: Request) -> str:
    return request.client.host if request.client else "-"


def refuse(state: ServerState, request: Request, status: int, reason: str, user: str,
           message: str) -> APIError:
    log.warning("auth failure", extra={"status": status, "reason": reason, "user": user,
                                       "remote": _remote(request), "path": request.url.path})
    state.metrics.auth_failures.labels(reason).inc()
    return APIError(status, "unauthorized" if status == 401 else "forbidden", message,
                    _CHALLENGE if status == 401 else None)


def parse_basic(header_value: str) -> tuple[str, str] | None:
    try:
        decoded = base64.b64decode(header_value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None


async def check_password(state: ServerState, request: Request, user: str, password: str) -> None:
    assert state.users is not None
    # A password verified before is checked on the loop (an HMAC); only a new one pays bcrypt, in a thread.
    if state.users.verify_remembered(user, password):
        return
    if not await state.run(state.users.verify, user, password):
        raise refuse(state, request, 401, "bad_credentials", user,
                     "wrong user name or password (users come from [security] htpasswd_file)")


async def authenticate(state: ServerState, request: Request) -> str:
    if state.users is None:
        return ANONYMOUS
    header = request.headers.get("authorization")
    if not header:
        raise refuse(state, request, 401, "missing_credentials", "-",
                     "authentication required: send HTTP Basic credentials or 'Authorization: Bearer "
                     "<token>' from POST /auth/login")
    scheme, _, credentials = header.partition(" ")
    scheme = scheme.lower()
    if scheme == "basic":
        parsed = parse_basic(credentials)
        if parsed is None:
            raise refuse(state, request, 401, "malformed_credentials", "-",
                         "malformed Basic credentials: expected base64 of 'user:password'")
        user, password = parsed
        await check_password(state, request, user, password)
        return user
    if scheme == "bearer":
        session, why = state.sessions.lookup(credentials.strip())
        if session is None:
            message = ("the session token has expired; log in again with POST /auth/login" if why == "expired"
                       else "unknown session token; log in with POST /auth/login")
            raise refuse(state, request, 401, f"{why}_token", "-", message)
        if not state.users.exists(session.user):
            raise refuse(state, request, 401, "user_removed", session.user,
                         "the session's user no longer exists in the htpasswd file")
        return session.user
    raise refuse(state, request, 401, "unsupported_scheme", "-",
                 f"unsupported Authorization scheme '{scheme}'; use Basic or Bearer")


# Paths that need a user; everything else (/health, /ready, /docs, /openapi.json, /auth/login) is open.
PROTECTED_PREFIXES = ("/v1/", "/admin/")
ADMIN_PREFIX = "/admin/"


async def gate(state: ServerState, scope: Scope) -> None:
    """Authenticate (and for /admin authorize) a request before routing; raises APIError with 401/403.

    Done in the ASGI layer rather than as a FastAPI dependency: it is the same check for every protected
    route, and dependency resolution on each request costs more than the point read it guards.
    """
    path: str = scope["path"]
    if state.users is None or not path.startswith(PROTECTED_PREFIXES):
        return
    request = Request(scope)
    user = await authenticate(state, request)
    scope[USER_KEY] = user
    if path.startswith(ADMIN_PREFIX) and user not in state.admins:
        raise refuse(state, request, 403, "not_admin", user,
                     f"user '{user}' may not call admin endpoints (admins: [security] admin_users)")
