"""Client and AsyncClient against a real server: the embedded API's semantics, both auth schemes, session
renewal, automatic batch splitting, cursor iteration, typed errors."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import omendb
from omendb.client import (
    AsyncClient,
    Client,
    ClientError,
    Forbidden,
    InvalidInput,
    NotFound,
    Unauthorized,
    ops,
)
from omendb.client.auth import SessionAuth, Token
from omendb.client.retry import Kind
from tests.client.conftest import PASSWORDS, metric
from tests.server.harness import Server


class Blocking:
    """An AsyncClient driven from synchronous test code, so the same scenario runs against all three."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client
        self._loop = asyncio.new_event_loop()

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self._client, name)
        return lambda *args, **kwargs: self._loop.run_until_complete(method(*args, **kwargs))

    def close(self) -> None:
        self._loop.run_until_complete(self._client.close())
        self._loop.close()


def scenario(db: Any, base: int) -> list[Any]:
    """Calls an application makes, with results made independent of the database's history."""
    out: list[Any] = []
    count0 = db.count()
    lsn1 = db.put_many(np.arange(base, base + 100, dtype=np.int64), np.arange(100) * 0.5)
    lsn2 = db.put_many([base + 5, base + 200], [9.25, -1.0])
    out += [lsn2 - lsn1, db.lsn() == lsn2]
    out += [db.get(base + 5), db.get(base + 7), db.get(base + 1000), db.get(np.int64(base + 200))]
    values, found = db.get_many(np.array([base + 5, base + 1000, base + 200]))
    out += [values.dtype.name, values.tolist(), found.dtype.name, found.tolist()]
    values, found = db.get_many([])
    out += [values.tolist(), found.tolist()]
    lsn3 = db.delete_many([base + 5, base + 1000])
    out += [lsn3 - lsn2, db.get(base + 5)]
    keys, values = db.range(base, base + 10)
    out += [keys.dtype.name, (keys - base).tolist(), values.tolist()]
    keys, values = db.range(base + 90, base + 300, limit=5)
    out += [(keys - base).tolist(), values.tolist()]
    out += [(db.range(base + 95, base + 300)[0] - base).tolist(), db.range(base + 10, base)[0].tolist(),
            db.range(base, base + 300, limit=0)[0].tolist()]
    out += [db.put_many([], []) - lsn3, db.delete_many(np.array([], dtype=np.int64)) - lsn3]
    out.append(db.count() - count0)
    for bad in (lambda: db.put_many([1, 2], [1.0]), lambda: db.put_many([1], [float("nan")]),
                lambda: db.get("7"), lambda: db.get_many([1.5]), lambda: db.range(0, 10, limit=-1)):
        with pytest.raises(omendb.InvalidInput) as caught:
            bad()
        out.append(caught.value.message)
    return out


@pytest.fixture(scope="module")
def embedded_result(tmp_path_factory: pytest.TempPathFactory) -> list[Any]:
    path: Path = tmp_path_factory.mktemp("embedded") / "data"
    with omendb.Database.open(path) as db:
        return scenario(db, 10_000)


def make_client(server: Server, kind: str, auth: str, user: str = "alice") -> Any:
    options: dict[str, Any] = {"username": user, "password": PASSWORDS[user], "auth": auth}
    if kind == "sync":
        return Client(server.url, **options)
    return Blocking(AsyncClient(server.url, **options))


@pytest.mark.parametrize(("kind", "auth", "base"), [
    ("sync", "basic", 1_000_000), ("sync", "session", 2_000_000),
    ("async", "basic", 3_000_000), ("async", "session", 4_000_000),
])
def test_same_results_as_the_embedded_database(auth_server: Server, embedded_result: list[Any], kind: str,
                                               auth: str, base: int) -> None:
    db = make_client(auth_server, kind, auth)
    try:
        assert scenario(db, base) == embedded_result
    finally:
        db.close()


def test_admin_calls_and_stats(auth_server: Server) -> None:
    with Client(auth_server.url, username="admin", password=PASSWORDS["admin"]) as db:
        db.put_many(np.arange(50_000, 50_100), np.ones(100))
        stats = db.stats()
        assert stats["role"] == "primary" and stats["lsn"] == db.lsn()
        checkpoint_lsn = db.checkpoint()
        assert checkpoint_lsn == db.lsn() == db.stats()["checkpoint_lsn"]
        retrained = db.retrain_index()
        assert retrained["status"] == "ok" and retrained["model_type"] == "recursive"
        assert db.rebuild_index()["keys"] == db.index_stats()["keys"] >= 100
        assert db.ready() is True


