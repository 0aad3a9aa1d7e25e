"""WAL archiving across a failover: only the primary ships; after the primary is SIGKILLed and a replica
promoted, the new primary ships its own WAL into the same archive, and a restore of the archive follows the
new primary's history: every write acknowledged by either primary (and shipped) is there, nothing else."""

from __future__ import annotations

import httpx

from tests.backup.conftest import tool
from tests.replication.cluster import ADMIN, Cluster, Writer, caught_up, failover, wait_until
from tests.server.harness import Server


def _archive(server: Server) -> dict:
    return httpx.get(f"{server.url}/v1/stats", auth=ADMIN, timeout=10).json()["wal_archive"]


def test_the_promoted_replica_ships_into_the_same_archive_and_a_restore_follows_it(tmp_path):
    backups = tmp_path / "backups"
    cluster = Cluster(tmp_path / "c", sections={"database": {"name": "shop"},
                                                "wal_archive": {"url": str(backups), "interval_seconds": 0.2}})
    try:
        primary = cluster.node("p")
        (replica,) = cluster.replicas(primary, "r")
        env = {"OMENDB_USER": ADMIN[0], "OMENDB_PASSWORD": ADMIN[1]}
        tool("--backup-dir", str(backups), "--source", primary.url, "full-backup", "--database", "shop", env=env)
        first = Writer(primary.url, first_key=0).start()
        wait_until(lambda: len(first.acked) >= 30, 60, "writes on the first primary")
        first.stop()
        caught_up(replica, primary)
        assert not _archive(replica)["active"], "a replica never ships"
        wait_until(lambda: _archive(primary)["shipped_lsn"] == httpx.get(
            f"{primary.url}/v1/stats", auth=ADMIN, timeout=10).json()["lsn"], 30, "the first primary's archive")
        primary.stop(9)

        new, _, promoted = failover([replica])
        assert promoted["promoted"]
        second = Writer(new.url, first_key=1_000_000).start()
        wait_until(lambda: len(second.acked) >= 30, 60, "writes on the new primary")
        second.stop()
        lsn = httpx.get(f"{new.url}/v1/stats", auth=ADMIN, timeout=10).json()["lsn"]
        wait_until(lambda: _archive(new)["shipped_lsn"] == lsn, 30, "the new primary's archive")
        assert _archive(new)["active"] and not _archive(new)["failing"], _archive(new)
        new.stop(9)
    finally:
        cluster.stop_all()

    out = tool("--backup-dir", str(backups), "--data-dir", str(tmp_path / "restored"), "restore", "--backup-id",
               "latest").stdout
    assert f"to LSN {lsn}" in out, out
    with Server(tmp_path / "restored", {"database": {"name": "shop"}}).start() as restored:
        keys = first.keys + second.keys
        r = httpx.post(f"{restored.url}/v1/records/lookup", json={"keys": keys}, timeout=30)
        assert r.status_code == 200, r.text
        got = r.json()["records"]
        missing = [k for k, rec in zip(keys, got, strict=True) if rec is None or rec["value"] != k * 0.5]
        assert missing == [], missing[:10]
        assert httpx.get(f"{restored.url}/v1/stats", timeout=10).json()["records"] == len(keys)
