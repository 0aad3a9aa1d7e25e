"""Pure parts of the server: htpasswd parsing and verification, sessions, log formats, cursors."""

from __future__ import annotations

import hmac
import json
import logging
import re
import time
from pathlib import Path

import pytest

from omendb.errors import ConfigError
from omendb.server.credentials import CredentialCache, basic_credentials
from omendb.server.htpasswd import UserFile, Users, dummy_hash, parse_htpasswd, profile, typical_profile, verify_hash
from omendb.server.logs import JsonFormatter, TextFormatter
from omendb.server.routes.records import decode_cursor, encode_cursor
from omendb.server.sessions import SessionStore
from omendb.server.throttle import LoginThrottle
from tests.server.harness import htpasswd_apr1, htpasswd_bcrypt


def test_entries_in_the_formats_htpasswd_writes_verify() -> None:
    for line in (htpasswd_bcrypt("u", "secret"), htpasswd_apr1("u", "secret")):
        users = parse_htpasswd(line + "\n", "users")
        assert verify_hash("secret", users["u"])
        assert not verify_hash("Secret", users["u"])


def test_bcrypt_passwords_longer_than_72_bytes_verify_as_apache_does() -> None:
    # Apache reads the first 72 bytes of a bcrypt password; bcrypt >= 5 refuses longer input (and so does
    # passlib's HtpasswdFile over it: a ValueError instead of an answer), so verify_hash truncates.
    import bcrypt

    hash_ = "$2y$" + bcrypt.hashpw(b"x" * 72, bcrypt.gensalt(rounds=4)).decode()[4:]
    assert verify_hash("x" * 100, hash_)
    assert not verify_hash("y" + "x" * 99, hash_)


@pytest.mark.parametrize("line, scheme", [
    ("u:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=", "SHA-1"),
    ("u:$1$abcdefgh$0123456789012345678901", "MD5-crypt"),
    ("u:$6$salt$hash", "SHA-crypt"),
    ("u:abJnggxhB/yWI", "DES crypt"),
    ("u:secret", "plain text"),
])
def test_weak_schemes_are_refused_with_the_line(line: str, scheme: str) -> None:
    with pytest.raises(ConfigError, match=f"users line 2: user 'u' has a {scheme}"):
        parse_htpasswd("# comment\n" + line + "\n", "users")


def test_malformed_and_duplicate_lines() -> None:
    with pytest.raises(ConfigError, match="line 1: expected 'user:hash'"):
        parse_htpasswd("nocolon\n", "users")
    entry = htpasswd_apr1("u", "p")
    with pytest.raises(ConfigError, match="appears twice"):
        parse_htpasswd(f"{entry}\n{entry}\n", "users")


def test_user_file_reloads_and_keeps_users_on_a_bad_file(tmp_path: Path) -> None:
    path = tmp_path / "users"
    path.write_text(htpasswd_bcrypt("a", "pa") + "\n")
    users = UserFile(path)
    users.CHECK_INTERVAL = 0.0
    first, generation = users.verify("a", "pa")
    assert first is not None and first == users.hash_of("a") and generation == 0
    assert users.verify("a", "wrong")[0] is None and users.verify("ghost", "pa")[0] is None
    path.write_text(htpasswd_apr1("a", "new") + "\n")
    time.sleep(0.01)
    assert users.verify("a", "pa") == (None, 1)
    assert users.verify("a", "new")[0] is not None
    path.write_text("broken\n")
    assert users.verify("a", "new")[0] is not None and len(users) == 1


def test_credential_cache_forgets_on_reload_expiry_and_hash_change() -> None:
    now = [0.0]
    cache = CredentialCache(60, clock=lambda: now[0])
    users = Users({"a": "hash1", "b": "hash1"}, 0)
    cache.remember(basic_credentials("a", "pa"), "a", "hash1", 0)
    assert cache.user_of(basic_credentials("a", "pa"), users) == "a"
    # The request guard looks the header's bytes up as they came: the same key as the text form.
    assert cache.user_of(basic_credentials("a", "pa").encode(), users) == "a"
    assert cache.user_of(basic_credentials("a", "wrong"), users) is None
    assert cache.user_of(basic_credentials("b", "pa"), users) is None
    assert cache.user_of(basic_credentials("a", "pa"), Users({"a": "hash2"}, 0)) is None  # hash changed
    assert not any(b"pa" in key for key in cache._entries)  # HMACs only, never the password
    now[0] = 60.0
    assert cache.user_of(basic_credentials("a", "pa"), users) is None  # bounded lifetime
    cache.remember(basic_credentials("a", "pa"), "a", "hash1", 0)
    assert cache.user_of(basic_credentials("a", "pa"), Users(users.entries, 1)) is None
    assert len(cache) == 0  # a reload drops everything
    cache.remember(basic_credentials("a", "pa"), "a", "hash1", 0)  # a check begun before the reload
    assert len(cache) == 0
    off = CredentialCache(0)
    off.remember(basic_credentials("a", "pa"), "a", "hash1", 0)
    assert off.user_of(basic_credentials("a", "pa"), users) is None