def test_cursor_iteration_over_a_large_range(auth_server: Server) -> None:
    keys = np.arange(5_000_000, 5_000_000 + 3 * 12_345, 3, dtype=np.int64)
    values = keys.astype(np.float64) / 7
    with Client(auth_server.url, username="bob", password=PASSWORDS["bob"]) as db:
        db.put_many(keys, values)
        pages = list(db.iter_range(int(keys[0]), int(keys[-1]) + 1, page_size=1000))
        assert [len(k) for k, _ in pages] == [1000] * 12 + [345]
        got_keys = np.concatenate([k for k, _ in pages])
        assert np.array_equal(got_keys, keys)
        assert np.array_equal(np.concatenate([v for _, v in pages]), values)
        # range() follows the cursor too, in pages of settings.page_size, and honours limit across pages.
        all_keys, all_values = db.range(int(keys[0]), int(keys[-1]) + 1)
        assert np.array_equal(all_keys, keys) and np.array_equal(all_values, values)
        limited, _ = Client(auth_server.url, username="bob", password=PASSWORDS["bob"], page_size=700) \
            .range(int(keys[0]), None, limit=2500)
        assert np.array_equal(limited, keys[:2500])
        with pytest.raises(InvalidInput, match="page_size"):
            db.iter_range(0, page_size=0)  # checked when called, not at the first page
        # Without start, the scan begins at the smallest key.
        first_page, _ = next(iter(db.iter_range(end=int(keys[0]) + 1)))
        assert first_page[0] == db.range(-(2**63), None, limit=1)[0][0]


def test_async_iter_range(auth_server: Server) -> None:
    async def run() -> list[int]:
        async with AsyncClient(auth_server.url, username="bob", password=PASSWORDS["bob"]) as db:
            await db.put_many(np.arange(6_000_000, 6_002_500), np.zeros(2500))
            sizes = []
            async for page_keys, _ in db.iter_range(6_000_000, 6_002_500, page_size=1000):
                sizes.append(len(page_keys))
            return sizes

    assert asyncio.run(run()) == [1000, 1000, 500]


def test_batches_over_the_server_limit_are_split(auth_server: Server) -> None:
    n = 2_600  # the server takes at most 1000 records per request
    keys = np.arange(7_000_000, 7_000_000 + n, dtype=np.int64)
    with Client(auth_server.url, username="alice", password=PASSWORDS["alice"]) as db:
        assert db._limits.max_batch_size == 50_000  # the server's default, until it says otherwise
        before = db.lsn()
        lsn = db.put_many(keys, keys * 0.25)
        assert db._limits.max_batch_size == 1000  # learned from the 413's message
        assert lsn == before + 3  # three atomic parts, in order
        values, found = db.get_many(keys)
        assert found.all() and np.array_equal(values, keys * 0.25)
        assert db.delete_many(keys) == lsn + 3
        assert not db.get_many(keys)[1].any()
    with Client(auth_server.url, username="alice", password=PASSWORDS["alice"]) as fresh:
        values, found = fresh.get_many(keys)  # lookups over the limit are split as well
        assert fresh._limits.max_batch_size == 1000 and len(found) == n and not found.any()


def test_session_is_renewed_before_it_expires(auth_server: Server) -> None:
    expired_before = metric(auth_server, "omendb_auth_failures_total", reason="expired_token")
    with Client(auth_server.url, username="alice", password=PASSWORDS["alice"], auth="session") as db:
        db.put_many([8_000_000], [1.0])
        auth = db._endpoint(auth_server.url).auth
        assert isinstance(auth, SessionAuth) and auth.logins == 1
        deadline = time.monotonic() + 5  # the server's sessions last 2 s
        while time.monotonic() < deadline:
            assert db.get(8_000_000) == 1.0
            time.sleep(0.2)
        assert auth.logins >= 3
    # Every renewal happened before expiry: the server never saw an expired token from us.
    assert metric(auth_server, "omendb_auth_failures_total", reason="expired_token") == expired_before


