"""Pure parts of the client: error mapping, retry decisions, redirect bookkeeping, settings from a pod's
environment, limit learning, session renewal timing."""

from __future__ import annotations

import email.utils
import random
import time
from pathlib import Path

import orjson
import pytest

import omendb
from omendb.client import (
    ConnectionFailed,
    Forbidden,
    InsufficientStorage,
    InvalidInput,
    NotFound,
    RateLimited,
    ReadOnly,
    ServerError,
    Settings,
    SettingsError,
    StorageFull,
    Timeout,
    TooLarge,
    Unauthorized,
    Unavailable,
)
from omendb.client.auth import renew_margin
from omendb.client.config import Credentials, settings_from_env
from omendb.client.errors import error_from_response, parse_retry_after, primary_from_error
from omendb.client.ops import Call, Limits
from omendb.client.retry import Kind, RetryPolicy, may_retry, retry_delay
from omendb.client.transport import Attempts


def body(code: str, message: str = "m", **extra: str) -> bytes:
    return orjson.dumps({"error": {"code": code, "message": message, **extra}})


@pytest.mark.parametrize(("status", "code", "cls"), [
    (404, "not_found", NotFound), (401, "unauthorized", Unauthorized), (403, "forbidden", Forbidden),
    (413, "batch_too_large", TooLarge), (413, "body_too_large", TooLarge),
    (422, "invalid_request", InvalidInput),
    (400, "invalid_cursor", InvalidInput), (409, "read_only", ReadOnly), (503, "read_only", ReadOnly),
    (507, "memory_limit_exceeded", InsufficientStorage), (507, "insufficient_storage", StorageFull),
    (503, "overloaded", Unavailable),
    (429, "slow_down", RateLimited), (500, "internal", ServerError), (502, "http_502", Unavailable),
])
def test_answers_map_to_typed_errors(status: int, code: str, cls: type, ) -> None:
    error = error_from_response(status, body(code, "what happened"), {"x-request-id": "r1"})
    assert type(error) is cls
    assert (error.status, error.code, error.message) == (status, code, "what happened")
    assert error.request_id == "r1"
    assert str(error) == f"HTTP {status} {code}: what happened (request_id r1)"


def test_errors_are_also_the_embedded_engines_errors() -> None:
    assert isinstance(error_from_response(422, body("invalid_request"), {}), omendb.InvalidInput)
    assert isinstance(error_from_response(409, body("read_only"), {}), omendb.ReadOnly)
    assert isinstance(error_from_response(507, body("memory_limit_exceeded"), {}), omendb.MemoryLimitExceeded)
    disk_full = error_from_response(507, body("insufficient_storage"), {})
    assert isinstance(disk_full, omendb.StorageFull) and not isinstance(disk_full, omendb.MemoryLimitExceeded)
    assert isinstance(error_from_response(500, body("internal"), {}), omendb.OmenDBError)


def test_a_body_that_is_not_the_api_shape_still_gives_a_typed_error() -> None:
    error = error_from_response(502, b"<html>Bad Gateway</html>", {})
    assert isinstance(error, Unavailable) and error.code == "http_502" and "Bad Gateway" in error.message
    assert error_from_response(503, b"", {}).message == "HTTP 503 without a body"


def test_retry_after_in_seconds_or_as_a_date() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    later = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 <= (parse_retry_after(later) or 0) <= 31


def test_where_a_replica_says_the_primary_is() -> None:
    assert primary_from_error({"primary": "https://prod-0.prod-headless:3000/"}, {}) == \
        "https://prod-0.prod-headless:3000"
    assert primary_from_error({}, {"x-omendb-primary": "https://p:3000"}) == "https://p:3000"
    assert primary_from_error({"message": "this is a replica; write to https://prod:3000."}, {}) == \
        "https://prod:3000"
    assert primary_from_error({"message": "this is a replica"}, {}) is None


