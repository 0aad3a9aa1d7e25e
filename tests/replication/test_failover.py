"""Failover with real processes: a primary and two replicas under a write load; the primary is killed
(SIGKILL) or partitioned, the most advanced replica is promoted and the other repointed.

- synchronous (synchronous_replicas = 1): no acknowledged write is lost;
- asynchronous: the loss window is measured and printed (records and seconds), never asserted as a time;
  what is asserted is that what survives is a prefix of the acknowledged writes;
- a partitioned old primary keeps accepting writes after the promotion: they never reach the new timeline,
  a replica on the new term refuses to follow it, and when it rejoins as a replica it rewinds them (each
  logged) and converges.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx

from tests.replication.cluster import Cluster, Writer, api, caught_up, failover, info, lookup, wait_until


def _run_load(primary_url: str, seconds: float) -> Writer:
    writer = Writer(primary_url).start()
    wait_until(lambda: len(writer.acked) >= 20, 30, "the writer to get going")
    time.sleep(seconds)
    return writer


def test_sync_failover_loses_no_acknowledged_write(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, replication={"synchronous_replicas": 1, "synchronous_timeout_ms": 10000})
    try:
        p = cluster.node("p")
        r1, r2 = cluster.replicas(p, "r1", "r2")
        writer = _run_load(p.url, 1.5)
        p.stop(signal.SIGKILL)  # mid-load: some writes are in flight and never acknowledged
        writer.stop()
        acked = writer.keys
        assert len(acked) >= 400
        new, others, promoted = failover([r1, r2])
        assert promoted["promoted"] and promoted["term"] == 2
        values = lookup(new, acked)
        missing = [k for k, v in zip(acked, values, strict=True) if v is None]
        assert missing == [], f"{len(missing)} acknowledged writes lost in synchronous mode: {missing[:20]}"
        assert values == [k * 0.5 for k in acked]
        # The new primary is synchronous too: its writes succeed once the repointed replica follows it.
        with api(new) as c:
            r = c.post("/v1/records", json={"records": [{"key": -1, "value": 1.0}]})
            assert r.status_code == 200, r.text
        caught_up(others[0], new)
        assert lookup(others[0], acked + [-1]) == values + [1.0]
        with api(new) as c:
            stats = c.get("/v1/stats").json()
        assert stats["role"] == "primary" and stats["term"] == 2
        assert stats["replicas"][others[0].config.replication.replica_id]["lsn"] >= stats["lsn"] - 1
    finally:
        cluster.stop_all()


def test_async_failover_loss_window_is_measured(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path)
    try:
        p = cluster.node("p")
        r1, r2 = cluster.replicas(p, "r1", "r2")
        writer = _run_load(p.url, 1.5)
        p.stop(signal.SIGKILL)
        writer.stop()
        new, _others, _ = failover([r1, r2])
        found = lookup(new, writer.keys)
        survived = [v is not None for v in found]
        # One writer, replicas apply the log in order: what survives is a prefix of what was acknowledged.
        first_lost = survived.index(False) if False in survived else len(survived)
        assert all(survived[:first_lost]) and not any(survived[first_lost:])
        lost = len(survived) - first_lost
        batches = writer.acked
        lost_batches = [b for b in batches if b[0][0] >= writer.keys[first_lost]] if lost else []
        survivors = batches[:len(batches) - len(lost_batches)]
        window = batches[-1][1] - survivors[-1][1] if lost_batches and survivors else 0.0
        print(f"\nasync failover: {len(writer.keys)} acknowledged records, {lost} lost "
              f"({len(lost_batches)} batches), loss window {window * 1000:.1f} ms")
    finally:
        cluster.stop_all()


def test_partitioned_old_primary_is_fenced_and_rewinds_when_it_rejoins(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path)
    try:
        p = cluster.node("p")
        r1, r2 = cluster.replicas(p, "r1", "r2")
        writer = _run_load(p.url, 0.5).stop()
        caught_up(r1, p)
        # The partition: the replicas stop following p (promotion and repointing); p keeps running.
        new, (r2_,), promoted = failover([r1, r2])
        assert r2_ is r2 and promoted["term"] == 2
        fenced = Writer(p.url, first_key=10_000_000).start()  # clients still reaching the old primary
        timeline = Writer(new.url, first_key=20_000_000).start()
        wait_until(lambda: len(fenced.acked) >= 10 and len(timeline.acked) >= 10, 30, "writes on both sides")
        fenced.stop()
        timeline.stop()
        caught_up(r2, new)
        assert set(lookup(new, fenced.keys)) == {None}, "an old primary's write reached the new timeline"
        assert set(lookup(r2, fenced.keys)) == {None}
        assert None not in lookup(r2, writer.keys + timeline.keys)
        # A replica on the new term refuses to follow the old primary (it is fenced by its term), at once
        # and without leaving the new one.
        with api(r2) as c:
            r = c.post("/admin/follow", json={"primary_url": p.url})
            assert r.status_code == 409 and "fenced" in r.json()["error"]["message"], r.text
            assert c.get("/v1/stats").json()["primary"] == new.url
            c.post("/admin/follow", json={"primary_url": new.url}).raise_for_status()
        # The old primary returns as a replica of the new one: it rewinds its fenced writes and follows.
        p.stop(signal.SIGKILL)
        old = cluster.node("p", new)
        caught_up(old, new)
        assert set(lookup(old, fenced.keys)) == {None}
        assert None not in lookup(old, writer.keys + timeline.keys)
        rewound = [r for r in old.log_records() if r.get("msg") == "rewound write"]
        rewound_keys = {k for r in rewound for k in r["keys"]}
        assert set(fenced.keys) <= rewound_keys, "every discarded write must be logged"
        assert all(r["term"] == 1 for r in rewound)
        with api(old) as c:
            r = c.post("/v1/records", json={"records": [{"key": 1, "value": 1.0}]})
        assert r.status_code == 409 and r.json()["error"]["code"] == "read_only"
        assert new.url in r.json()["error"]["message"]
        assert info(old)["term_history"] == info(new)["term_history"]
    finally:
        cluster.stop_all()


def test_old_primary_demoted_live_rewinds_via_follow(tmp_path: Path) -> None:
    """The operator's path: POST /admin/follow on a running old primary demotes and rewinds it in place."""
    cluster = Cluster(tmp_path)
    try:
        p = cluster.node("p")
        r1 = cluster.node("r1", p)
        Writer(p.url, batch=5).start().stop()
        with api(p) as c:
            c.post("/v1/records", json={"records": [{"key": 1, "value": 1.0}]}).raise_for_status()
        caught_up(r1, p)
        with api(r1) as c:
            c.post("/admin/promote").raise_for_status()
            c.post("/v1/records", json={"records": [{"key": 2, "value": 2.0}]}).raise_for_status()
        with api(p) as c:
            c.post("/v1/records", json={"records": [{"key": 3, "value": 3.0}]}).raise_for_status()  # fenced
            c.post("/admin/follow", json={"primary_url": r1.url}).raise_for_status()
        caught_up(p, r1)
        assert lookup(p, [1, 2, 3]) == [1.0, 2.0, None]
        assert any(r.get("msg") == "rewound write" and r["keys"] == [3] for r in p.log_records())
        with api(p) as c:
            r = c.post("/v1/records", json={"records": [{"key": 4, "value": 4.0}]})
        assert r.status_code == 409 and r1.url in r.text
        with httpx.Client() as c:  # /ready is open: the demoted primary serves reads as a caught-up replica
            assert c.get(f"{p.url}/ready").status_code == 200
    finally:
        cluster.stop_all()
