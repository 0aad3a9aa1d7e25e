"""``/admin/*``: index maintenance and checkpoints, for ``[security] admin_users`` only."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter
from starlette.responses import Response

from omendb.server.bodies import JSONRoute
from omendb.server.models import error_responses
from omendb.server.routes.records import _json
from omendb.server.state import ServerState


def build_router(state: ServerState) -> APIRouter:
    # Authentication and the admin check happen before routing (auth.gate).
    router = APIRouter(prefix="/admin", responses=error_responses(401, 403, 503), route_class=JSONRoute)

    async def timed(fn_name: str) -> Response:
        db = state.ready_db()
        started = time.perf_counter()
        result: Any = await state.run_io(getattr(db, fn_name))
        body: dict[str, Any] = {"status": "ok", "seconds": round(time.perf_counter() - started, 6)}
        if isinstance(result, dict):
            body.update(result)
        body["lsn"] = await state.run(db.lsn)
        return _json(body)

    @router.post("/retrain-index", summary="Merge the delta and retrain the learned index now")
    async def retrain() -> Response:
        return await timed("retrain_index")

    @router.post("/rebuild-index", summary="Rebuild the learned index from scratch (frees memory)")
    async def rebuild() -> Response:
        return await timed("rebuild_index")

    @router.post("/checkpoint", summary="Write a checkpoint now")
    async def checkpoint() -> Response:
        return await timed("checkpoint")

    @router.get("/index-stats", summary="Learned index statistics")
    async def index_stats() -> Response:
        db = state.ready_db()
        return _json(await state.run(db.index_stats))

    return router
