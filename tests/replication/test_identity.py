"""A replica is a copy of its primary and carries the primary's database identity (real processes)."""

from __future__ import annotations

import json
from pathlib import Path

from omendb.files import MANIFEST, list_segments
from omendb.wal import read_segment_header
from tests.engine.previous_release import downgrade_to_previous_release
from tests.replication.cluster import Cluster, api, caught_up, info, lookup


def _identity_on_disk(node_dir: Path) -> tuple[str, set[str | None]]:
    manifest = json.loads((node_dir / "data" / MANIFEST).read_text())
    headers = {read_segment_header(path).database_id for _, path in list_segments(node_dir / "wal")}
    return manifest["database_id"], headers


def test_a_new_replica_takes_the_primarys_identity_and_keeps_it(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path)
    try:
        p = cluster.node("p")
        with api(p) as c:
            c.post("/v1/records", json={"records": [{"key": 1, "value": 1.0}]}).raise_for_status()
        r = cluster.node("r", p)
        caught_up(r, p)
        primary_id = info(p)["database_id"]
        assert info(r)["database_id"] == primary_id
        r.stop()
        assert _identity_on_disk(tmp_path / "r") == (primary_id, {primary_id})
        r.start()  # restarts on its own WAL, which carries the primary's identity
        with api(p) as c:
            c.post("/v1/records", json={"records": [{"key": 2, "value": 2.0}]}).raise_for_status()
        caught_up(r, p)
        assert lookup(r, [1, 2]) == [1.0, 2.0]
    finally:
        cluster.stop_all()


def test_a_node_holding_another_databases_writes_reseeds_before_following(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path)
    try:
        p = cluster.node("p")
        with api(p) as c:
            c.post("/v1/records", json={"records": [{"key": 1, "value": 1.0}]}).raise_for_status()
        other = cluster.node("r")  # a primary of its own database first
        with api(other) as c:
            c.post("/v1/records", json={"records": [{"key": 99, "value": 99.0}]}).raise_for_status()
        other.stop()
        r = cluster.node("r", p)
        caught_up(r, p)
        assert info(r)["database_id"] == info(p)["database_id"]
        assert lookup(r, [1, 99]) == [1.0, None]
        assert any(rec.get("msg") == "re-seeded from the primary's snapshot" for rec in r.log_records())
        assert any(rec.get("msg") == "rewound write" and rec.get("keys") == [99] for rec in r.log_records())
    finally:
        cluster.stop_all()


def test_after_an_upgrade_replicas_take_the_primarys_identity_without_reseeding(tmp_path: Path) -> None:
    """Every node of a previous-release cluster gets its own identity when it is upgraded; a replica whose log
    is a prefix of the primary's exchanges it for the primary's in place instead of re-seeding."""
    cluster = Cluster(tmp_path)
    try:
        p = cluster.node("p")
        r = cluster.node("r", p)
        with api(p) as c:
            c.post("/v1/records", json={"records": [{"key": 1, "value": 1.0}]}).raise_for_status()
        caught_up(r, p)
        with api(r) as c:  # a WAL frame after the replica's checkpoint, so its WAL holds something to relabel
            c.post("/admin/checkpoint").raise_for_status()
        with api(p) as c:
            c.post("/v1/records", json={"records": [{"key": 2, "value": 2.0}]}).raise_for_status()
        caught_up(r, p)
        r.stop(9)
        p.stop()
        for name in ("p", "r"):
            downgrade_to_previous_release(tmp_path / name / "data", tmp_path / name / "wal")
        p = cluster.node("p")
        r = cluster.node("r", p)
        with api(p) as c:
            c.post("/v1/records", json={"records": [{"key": 3, "value": 3.0}]}).raise_for_status()
        caught_up(r, p)
        primary_id = info(p)["database_id"]
        assert info(r)["database_id"] == primary_id
        assert lookup(r, [1, 2, 3]) == [1.0, 2.0, 3.0]
        assert not any(rec.get("msg", "").startswith("re-seed") for rec in r.log_records())
        r.stop(9)
        manifest_id, headers = _identity_on_disk(tmp_path / "r")
        assert manifest_id == primary_id and headers <= {primary_id, None}  # None: the previous release's
        r.start()  # the relabelled WAL is this database's
        caught_up(r, p)
    finally:
        cluster.stop_all()
