"""Pure parts of the server: htpasswd parsing and verification, sessions, log formats, cursors."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytest

from omendb.errors import ConfigError
from omendb.server.htpasswd import UserFile, parse_htpasswd, verify_hash
from omendb.server.logs import JsonFormatter, TextFormatter
from omendb.server.routes.records import decode_cursor, encode_cursor
from omendb.server.sessions import SessionStore
from tests.server.harness import htpasswd_apr1, htpasswd_bcrypt


def test_entries_in_the_formats_htpasswd_writes_verify() -> None:
    for line in (htpasswd_bcrypt("u", "secret"), htpasswd_apr1("u", "secret")):
        users = parse_htpasswd(line + "\n", "users")
        assert verify_hash("secret", users["u"])
        assert not verify_hash("Secret", users["u"])


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
    assert users.verify("a", "pa") and users.verify("a", "pa")  # second time from the memo
    assert not users.verify("a", "wrong") and not users.verify("ghost", "pa")
    path.write_text(htpasswd_apr1("a", "new") + "\n")
    time.sleep(0.01)
    assert not users.verify("a", "pa")  # the memo does not outlive a password change
    assert users.verify("a", "new")
    path.write_text("broken\n")
    assert users.verify("a", "new") and len(users) == 1


def test_sessions_expire() -> None:
    now = [100.0]
    store = SessionStore(60, clock=lambda: now[0])
    token = store.create("alice")
    session, _ = store.lookup(token)
    assert session is not None and session.user == "alice"
    assert store.lookup("other")[1] == "unknown"
    now[0] += 60
    assert store.lookup(token) == (None, "expired")
    assert store.lookup(token)[1] == "unknown"  # expired sessions are dropped
    second = store.create("bob")
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
