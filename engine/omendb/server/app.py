"""The FastAPI application (routes, error handlers) and the request guard in front of it."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

import omendb
from omendb.server import errors
from omendb.server.middleware import RequestGuard
from omendb.server.models import UpsertRequest
from omendb.server.replica import Replication
from omendb.server.routes import admin, auth, backup, health, records, replication
from omendb.server.state import ServerState

DESCRIPTION = """OmenDB: int64 keys to float64 values, durable on write, with a learned index.

Authenticate with HTTP Basic (users of the htpasswd file) or `Authorization: Bearer <token>` from
`POST /auth/login`. Errors are `{"error": {"code": ..., "message": ...}}`. `/health` and `/ready` need no
authentication; Prometheus metrics are on their own port."""


def build_app(state: ServerState,
              lifespan: Callable[[FastAPI], AbstractAsyncContextManager[Any]] | None = None) -> FastAPI:
    app = FastAPI(title="OmenDB", version=omendb.__version__, description=DESCRIPTION,
                  openapi_url="/openapi.json", docs_url="/docs", redoc_url=None, lifespan=lifespan)
    app.state.omendb = state
    errors.install(app)
    app.include_router(health.build_router(state), tags=["health"])
    app.include_router(records.build_router(state), tags=["records"])
    app.include_router(auth.build_router(state), tags=["auth"])
    app.include_router(admin.build_router(state), tags=["admin"])
    app.include_router(backup.build_router(state), tags=["backup"])
    state.replication = Replication(state)
    app.include_router(replication.build_router(state, state.replication), tags=["replication"])
    state.metrics.registry.register(replication.ReplicationCollector(state, state.replication))
    _document_bodies(app, [UpsertRequest])
    return app


def build_asgi(state: ServerState,
               lifespan: Callable[[FastAPI], AbstractAsyncContextManager[Any]] | None = None) -> RequestGuard:
    """What uvicorn serves: the request guard in front of the FastAPI app.

    The guard sits outside FastAPI (not in its middleware stack) so that what it answers by itself —
    refusals by a limit or authentication, and single-key reads — skips the framework's layers entirely.
    """
    return RequestGuard(build_app(state, lifespan), state)


def _document_bodies(app: FastAPI, models: list[type[BaseModel]]) -> None:
    """Add the schemas of bodies that routes parse themselves (see bodies.py) to the OpenAPI components."""
    default = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = default()
            schemas = spec.setdefault("components", {}).setdefault("schemas", {})
            for model in models:
                schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
                for name, sub in schema.pop("$defs", {}).items():
                    schemas.setdefault(name, sub)
                schemas[model.__name__] = schema
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


