"""Each client method once, as a generator that yields HTTP calls and receives their decoded JSON (or has
the call's typed error thrown into it). The synchronous and the asyncio client only drive these
generators, so both have exactly the same behaviour: argument checks (the embedded engine's own),
batch splitting, cursor following, the answers' decoding.
"""

from __future__ import annotations

import re
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote

import numpy as np
import orjson

from omendb import errors as engine_errors
from omendb.client.errors import ClientError, NotFound, PartialWrite, TooLarge, as_client_error
from omendb.client.retry import Kind
from omendb.validation import as_key as _as_key
from omendb.validation import as_keys as _as_keys
from omendb.validation import as_values as _as_values

T = TypeVar("T")

MAX_PAGE = 100_000  # the server's largest range page
_LIMIT_IN_MESSAGE = re.compile(r"max_insert_batch_size\s*=\s*(\d+)")


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    kind: Kind
    params: dict[str, Any] | None = None
    body: bytes | None = None
    read: bool = False  # may be served by the read-only Service
    retry: bool = True  # False: one try only (probes)


Op = Generator[Call, Any, T]


class Limits:
    """What the client learned about the server's limits (shared by all calls of one client)."""

    def __init__(self, max_batch_size: int) -> None:
        self.max_batch_size = max_batch_size

    def learn(self, error: TooLarge, tried: int) -> int | None:
        """The batch size to try after ``tried`` records were refused with 413, or None if it cannot be
        split further. The server's message names [limits] max_insert_batch_size; a body over
        [http] max_body_mb names no record count, so the batch is halved."""
        found = _LIMIT_IN_MESSAGE.search(error.message)
        size = int(found.group(1)) if error.code == "batch_too_large" and found else tried // 2
        if size < 1 or size >= tried:
            return None
        self.max_batch_size = min(self.max_batch_size, size)
        return size

    def learn_from_stats(self, stats: dict[str, Any]) -> None:
        # Forward-compatible: when the server reports its limits in /v1/stats, use them up front.
        limits = stats.get("limits") if isinstance(stats.get("limits"), dict) else stats
        value = limits.get("max_insert_batch_size") if isinstance(limits, dict) else None
        if isinstance(value, int) and value > 0:
            self.max_batch_size = value


