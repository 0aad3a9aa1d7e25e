"""A full volume (bytes or inodes) on the write path: the write is refused with StorageFull and nothing is
applied, the writer keeps a good segment, and writes resume by themselves once space is freed. Real tmpfs
mounts, real ENOSPC from the kernel."""

import logging
import threading

import numpy as np
import pytest

from omendb import Database, StorageFull
from omendb.files import list_segments

from ..tmpfs import fill_bytes, fill_inodes, mounted_tmpfs
from .conftest import make_config

BATCH = 1000  # records per batch: a 16 KB frame, more than the page tmpfs may still have room in


def _batch(i):
    keys = np.arange(i * BATCH, (i + 1) * BATCH, dtype=np.int64)
    return keys, keys.astype(np.float64) + 0.5


@pytest.fixture
def wal_tmpfs(tmp_path):
    with mounted_tmpfs(tmp_path / "walfs", "2m", inodes=64) as mount:
        yield mount


@pytest.fixture
def data_tmpfs(tmp_path):
    with mounted_tmpfs(tmp_path / "datafs", "1m") as mount:
        yield mount


def _config(tmp_path, wal_dir=None, data_dir=None, **sections):
    config = make_config(tmp_path, **sections)
    if wal_dir is not None:
        config = config.replace("wal", dir=str(wal_dir))
    if data_dir is not None:
        config = config.replace("database", data_dir=str(data_dir))
    return config


def _all_present(config, batches):
    with Database.open(config) as db:
        for i in batches:
            keys, values = _batch(i)
            got, found = db.get_many(keys)
            assert found.all() and (got == values).all(), f"batch {i} lost"


def test_out_of_bytes_during_append_refuses_then_resumes(tmp_path, wal_tmpfs):
    config = _config(tmp_path, wal_dir=wal_tmpfs / "wal")
    with Database.open(config) as db:
        for i in range(3):
            db.put_many(*_batch(i))
        segment = list_segments(config.wal_dir)[-1][1]
        size = segment.stat().st_size
        filler = fill_bytes(wal_tmpfs / "filler")
        lsn = db.lsn()
        for _ in range(2):  # refused every time, never a broken writer
            with pytest.raises(StorageFull) as err:
                db.put_many(*_batch(3))
            assert str(config.wal_dir) in err.value.message and "free space" in err.value.message
        assert err.value.code == "insufficient_storage"
        assert db.lsn() == lsn and db.get(3 * BATCH) is None  # nothing applied
        assert segment.stat().st_size == size  # the partial frame was taken back
        reason = db.wal_full_reason()
        assert reason is not None and str(config.wal_dir) in reason
        db.check_health()  # alive: a restart would not free any space
        filler.unlink()
        assert db.wal_full_reason() is None  # the probe sees the room by itself
        db.put_many(*_batch(3))
        db.put_many(*_batch(4))
        db.close(checkpoint=False)
    _all_present(config, range(5))


def _fill_segment(db, config):
    """Write batches until the next one makes the segment rotate; returns how many were written."""
    i = 0
    limit = config.wal.max_file_size_mb * 1024 * 1024
    frame = 36 + 16 + 16 * BATCH
    while list_segments(config.wal_dir)[-1][1].stat().st_size + 2 * frame <= limit:
        db.put_many(*_batch(i))
        i += 1
    db.put_many(*_batch(i))
    return i + 1


def test_out_of_bytes_during_rotation_keeps_the_old_segment_and_resumes(tmp_path, wal_tmpfs):
    config = _config(tmp_path, wal_dir=wal_tmpfs / "wal", wal={"max_file_size_mb": 1})
    with Database.open(config) as db:
        written = _fill_segment(db, config)
        assert len(list_segments(config.wal_dir)) == 1
        filler = fill_bytes(wal_tmpfs / "filler")
        for _ in range(2):  # the rotation fails cleanly each time (the old code then failed with EBADF)
            with pytest.raises(StorageFull):
                db.put_many(*_batch(written))
        assert len(list_segments(config.wal_dir)) == 1  # no empty half-made segment left behind
        filler.unlink()
        db.put_many(*_batch(written))
        assert len(list_segments(config.wal_dir)) == 2
        db.close(checkpoint=False)
    _all_present(config, range(written + 1))


def test_out_of_inodes_during_rotation_refuses_then_resumes(tmp_path):
    with mounted_tmpfs(tmp_path / "walfs", "8m", inodes=16) as mount:
        config = _config(tmp_path, wal_dir=mount / "wal", wal={"max_file_size_mb": 1})
        with Database.open(config) as db:
            written = _fill_segment(db, config)
            fillers = fill_inodes(mount)
            assert fillers, "the tmpfs had no spare inode to fill"
            with pytest.raises(StorageFull) as err:
                db.put_many(*_batch(written))
            assert "No space left on device" in err.value.message
            assert db.wal_full_reason() is not None  # the probe needs an inode too: still full
            fillers[-1].unlink()
            assert db.wal_full_reason() is None
            db.put_many(*_batch(written))
            db.close(checkpoint=False)
        _all_present(config, range(written + 1))


def test_out_of_bytes_during_checkpoint_leaves_no_tmp_and_loses_nothing(tmp_path, data_tmpfs):
    config = _config(tmp_path, data_dir=data_tmpfs / "data", storage={"enable_compression": False})
    with Database.open(config) as db:
        for i in range(60):  # 60,000 records: a 1.4 MB base, more than the 1 MB volume holds
            db.put_many(*_batch(i))
        with pytest.raises(StorageFull) as err:
            db.checkpoint()
        assert str(config.database.data_dir) in err.value.message
        assert not list(data_tmpfs.glob("data/*.tmp")) and not list(data_tmpfs.glob("data/base-*"))
        db.put_many(*_batch(60))  # still serving, reads and writes
        assert db.get(60 * BATCH) == 60 * BATCH + 0.5
        db.close(checkpoint=False)
    _all_present(config, range(61))


