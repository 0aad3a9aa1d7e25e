"""The primary's in-memory ring of recent WAL frames, which replicas are streamed from: it must serve
exactly the frames the WAL holds, contiguous, bounded, and fall back (None) when it cannot."""

import numpy as np

from omendb import Database
from omendb.replication import FrameRing
from omendb.wal import decode_frames, encode_frame, read_frames
from tests.engine.conftest import make_config


def _frame(lsn: int) -> bytes:
    return encode_frame(lsn, 1, lsn * 10, np.array([lsn], np.int64), np.array([float(lsn)]))


def test_ring_serves_contiguous_runs_and_bounds_its_size():
    size = len(_frame(1))
    ring = FrameRing(max_bytes=size * 5)
    assert ring.after(0, 10, 1 << 20) is None
    for lsn in range(1, 11):
        ring.add(lsn, _frame(lsn))
    assert ring.after(2, 10, 1 << 20) is None  # fell out of the bound: the caller reads the WAL files
    body, last = ring.after(6, 10, 1 << 20)
    frames, _, problem = decode_frames(body, "ring")
    assert problem is None and [f.lsn for f in frames] == [7, 8, 9, 10] and last == 10
    body, last = ring.after(6, 8, 1 << 20)  # never beyond what is visible (durable) on the primary
    assert last == 8 and len(body) == 2 * size
    body, last = ring.after(6, 10, 1)  # at least one frame even when it exceeds max_bytes
    assert last == 7 and len(body) == size
    assert ring.after(10, 10, 1 << 20) is None
    ring.add(12, _frame(12))  # a gap empties the ring rather than serve a non-contiguous run
    assert ring.after(9, 12, 1 << 20) is None
    assert ring.after(11, 12, 1 << 20) == (_frame(12), 12)


def test_database_ring_matches_its_wal(tmp_path):
    with Database.open(make_config(tmp_path)) as db:
        rng = np.random.default_rng(1)
        for _ in range(30):
            keys = rng.integers(0, 1000, int(rng.integers(1, 50)))
            db.put_many(keys, rng.normal(size=len(keys)))
        db.delete_many([1, 2, 3])
        body, last = db.frame_ring.after(0, db.lsn(), 1 << 30)
        assert last == db.lsn() == 31
        from_ring, _, problem = decode_frames(body, "ring")
        assert problem is None
        from_wal = list(read_frames(db.wal_dir, after_lsn=0))
        assert [(f.lsn, f.term, f.commit_us, f.keys.tolist(), None if f.values is None else f.values.tolist())
                for f in from_ring] == \
               [(f.lsn, f.term, f.commit_us, f.keys.tolist(), None if f.values is None else f.values.tolist())
                for f in from_wal]


def _big_batch(db: Database, seed: int) -> None:
    keys = np.arange(seed * 40_000, (seed + 1) * 40_000, dtype=np.int64)
    db.put_many(keys, keys * 0.5)  # ~640 KB per frame: with 1 MB segments the WAL rotates every 2 frames


def test_primary_keeps_the_wal_a_recent_replica_still_needs(tmp_path):
    config = make_config(tmp_path, wal={"max_file_size_mb": 1})
    with Database.open(config) as db:
        _big_batch(db, 0)
        db.replicas.report("r1", db.lsn())  # a replica holds LSN 1
        for i in range(1, 7):
            _big_batch(db, i)
        db.checkpoint()
        assert [f.lsn for f in read_frames(db.wal_dir, after_lsn=1)] == list(range(2, 8))  # kept for r1
        db.replicas.report("r1", 7)
        _big_batch(db, 7)
        db.checkpoint()
        frames = [f.lsn for f in read_frames(db.wal_dir, after_lsn=0)]
        assert frames[0] > 2 and frames[-1] == 8  # r1 caught up: released as usual


def test_wal_kept_for_replicas_is_bounded(tmp_path):
    config = make_config(tmp_path, wal={"max_file_size_mb": 1, "max_retained_mb": 2})
    with Database.open(config) as db:
        _big_batch(db, 0)
        db.replicas.report("r1", 1)  # a replica stuck at LSN 1 ...
        for i in range(1, 9):
            _big_batch(db, i)
        db.checkpoint()  # ... does not keep more than max_retained_mb: it will re-seed
        assert [f.lsn for f in read_frames(db.wal_dir, after_lsn=0)][0] > 2
