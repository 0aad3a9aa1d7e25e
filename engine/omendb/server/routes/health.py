"""``/health`` (liveness) and ``/ready`` (readiness): open to probes, no authentication.

Liveness reports the last result of the periodic engine check (WAL and data directory writable, engine
not failed), run every ``[monitoring] health_check_interval_ms``; a server still recovering is alive.
Readiness is 503 with the reason until recovery and index load finish, during shutdown, and while the WAL
volume is full (liveness stays 200 then: a restart frees no space).
"""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from omendb.server.bodies import JSONRoute
from omendb.server.errors import error_response
from omendb.server.models import Status, error_responses
from omendb.server.routes.records import _json
from omendb.server.state import Phase, ServerState


def build_router(state: ServerState) -> APIRouter:
    router = APIRouter(route_class=JSONRoute)

    @router.get("/health", response_model=Status, responses=error_responses(503), summary="Liveness")
    async def health() -> Response:
        if state.phase is Phase.FAILED:
            return error_response(503, "failed", state.reason)
        if not state.healthy:
            return error_response(503, "unhealthy", state.health_error)
        return _json({"status": "ok", "phase": state.phase.value})

    @router.get("/ready", response_model=Status, responses=error_responses(503), summary="Readiness")
    async def ready() -> Response:
        if state.phase is Phase.READY and state.healthy and state.storage_full:
            return error_response(503, "insufficient_storage", f"{state.storage_full}; free space on the "
                                  f"volume or expand it", {"Retry-After": "1"})
        lagging = state.replication.not_ready_reason() if state.replication is not None else None
        if state.phase is Phase.READY and state.healthy and lagging is not None:
            return error_response(503, "replica_lagging", lagging, {"Retry-After": "1"})
        if state.phase is Phase.READY and state.healthy:
            return _json({"status": "ready", "database": state.config.database.name})
        reason = state.reason if state.healthy else state.health_error
        return error_response(503, state.phase.value if state.healthy else "unhealthy", reason,
                              {"Retry-After": "1"})

    return router