def test_dummy_hash_for_unknown_users_matches_the_file_cost() -> None:
    users = {"a": htpasswd_bcrypt("a", "x").split(":", 1)[1], "b": htpasswd_bcrypt("b", "y").split(":", 1)[1],
             "c": htpasswd_apr1("c", "z").split(":", 1)[1]}
    assert typical_profile(users) == ("bcrypt", 5)
    assert profile(dummy_hash("bcrypt", 5)) == ("bcrypt", 5)
    assert typical_profile({"c": users["c"]}) == ("apr1", 0)
    assert dummy_hash("apr1", 0).startswith("$apr1$")


def test_login_throttle_counts_per_user_and_address() -> None:
    now = [0.0]
    throttle = LoginThrottle(per_user=3, per_address=5, window_seconds=60, clock=lambda: now[0])
    assert throttle.fail("alice", "10.0.0.1") == [] and throttle.fail("alice", "10.0.0.2") == []
    assert throttle.check("alice", "10.0.0.3") is None
    assert throttle.fail("alice", "10.0.0.3") == ["user"]
    assert throttle.check("alice", "10.0.0.9") == ("user", 60)
    assert throttle.check("bob", "10.0.0.1") is None  # other users from the same addresses may go on
    for name in ("u1", "u2", "u3", "u4", "u5"):
        started = throttle.fail(name, "10.0.0.7")
    assert started == ["address"] and throttle.check("bob", "10.0.0.7") == ("address", 60)
    now[0] = 45.5
    assert throttle.check("alice", "10.0.0.1") == ("user", 15)
    now[0] = 60.0
    assert throttle.check("alice", "10.0.0.1") is None and throttle.check("bob", "10.0.0.7") is None
    assert throttle.sizes() == {"user": 0, "address": 0}  # ended windows are forgotten
    off = LoginThrottle(per_user=0, per_address=0, window_seconds=60)
    assert all(off.fail("x", "y") == [] for _ in range(100)) and off.check("x", "y") is None
    LoginThrottle.MAX_KEYS, saved = 100, LoginThrottle.MAX_KEYS
    try:
        bounded = LoginThrottle(per_user=3, per_address=0, window_seconds=60)
        for i in range(1000):
            bounded.fail(f"sprayed-{i}", "a")
        assert bounded.sizes()["user"] == 100
    finally:
        LoginThrottle.MAX_KEYS = saved


def test_sessions_expire() -> None:
    now = [100.0]
    store = SessionStore(60, clock=lambda: now[0])
    token = store.create("alice", "hash")
    session, _ = store.lookup(token)
    assert session is not None and session.user == "alice"
    assert store.lookup("other")[1] == "unknown"
    now[0] += 60
    assert store.lookup(token) == (None, "expired")
    assert store.lookup(token)[1] == "unknown"  # expired sessions are dropped
    second = store.create("bob", "hash")
    assert store.revoke(second) and store.lookup(second)[1] == "unknown"


def _record(**extra: object) -> logging.LogRecord:
    record = logging.LogRecord("omendb.access", logging.WARNING, __file__, 1, "request", (), None)
    for key, value in extra.items():
        setattr(record, key, value)
    return record


def test_log_formats_end_with_the_duration() -> None:
    line = JsonFormatter().format(_record(method="GET", status=200, duration_ms=1.5))
    parsed = json.loads(line)
    assert parsed["level"] == "WARNING" and parsed["method"] == "GET"
    assert list(parsed)[-1] == "duration_ms" and line.split()[-1] == "1.5}"
    text = TextFormatter().format(_record(method="GET", duration_ms=2.25))
    assert "WARNING omendb.access request method=GET" in text and text.split()[-1] == "2.25"