def test_a_token_the_server_forgot_is_replaced_once(auth_server: Server) -> None:
    with Client(auth_server.url, username="alice", password=PASSWORDS["alice"]) as db:
        db.get(1)
        auth = db._endpoint(auth_server.url).auth
        assert isinstance(auth, SessionAuth)
        # As after a server restart: the token is unknown to the server, though not expired for us.
        auth._token = Token("forgotten-by-the-server", time.monotonic() + 3600)
        assert db.put_many([8_000_001], [2.5]) > 0
        assert auth.logins == 2 and db.get(8_000_001) == 2.5


@pytest.mark.parametrize("auth", ["basic", "session"])
def test_wrong_password_is_unauthorized_with_the_servers_message(auth_server: Server, auth: str) -> None:
    with Client(auth_server.url, username="alice", password="wrong", auth=auth) as db, \
            pytest.raises(Unauthorized) as caught:
        db.get(1)
    assert caught.value.status == 401 and caught.value.code == "unauthorized"
    assert "wrong user name or password" in caught.value.message


def get_path(path: str) -> ops.Op[Any]:
    answer = yield ops.Call("GET", path, Kind.READ)
    return answer


def test_typed_errors_carry_code_message_and_request_id(auth_server: Server) -> None:
    with Client(auth_server.url, username="alice", password=PASSWORDS["alice"]) as db:
        with pytest.raises(Forbidden) as forbidden:
            db.retrain_index()
        assert forbidden.value.code == "forbidden" and "admin_users" in forbidden.value.message
        assert forbidden.value.request_id
        with pytest.raises(InvalidInput) as invalid:
            db._run(ops.range_page(None, None, 10, "not-a-cursor"))
        assert invalid.value.status == 400 and invalid.value.code == "invalid_cursor"
        assert isinstance(invalid.value, omendb.InvalidInput)  # catchable as the embedded error
        with pytest.raises(NotFound) as missing:
            db._run(get_path("/v2/records"))
        assert missing.value.status == 404 and "no such endpoint" in missing.value.message
    with Client(auth_server.url) as anonymous, pytest.raises(Unauthorized) as caught:
        anonymous.count()
    assert "authentication required" in caught.value.message


def test_client_and_async_client_have_the_database_methods() -> None:
    database_api = {"put_many", "put", "delete_many", "get", "get_many", "range", "count", "lsn", "stats",
                    "index_stats", "retrain_index", "rebuild_index", "checkpoint", "close"}
    assert database_api <= {n for n in dir(omendb.Database) if not n.startswith("_")}

    def public(cls: type) -> set[str]:
        return {n for n in dir(cls) if not n.startswith("_")}

    assert database_api <= public(Client)
    assert public(Client) == public(AsyncClient)


@pytest.fixture
def client_factory(auth_server: Server) -> Iterator[Callable[..., Client]]:
    made: list[Client] = []

    def make(**options: Any) -> Client:
        made.append(Client(auth_server.url, **options))
        return made[-1]

    yield make
    for c in made:
        c.close()


def test_read_url_serves_reads_and_falls_back_to_the_primary(auth_server: Server,
                                                            client_factory: Callable[..., Client]) -> None:
    from tests.ports import free_port

    db = client_factory(username="alice", password=PASSWORDS["alice"], read_url=auth_server.url)
    db.put_many([9_000_000], [4.0])
    assert db.get(9_000_000) == 4.0
    # A -ro Service with no ready replica refuses connections: reads go to the primary instead.
    dead = client_factory(username="alice", password=PASSWORDS["alice"],
                          read_url=f"http://127.0.0.1:{free_port()}")
    assert dead.get(9_000_000) == 4.0
    assert dead.get_many([9_000_000])[1].tolist() == [True]


def test_a_closed_client_says_so(auth_server: Server) -> None:
    db = Client(auth_server.url, username="alice", password=PASSWORDS["alice"])
    db.get(1)
    db.close()
    with pytest.raises(ClientError) as caught:
        db.get(1)
    assert caught.value.code == "closed"


def test_raw_stream_carries_auth_and_raises_typed_errors(auth_server) -> None:
    with Client(auth_server.url, username="admin", password=PASSWORDS["admin"], auth="basic") as db:
        db.put_many([1, 2], [1.0, 2.0])
        with db.stream("GET", "/v1/records", params={"start": 0}) as response:
            assert b'"key":1' in response.read().replace(b" ", b"")
        with pytest.raises(NotFound), db.stream("GET", "/v1/records/99"):
            pass
