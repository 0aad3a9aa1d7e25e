"""The client under faults, against real servers: TLS verification with a test CA, a server shedding load
with 503 + Retry-After, servers that cannot be reached, configuration from a pod's environment."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from omendb.client import (
    Client,
    ConnectionFailed,
    InsufficientStorage,
    PartialWrite,
    RetryPolicy,
    TLSError,
    Unavailable,
)
from tests.client.conftest import PASSWORDS, metric
from tests.ports import free_port
from tests.server.harness import Server
from tests.server.test_limits import SlowUpload


def secret_dir(root: Path, user: str) -> Path:
    """A directory laid out like the mounted NAME-users Secret."""
    path = root / "users-secret"
    path.mkdir(exist_ok=True)
    (path / "username").write_text(user)
    (path / "password").write_text(PASSWORDS[user])
    return path


@pytest.mark.parametrize("auth", ["basic", "session"])
def test_https_verified_against_the_ca_from_the_environment(tls_server: tuple[Server, Path], tmp_path: Path,
                                                            auth: str) -> None:
    server, ca_dir = tls_server
    env = {"OMENDB_URL": server.url, "OMENDB_CREDENTIALS_FILE": str(secret_dir(tmp_path, "admin")),
           "OMENDB_CA_FILE": str(ca_dir), "OMENDB_AUTH": auth}
    with Client.from_env(env) as db:
        assert db.settings.url.startswith("https://") and db.settings.ca_file == str(ca_dir / "ca.crt")
        lsn = db.put_many(np.arange(10), np.arange(10) * 1.5)
        assert db.get(9) == 13.5 and db.lsn() >= lsn
        assert db.checkpoint() >= lsn


def test_an_unverifiable_certificate_fails_at_once_and_says_what_to_set(
        tls_server: tuple[Server, Path]) -> None:
    server, _ = tls_server
    # The system's CAs do not know the test CA: no retries, a TLSError naming the fix.
    with Client(server.url, username="alice", password=PASSWORDS["alice"]) as db, \
            pytest.raises(TLSError) as caught:
        db.get(1)
    assert caught.value.code == "tls_error" and "OMENDB_CA_FILE" in caught.value.message


def test_shed_load_is_retried_after_retry_after(shedding_server: Server) -> None:
    rejected = metric(shedding_server, "omendb_rejected_requests_total", limit="max_concurrent_requests")
    slow = SlowUpload(shedding_server, hold=10)  # holds the server's only request slot
    releaser = threading.Timer(1.2, slow.release.set)
    releaser.start()
    try:
        with Client(shedding_server.url) as db:
            # Refused with 503 + Retry-After: 1 while the slot is taken, then served.
            lsn = db.put_many([1, 2, 3], [1.0, 2.0, 3.0])
            assert db.get(2) == 2.0 and lsn >= 1
    finally:
        releaser.cancel()
        assert slow.finish().status_code == 200
    assert metric(shedding_server, "omendb_rejected_requests_total",
                  limit="max_concurrent_requests") > rejected


def test_admin_calls_are_retried_only_when_refused_up_front(shedding_server: Server) -> None:
    rejected = metric(shedding_server, "omendb_rejected_requests_total", limit="max_concurrent_requests")
    slow = SlowUpload(shedding_server, hold=10)
    threading.Timer(1.2, slow.release.set).start()
    with Client(shedding_server.url) as db:
        assert db.checkpoint() >= 0  # 503 + Retry-After means it did not run: retried
    assert slow.finish().status_code == 200
    assert metric(shedding_server, "omendb_rejected_requests_total",
                  limit="max_concurrent_requests") > rejected


def test_without_retries_the_503_is_raised_with_its_code(shedding_server: Server) -> None:
    slow = SlowUpload(shedding_server, hold=10)
    try:
        with Client(shedding_server.url, retry=RetryPolicy(attempts=1)) as db, \
                pytest.raises(Unavailable) as caught:
            db.count()
    finally:
        slow.release.set()
        assert slow.finish().status_code == 200
    error = caught.value
    assert (error.status, error.code, error.retry_after) == (503, "overloaded", 1.0)
    assert "max_concurrent_requests = 1" in error.message


def test_an_unreachable_server_is_retried_then_reported() -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    policy = RetryPolicy(attempts=3, backoff=0.01)
    started = time.monotonic()
    with Client(url, retry=policy) as db, pytest.raises(ConnectionFailed) as caught:
        db.put_many([1], [1.0])
    assert caught.value.code == "connect_failed" and url in caught.value.message
    assert time.monotonic() - started < 10  # bounded by the policy, not hanging


def test_a_server_that_starts_late_is_waited_for(tmp_path: Path) -> None:
    server = Server(tmp_path / "late")
    with server:
        threading.Timer(0.5, server.start, kwargs={"wait_ready": False}).start()
        # Connection refused (and 503 not_ready + Retry-After while recovering) until it serves.
        policy = RetryPolicy(attempts=500, backoff=0.1, max_backoff=0.3, deadline=90)
        with Client(server.url, retry=policy) as db:
            assert db.put_many([5], [0.5]) >= 1
            assert db.get(5) == 0.5


def test_a_split_batch_that_fails_midway_says_how_much_was_written(tmp_path: Path) -> None:
    # 1000 records per request and a 1 MiB memory limit: a large batch fills the server part-way.
    server = Server(tmp_path / "small", {"limits": {"max_insert_batch_size": 1000, "memory_limit_mb": 1}})
    keys = np.arange(100_000, 120_000, dtype=np.int64)
    with server:
        server.start()
        with Client(server.url) as db:
            with pytest.raises(PartialWrite) as caught:
                db.put_many(keys, keys * 2.0)
            partial = caught.value
            assert 0 < partial.applied < len(keys) and partial.applied % 1000 == 0
            assert isinstance(partial.cause, InsufficientStorage) and partial.cause.status == 507
            assert partial.lsn == db.lsn()
            values, found = db.get_many(keys)
            # Exactly the leading `applied` records are durable; nothing after them was half-applied.
            assert found[:partial.applied].all() and not found[partial.applied:].any()
            assert np.array_equal(values[:partial.applied], keys[:partial.applied] * 2.0)
            # When the very first part is refused, the error is the server's own.
            with pytest.raises(InsufficientStorage) as full:
                db.put_many(keys[partial.applied:], keys[partial.applied:] * 2.0)
            assert full.value.code == "memory_limit_exceeded"
