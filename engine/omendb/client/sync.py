"""``Client``: the embedded ``Database`` API over HTTP(S), for applications and tools.

Only the driving of calls lives here (sending, retrying, redirecting writes from a read-only server to
the primary); what each method sends and returns is in ``ops.py``, shared with ``AsyncClient``.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Iterator, Mapping
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


class Client:
    """A connection to one OmenDB (primary URL for writes, optionally the read-only Service for reads).

    Thread-safe (one httpx connection pool per server URL). Method names and results are those of
    ``omendb.Database``; see docs/client.md for the few differences a network brings.
    """

    def __init__(self, url: str | None = None, *, settings: Settings | None = None, **options: Any) -> None:
        """``Client(url, read_url=None, username=None, password=None, credentials_file=None, auth=None,
        ca_file=None, verify=True, timeout=30.0, retry=RetryPolicy(), max_batch_size=50000,
        page_size=10000)`` or ``Client(settings=...)``."""
        if settings is None:
            if url is None:
                raise TypeError("Client needs a url (or settings=..., or use Client.from_env())")
            settings = settings_from_args(url, **options)
        self.settings = settings
        self._verify = settings.ssl_verify()
        self._limits = ops.Limits(settings.max_batch_size)
        self._endpoints: dict[str, httpx.Client] = {}
        self._rng = random.Random()
        self._closed = False
        self._lock = threading.Lock()  # guards _endpoints

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Client:
        """A client configured by OMENDB_URL, OMENDB_READ_URL, OMENDB_USER/OMENDB_PASSWORD or
        OMENDB_CREDENTIALS_FILE, OMENDB_CA_FILE, OMENDB_AUTH, OMENDB_TIMEOUT, OMENDB_RETRIES."""
        return cls(settings=settings_from_env(environ, **overrides))

    # ---- driving -------------------------------------------------------------------------------------

    def _endpoint(self, base_url: str) -> httpx.Client:
        http = self._endpoints.get(base_url)
        if http is None:
            with self._lock:
                if self._closed:
                    raise ClientError("the client is closed", code="closed")
                http = self._endpoints.get(base_url)
                if http is None:
                    http = httpx.Client(**client_options(self.settings, base_url, self._verify))
                    self._endpoints[base_url] = http
        return http

    def _once(self, base_url: str, call: ops.Call, request_id: str) -> Any:
        http = self._endpoint(base_url)
        try:
            response = http.send(build_request(http, call, request_id))
        except httpx.TransportError as exc:
            raise transport_error(exc, base_url) from exc
        return decode(response)

    def _send(self, call: ops.Call) -> Any:
        attempts = Attempts(self.settings, call, self._rng)
        while True:
            try:
                return self._once(attempts.base, call, attempts.request_id)
            except ClientError as exc:
                delay = attempts.after(exc)
            if delay:
                time.sleep(delay)

    def _run(self, op: ops.Op[T]) -> T:
        try:
            call = next(op)
            while True:
                error: ClientError | None = None
                try:
                    answer = self._send(call)
                except ClientError as exc:
                    error = exc
                call = op.send(answer) if error is None else op.throw(error)
        except StopIteration as stop:
            return stop.value

    @contextlib.contextmanager
    def stream(self, method: str, path: str, *, params: Mapping[str, Any] | None = None,
               json: Any = None) -> Iterator[httpx.Response]:
        """A raw, streaming request to the primary with this client's credentials and TLS settings, for tools
        that move bulk binary data (backup_tool's online backups, WAL streams). A non-2xx answer raises the
        typed error; the request is not retried (the caller knows whether its operation is restartable)."""
        http = self._endpoint(self.settings.url)
        try:
            with http.stream(method, path, params=params, json=json,
                             headers={"x-request-id": new_request_id()}) as response:
                if response.status_code >= 300:
                    response.read()
                    raise error_from_response(response.status_code, response.content, response.headers)
                yield response
        except httpx.TransportError as exc:
            raise transport_error(exc, self.settings.url) from exc

    # ---- the Database API ----------------------------------------------------------------------------

    def put_many(self, keys: Any, values: Any) -> int:
        """Upsert a batch; returns its LSN. Batches over the server's limit are split (see PartialWrite)."""
        return self._run(ops.put_many(self._limits, keys, values))

    def put(self, key: int, value: float) -> int:
        return self.put_many([key], [value])

    def delete_many(self, keys: Any) -> int:
        """Delete keys (absent keys are ignored); returns the batch's LSN."""
        return self._run(ops.delete_many(self._limits, keys))

    def get(self, key: Any) -> float | None:
        return self._run(ops.get(key))

    def get_many(self, keys: Any) -> tuple[np.ndarray, np.ndarray]:
        """(values, found) for each key; values are 0.0 where not found."""
        return self._run(ops.get_many(self._limits, keys))

    def range(self, start: Any, end: Any = None, limit: int | None = None) \
            -> tuple[np.ndarray, np.ndarray]:
        """Records with start <= key < end (end None = no upper bound), ascending, at most ``limit``, as
        (keys, values) arrays — following the server's cursor page by page until done."""
        return self._run(ops.range_all(start, end, limit, self.settings.page_size))

    def iter_range(self, start: Any = None, end: Any = None, page_size: int | None = None) \
            -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Pages of (keys, values) arrays over [start, end), fetched lazily one request at a time.
        Arguments are checked now, not at the first page."""
        size = self.settings.page_size if page_size is None else page_size
        lo, hi, _, page = ops.check_range(start, end, None, size)
        return self._pages(lo, hi, page)

    def _pages(self, lo: int | None, hi: int | None, page: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        if ops.empty_range(lo, hi, None):
            return
        cursor: str | None = None
        while True:
            keys, values, cursor = self._run(ops.range_page(lo, hi, page, cursor))
            if len(keys):
                yield keys, values
            if cursor is None:
                return

    def count(self) -> int:
        return self._run(ops.count())

    def lsn(self) -> int:
        return self._run(ops.lsn())

    def stats(self) -> dict[str, Any]:
        return self._run(ops.stats(self._limits))

    def index_stats(self) -> dict[str, Any]:
        return self._run(ops.index_stats())

    def retrain_index(self) -> dict[str, Any]:
        return self._run(ops.admin("retrain-index"))

    def rebuild_index(self) -> dict[str, Any]:
        return self._run(ops.admin("rebuild-index"))

    def checkpoint(self) -> int:
        return self._run(ops.checkpoint())

    def ready(self) -> bool:
        """True when the primary answers /ready with 200 (no retries)."""
        return self._run(ops.ready())

    def close(self) -> None:
        with self._lock:
            self._closed = True
            endpoints, self._endpoints = list(self._endpoints.values()), {}
        for http in endpoints:
            http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