def test_writes_refused_by_a_replica_go_to_the_primary_once() -> None:
    settings = Settings(url="https://prod:3000", read_url="https://prod-ro:3000", auth="none")
    write = Attempts(settings, Call("POST", "/v1/records", Kind.WRITE), random.Random(1))
    assert write.base == "https://prod:3000"
    named = ReadOnly("replica", code="read_only", status=409, primary="https://prod-0.prod-headless:3000")
    assert write.after(named) == 0.0 and write.base == "https://prod-0.prod-headless:3000"
    with pytest.raises(ReadOnly):  # a second refusal is not followed around
        write.after(ReadOnly("replica", code="read_only", status=409, primary="https://elsewhere:3000"))
    # A refusal naming no primary, from the configured primary URL itself: nowhere else to go.
    unnamed = Attempts(settings, Call("POST", "/v1/records", Kind.WRITE), random.Random(1))
    with pytest.raises(ReadOnly):
        unnamed.after(ReadOnly("replica", code="read_only", status=409))


def test_reads_fall_back_to_the_primary_when_no_replica_answers() -> None:
    settings = Settings(url="https://prod:3000", read_url="https://prod-ro:3000", auth="none")
    read = Attempts(settings, Call("GET", "/v1/records/1", Kind.READ, read=True), random.Random(1))
    assert read.base == "https://prod-ro:3000"
    assert read.after(ConnectionFailed("refused", code="connect_failed")) == 0.0
    assert read.base == "https://prod:3000"


def unavailable(status: int = 503, code: str = "overloaded", retry_after: float | None = 1.0) -> Unavailable:
    return Unavailable("busy", code=code, status=status, retry_after=retry_after)


@pytest.mark.parametrize(("kind", "error", "expected"), [
    (Kind.ADMIN, unavailable(), True),  # refused up front: did not run
    (Kind.ADMIN, ConnectionFailed("x", code="connect_failed"), True),  # never sent
    (Kind.ADMIN, ConnectionFailed("x", code="connection_broken"), False),  # may have run
    (Kind.ADMIN, Timeout("x", code="timeout"), False),
    (Kind.ADMIN, unavailable(code="request_timeout"), False),  # it ran; a write may be applied
    (Kind.WRITE, unavailable(code="request_timeout"), True),  # idempotent upsert
    (Kind.WRITE, Timeout("x", code="timeout"), True),
    (Kind.READ, unavailable(502, "http_502", None), True),
    (Kind.READ, unavailable(code="query_timeout", retry_after=None), False),  # would time out again
    (Kind.READ, InvalidInput("x", code="invalid_request", status=422), False),
    (Kind.READ, Unauthorized("x", code="unauthorized", status=401), False),
    (Kind.ADMIN, RateLimited("x", code="slow_down", status=429, retry_after=2.0), True),
])
def test_what_is_retried(kind: Kind, error: Exception, expected: bool) -> None:
    assert may_retry(kind, error) is expected  # type: ignore[arg-type]


def test_backoff_is_exponential_with_jitter_and_honours_retry_after() -> None:
    policy = RetryPolicy(attempts=6, backoff=0.1, max_backoff=0.5, max_retry_after=5, deadline=100)
    rng = random.Random(7)
    broken = ConnectionFailed("x", code="connection_broken")
    for i in range(5):
        delays = [retry_delay(policy, Kind.READ, broken, i, 0, rng) for _ in range(200)]
        assert all(d is not None and 0 <= d <= min(0.5, 0.1 * 2**i) for d in delays)
        assert len({round(d or 0, 6) for d in delays}) > 100  # jittered, not one fixed value
    assert retry_delay(policy, Kind.READ, broken, 5, 0, rng) is None  # out of attempts
    told = retry_delay(policy, Kind.READ, unavailable(retry_after=2.0), 0, 0, rng)
    assert told is not None and 2.0 <= told <= 2.1
    assert retry_delay(policy, Kind.READ, unavailable(retry_after=60.0), 0, 0, rng) is None  # too long
    assert retry_delay(policy, Kind.READ, unavailable(retry_after=2.0), 0, 99, rng) is None  # past deadline
    with pytest.raises(ValueError, match="at least 1"):
        RetryPolicy(attempts=0)


