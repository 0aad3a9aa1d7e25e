"""A replica's re-seed replaces its files the way omendb.files lays them out (real processes on loopback):
afterwards its WAL directory holds only the segments of the primary's timeline and the LOCK, its data
directory only the checkpoint the MANIFEST names, and WAL_HEAD names the newest segment."""

from __future__ import annotations

from pathlib import Path

from omendb import files
from omendb.wal import read_segment_header
from tests.replication.cluster import Cluster, api, caught_up, info, lookup


def test_after_a_reseed_the_wal_directory_holds_only_what_the_layout_says(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, sections={"wal": {"max_file_size_mb": 1}})
    try:
        p = cluster.node("p")
        with api(p) as c:
            c.post("/v1/records", json={"records": [{"key": 1, "value": 1.0}]}).raise_for_status()
        other = cluster.node("r")  # a primary of its own database first: several segments of its own
        with api(other) as c:
            for batch in range(3):  # ~0.8 MB each: the WAL rotates
                c.post("/v1/records", json={"records": [{"key": batch * 50_000 + j, "value": 0.5}
                                                        for j in range(50_000)]}).raise_for_status()
        other.stop(9)  # no checkpoint at exit: the WAL keeps every segment
        data_dir, wal_dir = tmp_path / "r" / "data", tmp_path / "r" / "wal"
        old_segments = files.list_segments(wal_dir)
        assert len(old_segments) >= 2
        files.write_archived(wal_dir, 2)  # as a backup of that database would have left it

        r = cluster.node("r", p)
        caught_up(r, p)
        assert any(rec.get("msg") == "re-seeded from the primary's snapshot" for rec in r.log_records())
        assert lookup(r, [1, 0]) == [1.0, None]
        primary_id = info(p)["database_id"]

        segments = files.list_segments(wal_dir)
        assert sorted(path.name for path in wal_dir.iterdir()) == sorted(
            [files.LOCK, *(path.name for _, path in segments)])  # ARCHIVED went with the old WAL
        assert segments and {read_segment_header(path).database_id for _, path in segments} == {primary_id}
        manifest = files.read_manifest(data_dir)
        assert manifest is not None and manifest.database_id == primary_id
        assert segments[0][0] == manifest.checkpoint_lsn + 1
        assert files.read_head(data_dir) == (primary_id, segments[-1][0])
        assert manifest.wal_dir == str(wal_dir)
        leftovers = [path.name for path in data_dir.iterdir()
                     if files.is_leftover(path.name, manifest.base_file) or path.name == files.RESEED_STAGING]
        assert leftovers == []
    finally:
        cluster.stop_all()


def test_a_reseeded_replica_promoted_waits_the_configured_time_for_its_synchronous_replica(tmp_path: Path) -> None:
    """Found by the ten-partition journey (issue 16): the database a re-seed reopens had no synchronous timeout,
    so once promoted every write failed at once with `replication_timeout` ("0 of the 1 required replicas")
    although its replica was following it with no lag."""
    cluster = Cluster(tmp_path, replication={"synchronous_replicas": 1, "synchronous_timeout_ms": 10_000})
    try:
        foreign = cluster.node("r", synchronous_replicas=0)  # a database of its own first: r must re-seed
        with api(foreign) as c:
            c.post("/v1/records", json={"records": [{"key": 7, "value": 7.0}]}).raise_for_status()
        foreign.stop(9)
        p = cluster.node("p")
        r = cluster.node("r", p)
        caught_up(r, p)
        assert any(rec.get("msg") == "re-seeded from the primary's snapshot" for rec in r.log_records())
        with api(r) as c:
            c.post("/admin/promote").raise_for_status()
        with api(p) as c:
            c.post("/admin/follow", json={"primary_url": r.url}).raise_for_status()
        with api(r) as c:
            for key in range(5):  # each waits for p's next poll (up to poll_wait_ms), well within 10 s
                res = c.post("/v1/records", json={"records": [{"key": key, "value": key / 2}]})
                assert res.status_code == 200, res.text
        caught_up(p, r)
        assert lookup(p, [0, 4, 7]) == [0.0, 2.0, None]
    finally:
        cluster.stop_all()
