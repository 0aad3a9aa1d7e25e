import logging

import numpy as np
import pytest

from omendb import CorruptionError, Database
from omendb.files import list_segments
from omendb.wal import FRAME_HEADER, SEGMENT_HEADER

from .conftest import make_config


def _write_batches(config, batches):
    with Database.open(config) as db:
        for i in range(batches):
            db.put_many([i, i + 1000], [float(i), float(-i)])
        db.close(checkpoint=False)  # leave everything in the WAL, as a crash would


def _segment(config):
    return list_segments(config.wal_dir)[-1][1]


def test_recovery_replays_every_acknowledged_batch(tmp_path):
    config = make_config(tmp_path)
    _write_batches(config, 50)
    with Database.open(config) as db:
        assert db.lsn() == 50
        assert db.count() == 100
        assert db.get(49) == 49.0 and db.get(1049) == -49.0


@pytest.mark.parametrize("cut", [1, FRAME_HEADER.size - 1, FRAME_HEADER.size + 3])
def test_torn_final_frame_is_truncated_with_a_warning(tmp_path, caplog, cut):
    config = make_config(tmp_path)
    _write_batches(config, 10)
    path = _segment(config)
    size = path.stat().st_size
    frame = (size - SEGMENT_HEADER.size) // 10
    with open(path, "r+b") as f:
        f.truncate(size - frame + cut)
    with caplog.at_level(logging.WARNING, logger="omendb.wal"), Database.open(config) as db:
        assert db.lsn() == 9
        assert db.get(9) is None and db.get(8) == 8.0
    assert "torn tail" in caplog.text
    with Database.open(config) as db:  # the truncation stuck, and new writes continue the LSN sequence
        assert db.put_many([5], [5.5]) == 10


def test_garbage_in_the_final_frame_is_a_torn_tail(tmp_path):
    config = make_config(tmp_path)
    _write_batches(config, 10)
    path = _segment(config)
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    path.write_bytes(bytes(data))
    with Database.open(config) as db:
        assert db.lsn() == 9


def test_corruption_in_the_middle_stops_open_naming_file_and_offset(tmp_path):
    config = make_config(tmp_path)
    _write_batches(config, 10)
    path = _segment(config)
    data = bytearray(path.read_bytes())
    frame = (len(data) - SEGMENT_HEADER.size) // 10
    offset = SEGMENT_HEADER.size + 3 * frame
    data[offset + FRAME_HEADER.size + 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptionError) as err:
        Database.open(config)
    message = str(err.value)
    assert str(path) in message and f"offset {offset}" in message and "backup_tool restore" in message
    # Nothing was skipped or rewritten: the damaged file is still there for inspection.
    assert path.read_bytes() == bytes(data)


def test_rotation_by_size_and_release_after_checkpoint(tmp_path):
    config = make_config(tmp_path, wal={"max_file_size_mb": 1})
    rng = np.random.default_rng(0)
    with Database.open(config) as db:
        for _ in range(12):
            keys = rng.integers(0, 10**12, 20_000)
            db.put_many(keys, keys.astype(float))
        assert len(list_segments(config.wal_dir)) >= 4
        lsn = db.lsn()
        db.checkpoint()
        # Covered segments are gone; the segment being written stays.
        assert len(list_segments(config.wal_dir)) == 1
    with Database.open(config) as db:
        assert db.lsn() == lsn


def test_backups_hold_wal_until_archived_within_the_bound(tmp_path):
    config = make_config(tmp_path, wal={"max_file_size_mb": 1, "max_retained_mb": 3})
    rng = np.random.default_rng(1)
    with Database.open(config) as db:
        db.mark_archived(0)
        for _ in range(6):
            db.put_many(rng.integers(0, 10**12, 20_000), np.ones(20_000))
        db.checkpoint()
        kept = list_segments(config.wal_dir)
        assert len(kept) > 1 and not db.wal_released_unarchived  # retained for the next incremental backup
        db.mark_archived(db.lsn())
        assert len(list_segments(config.wal_dir)) == 1
        for _ in range(12):
            db.put_many(rng.integers(0, 10**12, 20_000), np.ones(20_000))
        db.checkpoint()
        assert db.wal_released_unarchived  # past max_retained_mb: released, loudly
        assert db.stats()["wal_released_unarchived"]


def test_wal_disabled_keeps_data_only_through_checkpoints(tmp_path):
    config = make_config(tmp_path, wal={"enabled": False})
    with Database.open(config) as db:
        db.put_many([1, 2], [1.0, 2.0])
    with Database.open(config) as db:
        assert db.count() == 2
    assert not config.wal_dir.exists() or not list_segments(config.wal_dir)