def test_settings_from_a_pods_environment(tmp_path: Path) -> None:
    users = tmp_path / "users"  # the NAME-users Secret mounted as a directory
    users.mkdir()
    (users / "username").write_text("admin")
    (users / "password").write_text("s3cret:with:colons\n")
    (users / "users.htpasswd").write_text("admin:$2y$...\n")
    ca = tmp_path / "ca"
    ca.mkdir()
    (ca / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\n")
    settings = settings_from_env({"OMENDB_URL": "https://prod.db.svc:3000/", "OMENDB_READ_URL":
                                  "https://prod-ro.db.svc:3000", "OMENDB_CREDENTIALS_FILE": str(users),
                                  "OMENDB_CA_FILE": str(ca), "OMENDB_TIMEOUT": "2.5", "OMENDB_RETRIES": "2"})
    assert settings.url == "https://prod.db.svc:3000" and settings.read_url == "https://prod-ro.db.svc:3000"
    assert settings.credentials() == ("admin", "s3cret:with:colons")
    assert settings.auth == "session" and settings.ca_file == str(ca / "ca.crt")
    assert settings.timeout == 2.5 and settings.retry.attempts == 2
    assert settings.verify is True  # verification on unless a caller turns it off explicitly

    line = tmp_path / "creds"
    line.write_text("alice:pw\n")
    assert Credentials(file=str(line))() == ("alice", "pw")
    plain = settings_from_env({"OMENDB_URL": "http://x:3000", "OMENDB_USER": "bob", "OMENDB_PASSWORD": "p",
                               "OMENDB_AUTH": "basic"})
    assert plain.auth == "basic" and plain.credentials() == ("bob", "p")
    assert settings_from_env({"OMENDB_URL": "http://x:3000"}).auth == "none"


@pytest.mark.parametrize(("env", "fragment"), [
    ({}, "OMENDB_URL is not set"),
    ({"OMENDB_URL": "prod:3000"}, "must start with http"),
    ({"OMENDB_URL": "http://x", "OMENDB_USER": "a"}, "OMENDB_PASSWORD is not"),
    ({"OMENDB_URL": "http://x", "OMENDB_TIMEOUT": "soon"}, "OMENDB_TIMEOUT='soon' is not a number"),
    ({"OMENDB_URL": "http://x", "OMENDB_AUTH": "basic"}, "needs credentials"),
    ({"OMENDB_URL": "http://x", "OMENDB_CA_FILE": "/nonexistent/ca.crt"}, "mount the NAME-ca Secret"),
])
def test_bad_settings_say_what_to_fix(env: dict[str, str], fragment: str) -> None:
    with pytest.raises(SettingsError, match=fragment):
        settings_from_env(env)


def test_unreadable_credentials_say_where_they_were_looked_for(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="mount the NAME-users Secret"):
        Credentials(file=str(tmp_path / "missing"))()


def test_the_batch_limit_is_learned_from_a_413() -> None:
    limits = Limits(50_000)
    refusal = TooLarge("2600 records in one request is more than [limits] max_insert_batch_size = 1000; "
                       "split it", code="batch_too_large", status=413)
    assert limits.learn(refusal, 2600) == 1000 and limits.max_batch_size == 1000
    body_too_big = TooLarge("the request body is larger than [http] max_body_mb = 1 MiB",
                            code="body_too_large", status=413)
    assert limits.learn(body_too_big, 1000) == 500
    assert limits.learn(body_too_big, 1) is None  # one record cannot be split
    limits.learn_from_stats({"limits": {"max_insert_batch_size": 300}})
    assert limits.max_batch_size == 300


def test_sessions_are_renewed_a_quarter_before_expiry_at_most_a_minute() -> None:
    assert renew_margin(2) == 0.5
    assert renew_margin(3600) == 60
