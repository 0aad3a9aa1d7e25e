"""Engine-level replication: a replica applying the primary's WAL frames, promotion and term fencing,
divergence detection, and synchronous-replication waits."""

import threading
import time

import numpy as np
import pytest

from omendb import Database, InvalidInput, ReadOnly
from omendb.replication import Fenced, ReplicationTimeout, ReplicaTracker, divergence_lsn
from omendb.wal import Frame, read_frames

from .conftest import make_config


def _stream(primary: Database, replica: Database) -> int:
    """Ship every frame the replica lacks, as the server's WAL stream does."""
    return replica.apply_frames(read_frames(primary.wal_dir, after_lsn=replica.lsn()))


def _contents(db: Database):
    keys, values = db.range(-(2**63), None)
    return keys.tolist(), values.tolist()


@pytest.fixture
def pair(tmp_path):
    primary = Database.open(make_config(tmp_path / "p", index={"retrain_threshold": 500}))
    replica = Database.open(make_config(tmp_path / "r", index={"retrain_threshold": 700}))
    replica.set_read_only("this is a replica; write to the primary at http://p:3000")
    yield primary, replica
    primary.close()
    replica.close()


def test_replica_follows_the_primary_exactly(pair):
    primary, replica = pair
    rng = np.random.default_rng(3)
    for round_ in range(5):
        for _ in range(20):
            keys = rng.integers(0, 5000, int(rng.integers(1, 300)))
            primary.put_many(keys, rng.normal(size=len(keys)))
        primary.delete_many(rng.integers(0, 5000, 50))
        if round_ == 2:
            primary.checkpoint()  # frames already shipped may leave the primary's WAL; the replica is ahead
        assert _stream(primary, replica) == primary.lsn()
        assert _contents(replica) == _contents(primary)
    assert replica.last_commit_us == primary.last_commit_us
    replica.close()
    reopened = Database.open(replica.config)  # the replica's own WAL holds the frames with their LSNs
    assert reopened.lsn() == primary.lsn() and _contents(reopened) == _contents(primary)
    reopened.close()


def test_replica_refuses_client_writes_naming_the_primary(pair):
    _, replica = pair
    with pytest.raises(ReadOnly, match="write to the primary at http://p:3000"):
        replica.put_many([1], [1.0])
    with pytest.raises(ReadOnly):
        replica.delete_many([1])


def test_frames_must_continue_the_log(pair):
    primary, replica = pair
    primary.put_many([1], [1.0])
    primary.put_many([2], [2.0])
    frames = list(read_frames(primary.wal_dir, after_lsn=0))
    with pytest.raises(InvalidInput, match="expects 1"):
        replica.apply_frames(frames[1:])
    assert replica.lsn() == 0


def test_promotion_starts_a_durable_term_and_fences_the_old_primary(pair, tmp_path):
    primary, replica = pair
    primary.put_many([1, 2], [1.0, 2.0])
    _stream(primary, replica)
    assert replica.promote() == 2
    assert replica.term_history == [(1, 1), (2, 2)]
    replica.put_many([3], [3.0])  # the new primary accepts writes in term 2
    # The old primary, partitioned, keeps accepting writes in term 1: they can never enter the new timeline.
    primary.put_many([99], [99.0])
    old_frames = list(read_frames(primary.wal_dir, after_lsn=1))
    with pytest.raises(Fenced, match="from term 1, older than this database's term 2"):
        replica.apply_frames(old_frames)
    assert replica.get(99) is None
    # The term survives a restart even before any checkpoint.
    config = replica.config
    replica.close(checkpoint=False)
    with Database.open(config) as reopened:
        assert reopened.term == 2 and reopened.term_history == [(1, 1), (2, 2)]
        assert reopened.get(3) == 3.0
        # And the returning old primary finds where its timeline left the new one.
        assert divergence_lsn(primary.term_history, primary.lsn(), reopened.term_history) == 2


def test_a_frame_from_an_older_term_is_fenced(tmp_path):
    with Database.open(make_config(tmp_path)) as db:
        db.promote()
        frame = Frame(lsn=1, term=1, commit_us=0, op=1, keys=np.array([1]), values=np.array([1.0]))
        with pytest.raises(Fenced, match="older than this database's term 2"):
            db.apply_frames([frame])


@pytest.mark.parametrize("local, local_lsn, primary, expected", [
    ([(1, 1)], 10, [(1, 1)], None),  # same timeline: follow
    ([(1, 1)], 10, [(1, 1), (2, 15)], None),  # we stopped before the switch: a prefix, follow
    ([(1, 1)], 20, [(1, 1), (2, 15)], 15),  # we wrote 15..20 in term 1 after the switch: rewind from 15
    ([(1, 1), (2, 15)], 20, [(1, 1), (2, 15), (3, 18)], 18),
    ([(1, 1), (3, 5)], 9, [(1, 1), (2, 4)], 1),  # a term the primary never saw: nothing provably shared
    ([(1, 1)], 0, [(1, 1), (2, 1)], None),  # empty: follow from the start
])
def test_divergence(local, local_lsn, primary, expected):
    assert divergence_lsn(local, local_lsn, primary) == expected


def test_synchronous_write_waits_for_replicas_and_times_out_clearly(tmp_path):
    with Database.open(make_config(tmp_path)) as db:
        db.sync_replicas, db.sync_timeout_s = 1, 5.0
        threading.Timer(0.2, lambda: db.replicas.report("r1", 1)).start()
        started = time.monotonic()
        assert db.put_many([1], [1.0]) == 1
        assert time.monotonic() - started >= 0.15
        db.sync_timeout_s = 0.2
        with pytest.raises(ReplicationTimeout, match="durable on the primary but only 0 of the 1"):
            db.put_many([2], [2.0])
        assert db.get(2) == 2.0  # not rolled back: it is in the primary's WAL
        assert db.replicas.confirmed(1) == 1


def test_tracker_positions():
    tracker = ReplicaTracker()
    tracker.report("a", 5)
    tracker.report("a", 3)  # a stale report never moves a replica back
    assert tracker.positions()["a"][0] == 5
    tracker.forget("a")
    assert tracker.positions() == {}


def test_wait_for_lsn_wakes_on_a_write(tmp_path):
    with Database.open(make_config(tmp_path)) as db:
        threading.Timer(0.1, lambda: db.put_many([1], [1.0])).start()
        assert db.wait_for_lsn(0, timeout_s=10) == 1
        assert db.wait_for_lsn(1, timeout_s=0.05) == 1


def test_tracker_clear_forgets_an_earlier_stint_and_reports_refresh_seen_at():
    tracker = ReplicaTracker()
    tracker.report("a", 5)
    time.sleep(0.05)
    tracker.report("a", 3)  # stale: the position stays, the sign of life is new
    lsn, age = tracker.positions()["a"]
    assert lsn == 5 and age < 0.05
    tracker.clear()  # promoted again: nothing from before may confirm a synchronous write
    assert tracker.positions() == {} and tracker.confirmed(1) == 0
