"""WAL replay exists once (runs.replay): the engine's recovery and the backup tool's State.apply rebuild the
same records from the same WAL frames, real segments on disk included."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from omendb import Database
from omendb.backup.payload import State
from omendb.runs import replay
from omendb.wal import read_frames
from tests.engine.conftest import make_config


def test_recovery_and_restore_replay_the_same_frames_to_the_same_records(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    with Database.open(config) as db:
        db.put_many([5, 1, 3, 1], [5.0, 1.0, 3.0, 1.5])  # a key repeated in one batch: the last wins
        db.delete_many([3, 42])  # 42 was never there
        db.put_many(list(range(100, 2100)), [float(k) for k in range(100, 2100)])  # a large batch
        db.put_many([5], [-5.0])
        db.close(checkpoint=False)  # every write stays in the WAL only
    frames = list(read_frames(Path(config.wal.dir), after_lsn=0))
    assert [f.lsn for f in frames] == [1, 2, 3, 4]

    empty = np.zeros(0, np.int64)
    state = State(empty, np.zeros(0), empty, 0, 1)
    state.apply(frames)
    with Database.open(config) as db:  # recovery replays the same frames
        keys, values = db.range(-(2**63))
        assert db.lsn() == state.lsn == 4
    assert keys.tolist() == state.keys.tolist()
    assert values.tolist() == state.values.tolist()
    assert dict(zip(state.keys.tolist()[:2], state.values.tolist()[:2], strict=True)) == {1: 1.5, 5: -5.0}


def test_replay_reports_each_frame_in_order_and_nothing_for_no_frames(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    with Database.open(config) as db:
        db.put_many([2], [2.0])
        db.delete_many([2])
        db.close(checkpoint=False)
    seen: list[int] = []
    run = replay(read_frames(Path(config.wal.dir), after_lsn=0), lambda f: seen.append(f.lsn))
    assert seen == [1, 2]
    assert run is not None and run.keys.tolist() == [2] and run.live.tolist() == [False]  # a tombstone
    assert replay([], lambda f: seen.append(f.lsn)) is None
