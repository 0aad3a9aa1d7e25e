"""``/v1/records``: upsert, get, batch lookup, range scan with a cursor, deletes; and ``/v1/stats``."""

from __future__ import annotations

import base64
import binascii
import re
import struct
import time
from collections.abc import Callable
from typing import Annotated, Any

import numpy as np
import orjson
from fastapi import APIRouter, Path, Query, Request
from pydantic import BeforeValidator
from starlette.responses import Response

import omendb
from omendb.server.bodies import JSONRoute, body_schema, parse_records
from omendb.server.errors import APIError, error_body
from omendb.server.models import (
    INT64_MAX,
    INT64_MIN,
    Key,
    KeysRequest,
    LookupResult,
    RangePage,
    Record,
    UpsertRequest,
    WriteResult,
    error_responses,
)
from omendb.server.state import ServerState

MAX_PAGE = 100_000
# A range scan reads the engine in slices this big, checking [limits] max_query_duration_ms in between.
SCAN_SLICE = 8192

_DECIMAL = re.compile(r"-?[0-9]+")


def _plain_decimal(raw: Any) -> Any:
    # Python's int() (and pydantic's lax mode) take "+5", " 5", "5 " and "1_000"; a key in the path is
    # only digits with an optional '-', so each key has one spelling (leading zeros aside) and "/v1/records/+5"
    # is a 400, not key 5. Same rule as PointReader.parse_key on the fast path.
    if isinstance(raw, str) and not _DECIMAL.fullmatch(raw):
        raise ValueError("not a plain decimal integer")
    return raw


KeyPath = Annotated[Key, BeforeValidator(_plain_decimal),
                    Path(description="A signed 64-bit integer key, in decimal.")]


def _json(payload: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY), status_code=status,
                    media_type="application/json")


# A cursor carries the scan's start and end along with the next key, and is checked against the request's
# start/end: a forged or edited cursor cannot move the scan outside [start, end), and a cursor reused with
# other start/end is refused. A bound the request leaves out is the cursor's (clients may send the cursor
# alone with end, as omendb.client does); the next key must still lie inside the scan's bounds. No secret
# is involved, so any pod behind a Service accepts another's cursor (an HMAC under a per-process key would
# not survive a restart or a load-balanced next page).
_CURSOR = struct.Struct(">Bqqq")  # version | has_end, start, end (0 when open), next
_CURSOR_V1 = 0x10
_HAS_END = 0x01


