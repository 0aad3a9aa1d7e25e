"""``POST /auth/login``: trade a user name and password (JSON body or HTTP Basic) for a bearer token."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from omendb.server.auth import USER_KEY, check_password, parse_basic, refuse
from omendb.server.bodies import JSONRoute
from omendb.server.errors import APIError
from omendb.server.models import LoginRequest, LoginResult, error_responses
from omendb.server.routes.records import _json
from omendb.server.state import ServerState


def build_router(state: ServerState) -> APIRouter:
    router = APIRouter(prefix="/auth", route_class=JSONRoute)

    @router.post("/login", response_model=LoginResult, responses=error_responses(400, 401, 422),
                 summary="Get a session token (expires after [security] session_timeout_seconds)")
    async def login(request: Request, body: LoginRequest | None = None) -> Response:
        if state.users is None:
            raise APIError(400, "auth_disabled", "authentication is disabled ([security] auth_enabled = "
                                                 "false or OMENDB_AUTH_DISABLED); no token is needed")
        if body is not None:
            user, password = body.username, body.password
        else:
            scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
            parsed = parse_basic(credentials) if scheme.lower() == "basic" else None
            if parsed is None:
                raise refuse(state, request, 401, "missing_credentials", "-",
                             'send {"username": ..., "password": ...} or HTTP Basic credentials')
            user, password = parsed
        await check_password(state, request, user, password)
        request.scope[USER_KEY] = user
        token = state.sessions.create(user)
        return _json({"token": token, "token_type": "Bearer",
                      "expires_in": state.config.security.session_timeout_seconds})

    return router
