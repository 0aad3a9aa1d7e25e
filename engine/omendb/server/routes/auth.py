"""``POST /auth/login``: trade a user name and password (JSON body or HTTP Basic) for a bearer token;
``POST /auth/logout``: end the calling bearer session."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from omendb.server.auth import ANONYMOUS, USER_KEY, check_password, header, parse_basic, refuse, session_of
from omendb.server.bodies import JSONRoute
from omendb.server.errors import APIError
from omendb.server.models import LoginRequest, LoginResult, error_responses
from omendb.server.routes.records import _json
from omendb.server.state import ServerState


def _auth_disabled() -> APIError:
    return APIError(400, "auth_disabled", "authentication is disabled ([security] auth_enabled = false or "
                                          "OMENDB_AUTH_DISABLED); no token is needed")


def build_router(state: ServerState) -> APIRouter:
    router = APIRouter(prefix="/auth", route_class=JSONRoute)

    @router.post("/login", response_model=LoginResult, responses=error_responses(400, 401, 422, 429),
                 summary="Get a session token (expires after [security] session_timeout_seconds)")
    async def login(request: Request, body: LoginRequest | None = None) -> Response:
        if state.users is None:
            raise _auth_disabled()
        credentials: str | None = None  # as HTTP Basic sent them, if it did: the credential cache's key
        if body is not None:
            user, password = body.username, body.password
        else:
            scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
            parsed = parse_basic(credentials) if scheme.lower() == "basic" else None
            if parsed is None:
                raise refuse(state, request.scope, 401, "missing_credentials", ANONYMOUS,
                             'send {"username": ..., "password": ...} or HTTP Basic credentials')
            user, password = parsed
            credentials = credentials.strip()
        credential = await check_password(state, request.scope, user, password, credentials)
        request.scope[USER_KEY] = user
        token = state.sessions.create(user, credential)
        return _json({"token": token, "token_type": "Bearer",
                      "expires_in": state.config.security.session_timeout_seconds})

    @router.post("/logout", status_code=204, response_class=Response, responses=error_responses(400, 401),
                 summary="End the calling session (its bearer token stops working at once)")
    async def logout(request: Request) -> Response:
        if state.users is None:
            raise _auth_disabled()
        scheme, _, token = header(request.scope, b"authorization").partition(" ")
        if scheme.lower() != "bearer":
            raise APIError(400, "no_session", "logout ends a session: send 'Authorization: Bearer <token>' "
                                              "from POST /auth/login (HTTP Basic has no session to end; "
                                              "stop sending the credentials)")
        token = token.strip()
        request.scope[USER_KEY] = session_of(state, request.scope, token)
        state.sessions.revoke(token)
        return Response(status_code=204)

    return router
