"""A replica as clients and probes see it (real processes): reads and range scans, refused writes naming
the primary, lag metrics and readiness, re-seeding when the primary no longer has the WAL, and the
synchronous-replication timeout."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx
import pytest

from omendb.config import Config
from omendb.errors import ConfigError
from tests.ports import free_port
from tests.replication.cluster import ADMIN, Cluster, api, caught_up, info, lookup, wait_until
from tests.server.harness import Server


def test_replica_serves_reads_refuses_writes_and_reports_lag(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, replication={"max_lag_seconds": 1.0})
    try:
        p = cluster.node("p")
        r = cluster.node("r", p)
        with api(p) as c:
            for i in range(10):
                c.post("/v1/records", json={"records": [{"key": i * 10 + j, "value": j} for j in range(10)]}
                       ).raise_for_status()
            c.post("/v1/records/delete", json={"keys": [0, 1]}).raise_for_status()
        caught_up(r, p)
        with api(r) as c:
            scan = c.get("/v1/records", params={"start": 0, "end": 50}).json()
            assert [rec["key"] for rec in scan["records"]] == list(range(2, 50))
            assert c.get("/v1/records/55").json() == {"key": 55, "value": 5.0}
            refused = c.post("/v1/records", json={"records": [{"key": 1, "value": 1.0}]})
            # 409 + code read_only + the primary's URL: what the client library redirects on.
            assert refused.status_code == 409
            assert refused.json()["error"]["code"] == "read_only"
            assert p.url in refused.json()["error"]["message"]
            assert c.delete("/v1/records/5").status_code == 409
            stats = c.get("/v1/stats").json()
            assert stats["role"] == "replica" and stats["primary"] == p.url and stats["term"] == 1
            assert stats["replication"]["lag_lsn"] == 0
        with api(p) as c:
            stats = c.get("/v1/stats").json()
            assert stats["role"] == "primary" and stats["replicas"]["r"]["lsn"] >= stats["lsn"] - 1
        metrics = httpx.get(r.metrics_url).text
        assert "omendb_replication_lag_seconds 0.0" in metrics
        assert "omendb_replication_lag_lsn 0.0" in metrics
        assert 'omendb_replication_role{role="replica"} 1.0' in metrics
        assert httpx.get(f"{r.url}/ready").status_code == 200
        # The primary goes away: the replica still serves reads, and stops being ready once its lag
        # (at least the time since the primary last answered) passes max_lag_seconds.
        p.stop(signal.SIGKILL)
        not_ready = wait_until(lambda: httpx.get(f"{r.url}/ready").status_code == 503, 15,
                               "the replica to turn not ready")
        assert not_ready
        body = httpx.get(f"{r.url}/ready").json()
        assert body["error"]["code"] == "replica_lagging" and "max_lag_seconds" in body["error"]["message"]
        assert lookup(r, [55]) == [5.0]
        lag = [line for line in httpx.get(r.metrics_url).text.splitlines()
               if line.startswith("omendb_replication_lag_seconds ")]
        assert float(lag[0].split()[1]) > 1.0
        # The primary returns (same data, same port): the replica resumes by itself and is ready again.
        p.start()
        wait_until(lambda: httpx.get(f"{r.url}/ready").status_code == 200, 30, "the replica to be ready again")
        with api(p) as c:
            c.post("/v1/records", json={"records": [{"key": 1000, "value": 1.0}]}).raise_for_status()
        caught_up(r, p)
    finally:
        cluster.stop_all()


def test_replica_reseeds_when_the_primary_no_longer_has_the_wal(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, sections={"wal": {"max_file_size_mb": 1}})
    try:
        p = cluster.node("p")
        with api(p) as c:
            for i in range(4):  # ~0.8 MB per batch: the WAL rotates, and the checkpoint releases it
                c.post("/v1/records", json={"records": [{"key": i * 50_000 + j, "value": j * 0.25}
                                                        for j in range(50_000)]}).raise_for_status()
        p.stop()  # a clean stop checkpoints; after the restart no frame before it is kept, in memory or WAL
        p.start()
        with api(p) as c:
            c.post("/v1/records", json={"records": [{"key": -5, "value": 5.0}]}).raise_for_status()
            assert c.get("/admin/replication/wal", params={"after_lsn": 0}).status_code == 410
        r = cluster.node("r", p)
        caught_up(r, p)
        assert lookup(r, [0, 199_999, -5, 123_456]) == [0.0, 49_999 * 0.25, 5.0, 23_456 * 0.25]
        with api(r) as c:
            assert c.get("/v1/stats").json()["records"] == 200_001
        assert any(rec.get("msg") == "re-seeded from the primary's snapshot" for rec in r.log_records())
        with api(p) as c:  # and it streams on from there
            c.post("/v1/records", json={"records": [{"key": -6, "value": 6.0}]}).raise_for_status()
        caught_up(r, p)
        assert lookup(r, [-6]) == [6.0]
    finally:
        cluster.stop_all()


def test_synchronous_timeout_fails_the_write_but_keeps_it_durable(tmp_path: Path) -> None:
    """With synchronous_replicas = 1 and no replica, a write waits synchronous_timeout_ms and fails with
    504 replication_timeout; it is NOT rolled back (it is durable on the primary, and replicas get it)."""
    cluster = Cluster(tmp_path, replication={"synchronous_replicas": 1, "synchronous_timeout_ms": 300})
    try:
        p = cluster.node("p")
        with api(p) as c:
            started = time.monotonic()
            r = c.post("/v1/records", json={"records": [{"key": 7, "value": 7.0}]})
            waited = time.monotonic() - started
            assert r.status_code == 504, r.text
            assert r.json()["error"]["code"] == "replication_timeout"
            assert "NOT rolled back" in r.json()["error"]["message"]
            assert waited >= 0.3  # it did wait for the timeout (a lower bound, not a speed goal)
            assert c.get("/v1/records/7").json() == {"key": 7, "value": 7.0}
        replica = cluster.node("r", p)
        caught_up(replica, p)
        assert lookup(replica, [7]) == [7.0]
        with api(p) as c:  # with the replica following, synchronous writes are acknowledged
            r = c.post("/v1/records", json={"records": [{"key": 8, "value": 8.0}]})
            assert r.status_code == 200, r.text
        assert lookup(replica, [8]) == [8.0]  # acknowledged => already on the replica
        assert info(replica)["lsn"] == info(p)["lsn"]
    finally:
        cluster.stop_all()


def test_replication_config_is_validated() -> None:
    with pytest.raises(ConfigError, match="needs primary_url"):
        Config.from_dict({"replication": {"role": "replica"}})
    with pytest.raises(ConfigError, match="must start with http"):
        Config.from_dict({"replication": {"role": "replica", "primary_url": "omendb-0:3000"}})
    with pytest.raises(ConfigError, match="role"):
        Config.from_dict({"replication": {"role": "leader"}})
    with pytest.raises(ConfigError, match="synchronus_replicas"):
        Config.from_dict({"replication": {"synchronus_replicas": 1}})
    config = Config.from_dict({"replication": {"role": "replica", "primary_url": "https://p:3000",
                                               "synchronous_replicas": 2}})
    assert config.replication.synchronous_replicas == 2 and config.replication.synchronous_timeout_ms == 5000


def test_client_pointed_at_a_replica_writes_to_the_primary(tmp_path: Path) -> None:
    """The refusal's shape is what omendb.client redirects on: a write sent to a replica lands on the
    primary named in the error, reads through read_url are served by the replica."""
    from omendb.client import Client

    cluster = Cluster(tmp_path)
    try:
        p = cluster.node("p")
        (r,) = cluster.replicas(p, "r")
        with Client(r.url, username=ADMIN[0], password=ADMIN[1]) as client:
            lsn = client.put_many([1, 2, 3], [1.0, 2.0, 3.0])
        assert info(p)["lsn"] == lsn
        caught_up(r, p)
        with Client(p.url, read_url=r.url, username=ADMIN[0], password=ADMIN[1]) as client:
            assert client.get(2) == 2.0
            assert client.stats()["role"] in ("primary", "replica")
    finally:
        cluster.stop_all()


def test_follow_and_wal_requests_are_validated(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path)
    try:
        p = cluster.node("p")
        with api(p) as c:
            for bad in ('"omendb-0:3000"', '"ftp://host"', '"https://"', '"http://h/?x=1"',
                        '"https://\\uda01\\udcb0k"'):  # the last: lone surrogates, as schemathesis sends
                r = c.post("/admin/follow", content=f'{{"primary_url": {bad}}}',
                           headers={"content-type": "application/json"})
                assert r.status_code == 422, (bad, r.text)
                assert "primary_url" in r.json()["error"]["message"]
            c.post("/v1/records", json={"records": [{"key": 1, "value": 1.0}]}).raise_for_status()
            assert c.get("/admin/replication/wal", params={"after_lsn": 5}).status_code == 409
            r = c.get("/admin/replication/wal", params={"after_lsn": 1, "last_term": 3})
            assert r.status_code == 409 and r.json()["error"]["code"] == "diverged"
            r = c.get("/admin/replication/wal", params={"after_lsn": 0, "replica_id": "x"})
            assert r.status_code == 200 and r.headers["x-omendb-last-lsn"] == "1"
            assert c.get("/v1/stats").json()["replicas"]["x"]["lsn"] == 0
            assert c.post("/admin/promote").json() == {"role": "primary", "term": 1, "lsn": 1, "promoted": False}
            r = c.post("/v1/records", json={"records": [{"key": 2, "value": 2.0}]})
            assert r.status_code == 200  # still the primary
        with httpx.Client(base_url=p.url, timeout=5) as anonymous:
            assert anonymous.post("/admin/promote").status_code == 401
    finally:
        cluster.stop_all()


def test_follow_checks_the_new_primary_before_changing_anything(tmp_path: Path) -> None:
    """POST /admin/follow is refused, with nothing changed, when the target cannot be followed: it does not
    answer, its term is older (a replaced primary: following it would take its fenced timeline), or this
    node has no working replication credentials. A primary stays a writable primary."""
    cluster = Cluster(tmp_path)
    try:
        stale = cluster.node("stale")
        current = cluster.node("current", stale)
        with api(stale) as c:
            c.post("/v1/records", json={"records": [{"key": 1, "value": 1.0}]}).raise_for_status()
        caught_up(current, stale)
        with api(current) as c:
            assert c.post("/admin/promote").json()["term"] == 2  # stale is now a replaced primary, term 1
        nocreds = cluster.node("nocreds", credentials_file="")
        badcreds = cluster.node("badcreds", credentials_file=str(tmp_path / "missing.credentials"))
        unreachable = f"http://127.0.0.1:{free_port()}"

        def refused(node: Server, target: str, status: int, code: str, fragment: str) -> None:
            before = info(node)
            with api(node) as c:
                r = c.post("/admin/follow", json={"primary_url": target})
                assert r.status_code == status, r.text
                error = r.json()["error"]
                assert error["code"] == code and fragment in error["message"], error
                assert "nothing was changed" in error["message"]
                # Still a writable primary on its own term, following nobody.
                stats = c.get("/v1/stats").json()
                assert stats["role"] == "primary" and stats["primary"] is None and "replication" not in stats
                assert c.post("/v1/records", json={"records": [{"key": 7, "value": 7.0}]}).status_code == 200
            after = info(node)
            assert (after["role"], after["term"], after["term_history"]) == \
                   (before["role"], before["term"], before["term_history"])

        refused(current, stale.url, 409, "cannot_follow", "older than this server's term 2")
        refused(current, unreachable, 409, "cannot_follow", "cannot be reached")
        refused(nocreds, current.url, 400, "replication_credentials", "no replication credentials")
        refused(badcreds, current.url, 400, "replication_credentials", "missing.credentials")
        # The way that works: the replaced primary follows the current one (and rewinds to its timeline).
        with api(stale) as c:
            r = c.post("/admin/follow", json={"primary_url": current.url})
            assert r.status_code == 200 and r.json()["role"] == "replica", r.text
        caught_up(stale, current)
        assert lookup(stale, [7]) == [7.0]
    finally:
        cluster.stop_all()