def _checked(fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except engine_errors.InvalidInput as exc:
        raise as_client_error(exc) from None


def _json(payload: Any) -> bytes:
    return orjson.dumps(payload)


def encode_records(keys: np.ndarray, values: np.ndarray) -> bytes:
    return _json({"records": [{"key": k, "value": v}
                              for k, v in zip(keys.tolist(), values.tolist(), strict=True)]})


def encode_keys(keys: np.ndarray) -> bytes:
    return _json({"keys": keys.tolist()})


def decode_page(records: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    keys = np.array([r["key"] for r in records], dtype=np.int64)
    values = np.array([r["value"] for r in records], dtype=np.float64)
    return keys, values


# ---- writes ------------------------------------------------------------------------------------------


def _split_write(limits: Limits, path: str, keys: np.ndarray, values: np.ndarray | None) -> Op[int]:
    """One request per part of at most the server's batch limit, in order. A batch within the limit is
    one atomic write, as in the engine; a larger one becomes several, each atomic, and a failure after
    the first part raises PartialWrite saying how much was applied."""
    n = len(keys)
    if n == 0:  # the engine answers its current LSN for an empty batch; the server refuses empty bodies
        return (yield from lsn())
    done, last_lsn = 0, None
    while done < n:
        size = min(limits.max_batch_size, n - done)
        part = slice(done, done + size)
        body = encode_keys(keys[part]) if values is None else encode_records(keys[part], values[part])
        try:
            answer = yield Call("POST", path, Kind.WRITE, body=body)
        except TooLarge as exc:
            if limits.learn(exc, size) is not None:
                continue
            if done:
                raise PartialWrite(f"{done} of {n} records were written (through LSN {last_lsn}); the next "
                                   f"part was refused: {exc.message}", applied=done, lsn=last_lsn,
                                   cause=exc) from exc
            raise
        except ClientError as exc:
            if done:
                raise PartialWrite(f"{done} of {n} records were written (through LSN {last_lsn}); the next "
                                   f"part failed: {exc}", applied=done, lsn=last_lsn, cause=exc) from exc
            raise
        last_lsn = int(answer["lsn"])
        done += size
    assert last_lsn is not None
    return last_lsn


def put_many(limits: Limits, keys: Any, values: Any) -> Op[int]:
    k = _checked(_as_keys, keys)
    v = _checked(_as_values, values, len(k))
    return (yield from _split_write(limits, "/v1/records", k, v))


def delete_many(limits: Limits, keys: Any) -> Op[int]:
    return (yield from _split_write(limits, "/v1/records/delete", _checked(_as_keys, keys), None))


# ---- reads -------------------------------------------------------------------------------------------


def get(key: Any) -> Op[float | None]:
    k = _checked(_as_key, key)
    try:
        answer = yield Call("GET", f"/v1/records/{k}", Kind.READ, read=True)
    except NotFound as exc:
        if exc.code == "not_found" and "no such endpoint" not in exc.message:
            return None
        raise
    return float(answer["value"])


def get_many(limits: Limits, keys: Any) -> Op[tuple[np.ndarray, np.ndarray]]:
    q = _checked(_as_keys, keys)
    values = np.zeros(len(q), dtype=np.float64)
    found = np.zeros(len(q), dtype=bool)
    done = 0
    while done < len(q):
        size = min(limits.max_batch_size, len(q) - done)
        try:
            body = encode_keys(q[done:done + size])
            answer = yield Call("POST", "/v1/records/lookup", Kind.READ, body=body, read=True)
        except TooLarge as exc:
            if limits.learn(exc, size) is None:
                raise
            continue
        # numpy turns null into NaN; stored values are always finite, so NaN marks an absent key.
        got = np.array([r["value"] for r in answer["records"]], dtype=np.float64)
        hit = ~np.isnan(got)
        found[done:done + size] = hit
        values[done:done + size] = np.where(hit, got, 0.0)
        done += size
    return values, found


def range_page(start: int | None, end: int | None, page: int, cursor: str | None) \
        -> Op[tuple[np.ndarray, np.ndarray, str | None]]:
    params: dict[str, Any] = {"limit": page}
    if cursor is not None:
        params["cursor"] = cursor
    elif start is not None:
        params["start"] = start
    if end is not None:
        params["end"] = end
    answer = yield Call("GET", "/v1/records", Kind.READ, params=params, read=True)
    keys, values = decode_page(answer["records"])
    return keys, values, answer.get("next_cursor")


def check_range(start: Any, end: Any, limit: Any, page_size: Any) \
        -> tuple[int | None, int | None, int | None, int]:
    lo = None if start is None else _checked(_as_key, start)
    hi = None if end is None else _checked(_as_key, end)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise as_client_error(engine_errors.InvalidInput(
            f"limit must be a non-negative integer, got {limit!r}"))
    if isinstance(page_size, bool) or not isinstance(page_size, int) or not 1 <= page_size <= MAX_PAGE:
        raise as_client_error(engine_errors.InvalidInput(
            f"page_size must be an integer in 1..{MAX_PAGE}, got {page_size!r}"))
    return lo, hi, limit, page_size


def empty_range(lo: int | None, hi: int | None, limit: int | None) -> bool:
    return limit == 0 or (lo is not None and hi is not None and hi <= lo)


def range_all(start: Any, end: Any, limit: int | None, page_size: int) -> Op[tuple[np.ndarray, np.ndarray]]:
    """The embedded ``range``: every record of [start, end) (at most ``limit``) as two arrays, fetched a
    page at a time along the server's cursor."""
    lo, hi, limit, page_size = check_range(start, end, limit, page_size)
    keys_parts: list[np.ndarray] = []
    values_parts: list[np.ndarray] = []
    if empty_range(lo, hi, limit):
        return np.zeros(0, np.int64), np.zeros(0, np.float64)
    remaining, cursor = limit, None
    while True:
        page = page_size if remaining is None else min(page_size, remaining)
        keys, values, cursor = yield from range_page(lo, hi, page, cursor)
        keys_parts.append(keys)
        values_parts.append(values)
        if remaining is not None:
            remaining -= len(keys)
        if cursor is None or remaining == 0:
            break
    return np.concatenate(keys_parts), np.concatenate(values_parts)


# ---- introspection and admin -------------------------------------------------------------------------


def stats(limits: Limits) -> Op[dict[str, Any]]:
    answer: dict[str, Any] = yield Call("GET", "/v1/stats", Kind.READ)
    limits.learn_from_stats(answer)
    return answer


def count() -> Op[int]:
    answer = yield Call("GET", "/v1/stats", Kind.READ, read=True)
    return int(answer["records"])


def lsn() -> Op[int]:
    answer = yield Call("GET", "/v1/stats", Kind.READ)
    return int(answer["lsn"])


def index_stats() -> Op[dict[str, Any]]:
    answer: dict[str, Any] = yield Call("GET", "/admin/index-stats", Kind.READ)
    return answer


def admin(action: str) -> Op[dict[str, Any]]:
    answer: dict[str, Any] = yield Call("POST", f"/admin/{quote(action)}", Kind.ADMIN)
    return answer


def checkpoint() -> Op[int]:
    """The checkpoint's LSN, as the engine returns. The server's answer carries the visible LSN; the
    checkpoint LSN is read from /v1/stats unless the answer has it."""
    answer = yield from admin("checkpoint")
    if "checkpoint_lsn" in answer:
        return int(answer["checkpoint_lsn"])
    after = yield Call("GET", "/v1/stats", Kind.READ)
    return int(after["checkpoint_lsn"])


def ready() -> Op[bool]:
    try:
        yield Call("GET", "/ready", Kind.READ, retry=False)
    except ClientError as exc:
        if exc.status == 503:
            return False
        raise
    return True