def test_cursor_round_trip_and_tampering() -> None:
    lo, hi = -(2**63), 2**63 - 1
    for key in (lo, -1, 0, 42, hi):
        assert decode_cursor(encode_cursor(lo, None, key), lo, None) == (key, lo, None)
    assert decode_cursor(encode_cursor(-5, 50, 7), -5, 50) == (7, -5, 50)
    # Bounds the request leaves out are the cursor's (omendb.client sends the cursor and end only).
    assert decode_cursor(encode_cursor(-5, 50, 7), None, 50) == (7, -5, 50)
    assert decode_cursor(encode_cursor(-5, 50, 7), None, None) == (7, -5, 50)
    for bad in ("", "AAAA", "!!!!!!!!!!!", encode_cursor(lo, None, 5) + "A", encode_cursor(lo, None, 5) + "!"):
        with pytest.raises(Exception, match="cursor"):
            decode_cursor(bad, lo, None)
    # A cursor outside [start, end), or from a scan with other bounds, is refused.
    for cursor, start, end in ((encode_cursor(0, 10, 10), 0, 10), (encode_cursor(0, 10, -1), 0, 10),
                               (encode_cursor(0, 10, 5), 0, 20), (encode_cursor(0, None, 5), 0, 10),
                               (encode_cursor(0, 10, 5), 1, 10), (encode_cursor(0, 10, 50), None, None),
                               (encode_cursor(0, None, -3), None, None)):
        with pytest.raises(Exception, match="cursor"):
            decode_cursor(cursor, start, end)


def test_phases_before_the_database_is_open() -> None:
    """What probes and clients see while recovery runs (the opener thread sets these phases)."""
    import asyncio

    import httpx

    from omendb.config import Config
    from omendb.server.app import build_asgi
    from omendb.server.state import Phase, ServerState

    state = ServerState(Config().replace("security", auth_enabled=False))
    app = build_asgi(state)

    async def probe() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://omendb") as client:
            state.set_phase(Phase.RECOVERING, "recovering: loading the checkpoint and replaying the WAL")
            out = [await client.get("/health"), await client.get("/ready"), await client.get("/v1/records/1"),
                   await client.post("/v1/records", json={"records": [{"key": 1, "value": 1.0}]})]
            state.set_phase(Phase.FAILED, "cannot open the database: locked")
            out += [await client.get("/health"), await client.get("/ready")]
            return out

    health, ready, get, put, failed_health, failed_ready = asyncio.run(probe())
    state.executor.shutdown()
    state.io_executor.shutdown()
    assert health.status_code == 200 and health.json()["phase"] == "recovering"
    assert ready.status_code == 503 and ready.json()["error"]["code"] == "recovering"
    assert "replaying the WAL" in ready.json()["error"]["message"] and ready.headers["retry-after"] == "1"
    for r in (get, put):
        assert r.status_code == 503 and r.json()["error"]["code"] == "not_ready"
    assert failed_health.status_code == 503 and "locked" in failed_health.json()["error"]["message"]
    assert failed_ready.status_code == 503



def test_credential_cache_key_is_hmac_sha256() -> None:
    secret = bytes(range(32))
    assert basic_credentials("a", "b") == "YTpi"  # what HTTP Basic sends for a:b
    assert CredentialCache(60, secret=secret).key("YTpi") == hmac.digest(secret, b"YTpi", "sha256")
    assert CredentialCache(60).key("YTpi") != CredentialCache(60).key("YTpi")  # a random key each


@pytest.mark.parametrize("keep_alive", [True, False])
@pytest.mark.parametrize("status, body", [(200, b'{"key":2,"value":1.0}'),
                                          (404, b'{"error":{"code":"not_found","message":"no record"}}')])
def test_a_whole_response_written_at_once_is_what_uvicorn_writes_in_two(keep_alive: bool, status: int,
                                                                         body: bytes) -> None:
    # direct.write_whole stands in for uvicorn's send of a start and a final body message: same bytes on
    # the wire, same cycle state, same keep-alive close, and the protocol is told the response is complete.
    import asyncio
    import functools

    from uvicorn.protocols.http.flow_control import FlowControl
    from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

    from omendb.server.direct import write_whole

    class Transport:
        def __init__(self) -> None:
            self.written: list[bytes] = []
            self.closed = False

        def write(self, data: bytes) -> None:
            self.written.append(data)

        def close(self) -> None:
            self.closed = True

        def is_closing(self) -> bool:
            return self.closed

    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               (b"x-request-id", b"abc123")]

    async def both() -> list[tuple[bytes, bool, int, tuple[bool, bool, bool]]]:
        results = []
        for direct in (False, True):
            transport = Transport()
            completed: list[int] = []
            cycle = RequestResponseCycle(
                scope={"type": "http", "method": "GET", "path": "/v1/records/2"},  # type: ignore[typeddict-item]
                transport=transport, flow=FlowControl(transport),  # type: ignore[arg-type]
                logger=logging.getLogger("t"), access_logger=logging.getLogger("t"), access_log=False,
                default_headers=[(b"date", b"Fri, 04 Dec 2026 18:00:00 GMT")], message_event=asyncio.Event(),
                expect_100_continue=False, keep_alive=keep_alive, on_response=functools.partial(completed.append, 1))
            if direct:
                assert write_whole(cycle, status, list(headers), body)
                assert len(transport.written) == 1
            else:
                await cycle.send({"type": "http.response.start", "status": status, "headers": list(headers)})
                await cycle.send({"type": "http.response.body", "body": body})
            results.append((b"".join(transport.written), transport.closed, len(completed),
                            (cycle.response_started, cycle.response_complete, cycle.message_event.is_set())))
            # Once a response has begun, write_whole declines (uvicorn's send explains the misuse).
            assert not write_whole(cycle, status, list(headers), body)
        return results

    asgi, whole = asyncio.run(both())
    assert whole == asgi
    assert whole[1] is (not keep_alive)


