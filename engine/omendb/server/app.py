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
from omendb.server.models import INT64_MAX, INT64_MIN, UpsertRequest
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
            app.openapi_schema = exact_int_bounds(spec)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]




def exact_int_bounds(node: Any) -> Any:
    """Integer bounds as exact JSON integers, in place.

    FastAPI writes the ``ge``/``le`` of model fields as floats: 2**63 - 1 becomes 9.223372036854776e18,
    which is 2**63 (outside int64) once a client reads it back. Integer schemas get their integers back,
    and int64 keys say ``format: int64``.
    """
    if isinstance(node, dict):
        if node.get("type") == "integer":
            for bound in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
                value = node.get(bound)
                if isinstance(value, float) and value.is_integer():
                    exact = int(value)
                    # float(2**63 - 1) == 2**63: the only float that rounds there is the int64 bound itself
                    node[bound] = INT64_MAX if exact == 2**63 else exact
            if node.get("minimum") == INT64_MIN and node.get("maximum") == INT64_MAX:
                node.setdefault("format", "int64")
        for value in node.values():
            exact_int_bounds(value)
    elif isinstance(node, list):
        for value in node:
            exact_int_bounds(value)
    return node
