"""``AsyncClient``: ``Client`` for asyncio code. Every method of ``Client`` is here under the same name,
as a coroutine (``iter_range`` is an async iterator, ``async with`` closes it). Only the driving differs;
what each call sends and returns is in ``ops.py``."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Mapping
from typing import Any, TypeVar

import httpx
import numpy as np

from omendb.client import ops
from omendb.client.config import Settings, settings_from_args, settings_from_env
from omendb.client.errors import ClientError, error_from_response
from omendb.client.transport import (
    Attempts,
    build_request,
    client_options,
    decode,
    new_request_id,
    transport_error,
)

T = TypeVar("T")


class AsyncClient:
    """``Client`` for asyncio: the same constructor, methods and results, awaited."""

    def __init__(self, url: str | None = None, *, settings: Settings | None = None, **options: Any) -> None:
        """The arguments of ``Client``."""
        if settings is None:
            if url is None:
                raise TypeError("AsyncClient needs a url (or settings=..., or use AsyncClient.from_env())")
            settings = settings_from_args(url, **options)
        self.settings = settings
        self._verify = settings.ssl_verify()
        self._limits = ops.Limits(settings.max_batch_size)
        self._endpoints: dict[str, httpx.AsyncClient] = {}
        self._rng = random.Random()
        self._closed = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> AsyncClient:
        """A client configured by OMENDB_URL, OMENDB_READ_URL, OMENDB_USER/OMENDB_PASSWORD or
        OMENDB_CREDENTIALS_FILE, OMENDB_CA_FILE, OMENDB_AUTH, OMENDB_TIMEOUT, OMENDB_RETRIES."""
        return cls(settings=settings_from_env(environ, **overrides))

    # ---- driving -------------------------------------------------------------------------------------

    def _endpoint(self, base_url: str) -> httpx.AsyncClient:
        http = self._endpoints.get(base_url)
        if http is None:
            if self._closed:
                raise ClientError("the client is closed", code="closed")
            http = httpx.AsyncClient(**client_options(self.settings, base_url, self._verify))
            self._endpoints[base_url] = http
        return http

    async def _once(self, base_url: str, call: ops.Call, request_id: str) -> Any:
        http = self._endpoint(base_url)
        try:
            response = await http.send(build_request(http, call, request_id))
        except httpx.TransportError as exc:
            raise transport_error(exc, base_url) from exc
        return decode(response)

    async def _send(self, call: ops.Call) -> Any:
        attempts = Attempts(self.settings, call, self._rng)
        while True:
            try:
                return await self._once(attempts.base, call, attempts.request_id)
            except ClientError as exc:
                delay = attempts.after(exc)
            if delay:
                await asyncio.sleep(delay)

    async def _run(self, op: ops.Op[T]) -> T:
        try:
            call = next(op)
            while True:
                error: ClientError | None = None
                try:
                    answer = await self._send(call)
                except ClientError as exc:
                    error = exc
                call = op.send(answer) if error is None else op.throw(error)
        except StopIteration as stop:
            return stop.value

    @contextlib.asynccontextmanager
    async def stream(self, method: str, path: str, *, params: Mapping[str, Any] | None = None,
                     json: Any = None) -> AsyncIterator[httpx.Response]:
        """A raw, streaming request to the primary (see ``Client.stream``)."""
        http = self._endpoint(self.settings.url)
        try:
            async with http.stream(method, path, params=params, json=json,
                                   headers={"x-request-id": new_request_id()}) as response:
                if response.status_code >= 300:
                    await response.aread()
                    raise error_from_response(response.status_code, response.content, response.headers)
                yield response
        except httpx.TransportError as exc:
            raise transport_error(exc, self.settings.url) from exc

    # ---- the Database API ----------------------------------------------------------------------------

    async def put_many(self, keys: Any, values: Any) -> int:
        """Upsert a batch; returns its LSN. Batches over the server's limit are split (see PartialWrite)."""
        return await self._run(ops.put_many(self._limits, keys, values))

    async def put(self, key: int, value: float) -> int:
        return await self.put_many([key], [value])

    async def delete_many(self, keys: Any) -> int:
        """Delete keys (absent keys are ignored); returns the batch's LSN."""
        return await self._run(ops.delete_many(self._limits, keys))

    async def get(self, key: Any) -> float | None:
        return await self._run(ops.get(key))

    async def get_many(self, keys: Any) -> tuple[np.ndarray, np.ndarray]:
        """(values, found) for each key; values are 0.0 where not found."""
        return await self._run(ops.get_many(self._limits, keys))

    async def range(self, start: Any, end: Any = None, limit: int | None = None) \
            -> tuple[np.ndarray, np.ndarray]:
        """Records with start <= key < end (end None = no upper bound), ascending, at most ``limit``, as
        (keys, values) arrays — following the server's cursor page by page until done."""
        return await self._run(ops.range_all(start, end, limit, self.settings.page_size))

    def iter_range(self, start: Any = None, end: Any = None, page_size: int | None = None) \
            -> AsyncIterator[tuple[np.ndarray, np.ndarray]]:
        """Pages of (keys, values) arrays over [start, end), fetched lazily one request at a time
        (``async for``). Arguments are checked now, not at the first page."""
        size = self.settings.page_size if page_size is None else page_size
        lo, hi, _, page = ops.check_range(start, end, None, size)
        return self._pages(lo, hi, page)

    async def _pages(self, lo: int | None, hi: int | None, page: int) \
            -> AsyncIterator[tuple[np.ndarray, np.ndarray]]:
        if ops.empty_range(lo, hi, None):
            return
        cursor: str | None = None
        while True:
            keys, values, cursor = await self._run(ops.range_page(lo, hi, page, cursor))
            if len(keys):
                yield keys, values
            if cursor is None:
                return

    async def count(self) -> int:
        return await self._run(ops.count())

    async def lsn(self) -> int:
        return await self._run(ops.lsn())

    async def stats(self) -> dict[str, Any]:
        return await self._run(ops.stats(self._limits))

    async def index_stats(self) -> dict[str, Any]:
        return await self._run(ops.index_stats())

    async def retrain_index(self) -> dict[str, Any]:
        return await self._run(ops.admin("retrain-index"))

    async def rebuild_index(self) -> dict[str, Any]:
        return await self._run(ops.admin("rebuild-index"))

    async def checkpoint(self) -> int:
        return await self._run(ops.checkpoint())

    async def ready(self) -> bool:
        """True when the primary answers /ready with 200 (no retries)."""
        return await self._run(ops.ready())

    async def close(self) -> None:
        self._closed = True
        for http in self._endpoints.values():
            await http.aclose()
        self._endpoints.clear()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