def test_tallies_folded_at_collection_expose_what_direct_updates_would() -> None:
    # tallies.py: the hot path adds to plain numbers; collecting the registry folds them into the same
    # prometheus_client children. Same samples as updating the metrics directly, after any number of folds.
    from prometheus_client import generate_latest

    from omendb.server.metrics import Metrics

    def exposed(metrics: Metrics) -> list[str]:  # all but the creation times, which differ by construction
        return [line for line in generate_latest(metrics.registry).decode().splitlines() if "_created" not in line]

    direct, tallied = Metrics(), Metrics()
    histogram = tallied.tally_histogram(tallied.query_duration.labels("get"))
    searches = tallied.tally_counter(tallied.searches.labels("get"))
    requests = tallied.tally_labelled(lambda status: tallied.requests.labels("GET", "/r", str(status)))
    values = [0.00005, 0.0001, 0.00011, 0.003, 0.7, 29.0, 31.0, 0.0, 1.0, 10.0]
    for round_ in range(3):
        for n, value in enumerate(values):
            direct.query_duration.labels("get").observe(value)
            direct.searches.labels("get").inc()
            direct.requests.labels("GET", "/r", str(200 + n % 2)).inc()
            histogram.observe(value)
            searches.count += 1
            requests.get(200 + n % 2).count += 1
        if round_ != 1:  # folds with and without updates in between
            exposed(tallied)
        assert exposed(tallied) == exposed(direct)
    assert tallied.registry.get_sample_value("omendb_searches_total", {"operation": "get"}) == 30


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_access_lines_formatted_plainly_are_the_usual_lines(fmt: str) -> None:
    # logs.AccessLog.write_plain (the connection's point reads) writes what write does, user names of any
    # kind included; only the timestamps (taken at each call) may differ.
    import io

    from omendb.server.logs import AccessLog

    # (write takes the duration in milliseconds, rounded by its caller; write_plain the elapsed seconds)
    calls: list[tuple[str, str, int, str, str, str, float]] = [
             ("GET", "/v1/records/-5", 200, "-", "127.0.0.1", "3f2a9c1000000001", 0.000123),
             ("GET", "/v1/records/9223372036854775807", 404, 'we"ird\\ é\u2028', "::1", "x.y:z-1", 0.012),
             ("GET", "/v1/records/0", 503, "bob", "fe80::1%eth0", "A" * 64, 1e-08),
             ("GET", "/v1/records/1", 200, "-", "10.0.0.1", "r", 0.0000456),  # the cached text, twice
             ("GET", "/v1/records/1", 200, "-", "10.0.0.1", "r", 0.0000456),
             ("GET", "/v1/records/2", 200, "-", "10.0.0.1", "r", 31.5)]  # over 10 ms: not cached
    lines = []
    for plain in (False, True):
        out = io.StringIO()
        log = AccessLog(fmt, out)
        for method, path, status, user, remote, rid, elapsed in calls:
            if plain:
                log.write_plain(method, path, status, user, remote, rid, elapsed)
            else:
                log.write(method, path, status, user, remote, rid, round(elapsed * 1000, 3))
        log.flush()
        lines.append([re.sub(r"\d{4}-\d\d-\d\dT[\d:.]+Z", "TS", line) for line in out.getvalue().split("\n")[:-1]])
    assert lines[0] == lines[1] and len(lines[0]) == len(calls)
    if fmt == "json":
        assert [json.loads(line)["user"] for line in lines[1]] == [c[3] for c in calls]
