"""Fast parsing of large write bodies.

A 10,000-record upsert validated through pydantic models costs several times more than the durable write
itself. Valid bodies take a fast path instead (orjson, exact type checks, numpy); anything the fast path
does not accept is handed to the pydantic model, so invalid input still gets its precise error message
and the documented schema stays the single definition of what is valid.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.responses import Response

from omendb.server.errors import APIError
from omendb.server.models import UpsertRequest


class _OrjsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = orjson.loads(await self.body())
        return self._json


class JSONRoute(APIRoute):
    """The route class of every API router: JSON bodies are parsed by orjson, as the upsert fast path does.

    FastAPI's own parser (``json.loads``) takes ``NaN`` literals and answers a body that is not UTF-8 with
    a bare 400; orjson refuses both with a ``JSONDecodeError``, which FastAPI turns into the same
    ``422 invalid_request`` "the body is not valid JSON" answer on every route (see errors.py).
    """

    def get_route_handler(self) -> Any:
        handler = super().get_route_handler()

        async def parse_with_orjson(request: Request) -> Response:
            response: Response = await handler(_OrjsonRequest(request.scope, request.receive))
            return response

        return parse_with_orjson


def body_schema(model: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI ``requestBody`` for a route that reads its body itself (refs resolve in components)."""
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": {
        "$ref": f"#/components/schemas/{model.__name__}"}}}}}


def _invalid(raw: Any, model: type[BaseModel]) -> RequestValidationError:
    try:
        model.model_validate(raw)
    except ValidationError as exc:
        return RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in exc.errors()])
    return RequestValidationError([{"type": "value_error", "loc": ("body",), "msg": "invalid body"}])


def _too_many(n: int, what: str, limit: int) -> APIError:
    return APIError(413, "batch_too_large", f"{n} {what} in one request is more than [limits] "
                                            f"max_insert_batch_size = {limit}; split it into smaller batches")


def parse_records(body: bytes, content_type: str, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """``{"records": [{"key": int, "value": number}, ...]}`` to (int64 keys, float64 values)."""
    if "json" not in content_type:
        raise RequestValidationError([{"type": "model_attributes_type", "loc": ("body",),
                                       "msg": "Input should be a JSON object"}])
    try:
        raw = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise RequestValidationError([{"type": "json_invalid", "loc": ("body", exc.pos), "msg": "JSON decode error",
                                       "ctx": {"error": exc.msg}}]) from None
    records = raw.get("records") if type(raw) is dict and len(raw) == 1 else None
    if type(records) is list:
        if len(records) > limit:
            raise _too_many(len(records), "records", limit)
        try:
            if all(type(r) is dict and len(r) == 2 for r in records):
                keys_list = [r["key"] for r in records]
                values_list = [r["value"] for r in records]
                if all(type(k) is int for k in keys_list) and all(type(v) is float or type(v) is int
                                                                  for v in values_list):
                    keys = np.array(keys_list, dtype=np.int64)
                    values = np.array(values_list, dtype=np.float64)
                    if len(keys) and np.isfinite(values).all():
                        return keys, values
        except (KeyError, OverflowError):
            pass  # an absent field or a key outside int64: the model says exactly which
    if type(raw) is dict and type(raw.get("records")) is list and not raw["records"]:
        raise APIError(422, "invalid_request", "no records given; send at least one")
    raise _invalid(raw, UpsertRequest)