def encode_cursor(start: int, end: int | None, next_key: int) -> str:
    flags = _CURSOR_V1 | (_HAS_END if end is not None else 0)
    raw = _CURSOR.pack(flags, start, 0 if end is None else end, next_key)
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(cursor: str, start: int | None, end: int | None) -> tuple[int, int, int | None]:
    """(next key, start, end) of a cursor used with the request's start/end (None: not given), or a 400
    saying why the cursor is refused."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    except (binascii.Error, ValueError):
        raw = b""
    canonical = base64.urlsafe_b64encode(raw).rstrip(b"=").decode() == cursor
    if not canonical or len(raw) != _CURSOR.size or raw[0] & ~_HAS_END != _CURSOR_V1:
        raise APIError(400, "invalid_cursor", "cursor is not one this server returned as next_cursor; start "
                                              "again without it")
    flags, c_start, c_end, next_key = _CURSOR.unpack(raw)
    c_end_or_none = c_end if flags & _HAS_END else None
    if (start is not None and start != c_start) or (end is not None and end != c_end_or_none):
        raise APIError(400, "invalid_cursor", f"cursor belongs to a scan of start={c_start}, end="
                                              f"{'(none)' if c_end_or_none is None else c_end_or_none}, not "
                                              f"start={'(none)' if start is None else start}, end="
                                              f"{'(none)' if end is None else end}; pass the same start and "
                                              "end with every page")
    if next_key < c_start or (c_end_or_none is not None and next_key >= c_end_or_none):
        raise APIError(400, "invalid_cursor", f"cursor points at key {next_key}, outside the scan's "
                                              "[start, end); use next_cursor exactly as returned")
    return next_key, c_start, c_end_or_none


class PointReader:
    """``GET /v1/records/{key}``, shared by the route and the request guard's fast path (middleware.py).

    A point read is an in-memory lookup of a few microseconds that never waits for I/O, so it runs on the
    event loop: a hop to the worker pool would cost more than the lookup itself.
    """

    ROUTE = "/v1/records/{key}"
    PREFIX = "/v1/records/"

    def __init__(self, state: ServerState) -> None:
        self.state = state
        m = state.metrics
        # Lock-free tallies of omendb_query_duration_seconds, omendb_searches and omendb_search_failures
        # for operation="get", folded into them at scrape time (tallies.py): every caller is on the loop.
        self.duration = m.tally_histogram(m.query_duration.labels("get"))
        self.searches = m.tally_counter(m.searches.labels("get"))
        self.failures = m.tally_counter(m.search_failures.labels("get"))

    @staticmethod
    def parse_key(path: str) -> int | None:
        """The key of a well-formed ``/v1/records/<int64>`` path, else None (FastAPI then explains)."""
        text = path[len(PointReader.PREFIX):]
        digits = text[1:] if text.startswith("-") else text
        if not digits.isdigit() or not digits.isascii() or len(digits) > 19:
            return None
        key = int(text)
        return key if INT64_MIN <= key <= INT64_MAX else None

    def read(self, key: int) -> tuple[int, bytes]:
        db = self.state.ready_db()
        started = time.perf_counter()
        try:
            value = db.get(key)
        except Exception:
            self.failures.count += 1
            raise
        self.duration.observe(time.perf_counter() - started)
        self.searches.count += 1
        if value is None:
            return 404, error_body("not_found", f"no record with key {key}")
        return 200, orjson.dumps({"key": key, "value": value})


def build_router(state: ServerState) -> APIRouter:
    # Authentication happens before routing (auth.gate); the 401 is documented here.
    router = APIRouter(prefix="/v1", responses=error_responses(401, 422, 503), route_class=JSONRoute)
    limits = state.config.limits
    m = state.metrics
    point_reader = state.point_reader = PointReader(state)
    query_time = {op: m.query_duration.labels(op) for op in ("get", "lookup", "range")}
    searches = {op: m.searches.labels(op) for op in ("get", "lookup", "range")}
    search_failures = {op: m.search_failures.labels(op) for op in ("get", "lookup", "range")}
    write_time = {op: m.insert_duration.labels(op) for op in ("upsert", "delete")}
    writes = {op: m.inserts.labels(op) for op in ("upsert", "delete")}
    write_failures = {op: m.insert_failures.labels(op) for op in ("upsert", "delete")}

    def check_batch(n: int, what: str) -> None:
        if n > limits.max_insert_batch_size:
            raise APIError(413, "batch_too_large", f"{n} {what} in one request is more than [limits] "
                                                   f"max_insert_batch_size = {limits.max_insert_batch_size}; "
                                                   "split it into smaller batches")
        if n == 0:
            raise APIError(422, "invalid_request", f"no {what} given; send at least one")

    async def read(op: str, fn: Callable[..., Any], *args: Any) -> Any:
        started = time.perf_counter()
        try:
            result = await state.run(fn, *args)
        except Exception:
            search_failures[op].inc()
            raise
        query_time[op].observe(time.perf_counter() - started)
        searches[op].inc()
        return result

    async def write(op: str, n: int, fn: Callable[..., int], *args: Any) -> int:
        started = time.perf_counter()
        try:
            lsn = await state.run(fn, *args)
        except Exception:
            write_failures[op].inc()
            raise
        write_time[op].observe(time.perf_counter() - started)
        writes[op].inc(n)
        return lsn

    @router.post("/records", response_model=WriteResult, responses=error_responses(413, 507),
                 summary="Upsert a batch of records (one atomic, durable write)",
                 openapi_extra=body_schema(UpsertRequest))
    async def upsert(request: Request) -> Response:
        db = state.ready_db()
        keys, values = parse_records(await request.body(), request.headers.get("content-type", ""),
                                     limits.max_insert_batch_size)
        lsn = await write("upsert", len(keys), db.put_many, keys, values)
        return _json({"lsn": lsn, "count": len(keys)})

    @router.get("/records/{key}", response_model=Record, responses=error_responses(400, 404),
                summary="Get one record")
    async def get_record(key: KeyPath) -> Response:
        status, body = point_reader.read(key)
        return Response(body, status_code=status, media_type="application/json")

    @router.post("/records/lookup", response_model=LookupResult, responses=error_responses(413),
                 summary="Get many records; value is null for absent keys")
    async def lookup(body: KeysRequest) -> Response:
        db = state.ready_db()
        check_batch(len(body.keys), "keys")
        keys = np.asarray(body.keys, dtype=np.int64)
        values, found = await read("lookup", db.get_many, keys)
        records = [{"key": k, "value": v if f else None}
                   for k, v, f in zip(body.keys, values.tolist(), found.tolist(), strict=True)]
        return _json({"records": records})

    @router.get("/records", response_model=RangePage, responses=error_responses(400),
                summary="Scan keys in [start, end) in ascending order, a page at a time")
    async def scan(
        start: Annotated[int | None, Query(ge=INT64_MIN, le=INT64_MAX,
                                           description="First key (inclusive); default the smallest")] = None,
        end: Annotated[int | None, Query(ge=INT64_MIN, le=INT64_MAX,
                                         description="Last key (exclusive); default unbounded")] = None,
        limit: Annotated[int | None, Query(ge=1, le=MAX_PAGE, description="Records per page; default "
                                           "[performance] prefetch_size")] = None,
        cursor: Annotated[str | None, Query(max_length=64, description="next_cursor of the previous "
                                                                       "page")] = None,
    ) -> Response:
        db = state.ready_db()
        if cursor:
            position, first, end = decode_cursor(cursor, start, end)
        else:
            position = first = INT64_MIN if start is None else start
        page = limit or state.config.performance.prefetch_size
        started = time.perf_counter()
        try:
            keys, values = await _scan(db, position, end, page + 1, started)
        except Exception:
            search_failures["range"].inc()
            raise
        query_time["range"].observe(time.perf_counter() - started)
        searches["range"].inc()
        next_cursor = encode_cursor(first, end, keys[page]) if len(keys) > page else None
        records = [{"key": k, "value": v} for k, v in zip(keys[:page], values[:page], strict=True)]
        return _json({"records": records, "next_cursor": next_cursor})

    async def _scan(db: Any, position: int, end: int | None, want: int,
                    started: float) -> tuple[list[int], list[float]]:
        budget = limits.max_query_duration_ms / 1000
        keys: list[int] = []
        values: list[float] = []
        while len(keys) < want and (end is None or position < end):
            ask = min(SCAN_SLICE, want - len(keys))
            k, v = await state.run(db.range, position, end, ask)
            keys += k.tolist()
            values += v.tolist()
            if len(k) < ask or keys[-1] == INT64_MAX:
                break
            position = keys[-1] + 1
            elapsed = time.perf_counter() - started
            if elapsed > budget and len(keys) < want:
                raise APIError(503, "query_timeout",
                               f"the range scan ran past [limits] max_query_duration_ms = "
                               f"{limits.max_query_duration_ms} after {len(keys)} records; ask for a smaller "
                               "limit and follow next_cursor, or narrow start/end")
        return keys, values

    @router.delete("/records/{key}", response_model=WriteResult, responses=error_responses(400),
                   summary="Delete one record (idempotent)")
    async def delete_record(key: KeyPath) -> Response:
        db = state.ready_db()
        lsn = await write("delete", 1, db.delete_many, np.asarray([key], dtype=np.int64))
        return _json({"lsn": lsn, "count": 1})

    @router.post("/records/delete", response_model=WriteResult, responses=error_responses(413, 507),
                 summary="Delete many records (one atomic, durable write; absent keys are ignored)")
    async def delete_many(body: KeysRequest) -> Response:
        db = state.ready_db()
        check_batch(len(body.keys), "keys")
        lsn = await write("delete", len(body.keys), db.delete_many, np.asarray(body.keys, dtype=np.int64))
        return _json({"lsn": lsn, "count": len(body.keys)})

    @router.get("/stats", summary="Record count, LSN, role, sizes")
    async def stats() -> Response:
        db = state.ready_db()
        engine: dict[str, Any] = await state.run(db.stats)
        out = {**engine, **state.role().describe(), "database": state.config.database.name,
               "version": omendb.__version__}
        if state.archiver is not None:
            out["wal_archive"] = state.archiver.describe(db.lsn())
        if db.isolated is not None:
            out["isolated"] = db.isolated
        return _json(out)

    return router