def test_failed_background_checkpoint_keeps_the_database_writable(tmp_path, data_tmpfs, caplog):
    config = _config(tmp_path, data_dir=data_tmpfs / "data", storage={"enable_compression": False},
                     index={"retrain_threshold": 50 * BATCH})
    with caplog.at_level(logging.ERROR), Database.open(config) as db:
        for i in range(50):  # the 50th batch starts a background merge, whose checkpoint cannot fit
            db.put_many(*_batch(i))
        db._wait_for_merge()
        assert not list(data_tmpfs.glob("data/*.tmp"))
        db.put_many(*_batch(50))  # the old code marked the database failed: every write refused
        db.check_health()
        assert db.stats()["checkpoint_lsn"] == 0
        db.close(checkpoint=False)
    failures = [r for r in caplog.records if "checkpoint failed" in r.getMessage()]
    assert failures and all(r.exc_info is None for r in failures)  # one clear line, no traceback
    _all_present(config, range(51))


def test_concurrent_writers_on_a_full_volume_never_break_the_log(tmp_path, wal_tmpfs):
    config = _config(tmp_path, wal_dir=wal_tmpfs / "wal", wal={"max_file_size_mb": 1})
    acknowledged, refused, other = [], [], []

    def writer(first):
        for i in range(first, first + 400, 4):
            try:
                db.put_many(*_batch(i))
                acknowledged.append(i)
            except StorageFull:
                refused.append(i)
            except Exception as exc:  # noqa: BLE001 - any other error is the bug this test looks for
                other.append(repr(exc))

    with Database.open(config) as db:
        threads = [threading.Thread(target=writer, args=(t,)) for t in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not other, other
        assert refused, "the 2 MB volume should have filled up"
        db.close(checkpoint=False)
    _all_present(config, acknowledged)


def test_out_of_bytes_writing_the_manifest_drops_the_new_base(tmp_path, data_tmpfs):
    config = _config(tmp_path, data_dir=data_tmpfs / "data", storage={"enable_compression": False})
    with Database.open(config) as db:
        for i in range(10):
            db.put_many(*_batch(i))
        db.checkpoint()
        data_dir = data_tmpfs / "data"
        manifest = (data_dir / "MANIFEST").read_bytes()
        (old_base,) = data_dir.glob("base-*")
        for i in range(10):  # the same keys again: the next base has exactly the old one's size
            keys, values = _batch(i)
            db.put_many(keys, values + 1.0)
        filler = fill_bytes(data_tmpfs / "filler")
        pages = -(-old_base.stat().st_size // 4096)
        with open(filler, "r+b") as f:  # room for the new base file, not for the MANIFEST after it
            f.truncate(filler.stat().st_size // 4096 * 4096 - pages * 4096)
        with pytest.raises(StorageFull):
            db.checkpoint()
        left = sorted(p.name for p in data_dir.iterdir() if p.name not in ("LOCK", "WAL_HEAD"))
        assert left == ["MANIFEST", old_base.name]
        assert (data_dir / "MANIFEST").read_bytes() == manifest
        filler.unlink()
        assert db.checkpoint() == 20
        db.close(checkpoint=False)
    with Database.open(config) as db:
        assert db.get(5) == 6.5


def test_a_full_data_volume_at_rotation_keeps_the_old_segment_and_its_head(tmp_path, data_tmpfs):
    """WAL_HEAD (in the data directory) names the newest segment; a rotation whose head cannot be written
    (the data volume is full, the WAL volume is not) leaves no segment that the head does not name, and the
    database reopens with every acknowledged write once space is back."""
    config = _config(tmp_path, data_dir=data_tmpfs / "data", wal_dir=tmp_path / "wal", wal={"max_file_size_mb": 1})
    with Database.open(config) as db:
        written = _fill_segment(db, config)
        assert len(list_segments(config.wal_dir)) == 1
        filler = fill_bytes(data_tmpfs / "filler")
        with pytest.raises(StorageFull) as err:
            db.put_many(*_batch(written))
        assert err.value.code == "insufficient_storage"
        assert str(data_tmpfs / "data") in err.value.message  # the volume that is full, not the WAL's
        assert db.wal_full_reason() is not None  # the probe looks where the space is missing
        assert len(list_segments(config.wal_dir)) == 1  # the new segment went with its failed head
        assert not list((data_tmpfs / "data").glob("*.tmp"))
        filler.unlink()
        db.put_many(*_batch(written))
        assert len(list_segments(config.wal_dir)) == 2
        db.close(checkpoint=False)
    _all_present(config, range(written + 1))


def test_writes_of_a_failed_checkpoint_reach_the_next_one(tmp_path, data_tmpfs):
    """A checkpoint that fails for space leaves its frozen delta in memory; the next checkpoint must carry
    it (with the writes made since) into the base before the WAL that holds it is released."""
    config = _config(tmp_path, data_dir=data_tmpfs / "data", wal_dir=tmp_path / "wal",
                     storage={"enable_compression": False})
    with Database.open(config) as db:
        db.put_many(*_batch(0))
        filler = fill_bytes(data_tmpfs / "filler")
        with pytest.raises(StorageFull):
            db.checkpoint()
        db.put_many(*_batch(1))
        filler.unlink()
        db.checkpoint()
        db.put_many(*_batch(2))
        db.checkpoint()
        for i in range(3):
            keys, values = _batch(i)
            got, found = db.get_many(keys)
            assert found.all() and (got == values).all(), f"batch {i} lost before reopening"
    _all_present(config, range(3))
