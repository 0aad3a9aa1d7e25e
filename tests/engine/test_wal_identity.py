"""WAL identity and continuity: a database only ever replays its own WAL, and only when the WAL provably
continues its checkpoint without a gap."""

import json
import logging

import numpy as np
import pytest

from omendb import Config, CorruptionError, Database, DatabaseLocked
from omendb.files import MANIFEST, list_segments
from omendb.wal import SEGMENT_HEADER, read_segment_header
from omendb.wal_chain import ForeignWal, WalGap

from .conftest import make_config
from .previous_release import downgrade_to_previous_release


def _rotating(tmp_path, **wal):
    # 40,000-record batches (640 KiB frames) with 1 MiB segments: one frame per segment.
    return make_config(tmp_path, wal={"max_file_size_mb": 1, **wal})


def _write(db, first_batch, batches, size=40_000):
    for b in range(first_batch, first_batch + batches):
        keys = np.arange(b * size, (b + 1) * size, dtype=np.int64)
        db.put_many(keys, np.full(size, float(b)))


def _crashed_with_segments(config, checkpoint_after=0, batches=6):
    with Database.open(config) as db:
        _write(db, 0, checkpoint_after)
        if checkpoint_after:
            db.checkpoint()
        _write(db, checkpoint_after, batches - checkpoint_after)
        db.close(checkpoint=False)  # everything after the checkpoint is only in the WAL, as after a kill -9
    return list_segments(config.wal_dir)


def test_sibling_data_dirs_never_share_the_default_wal(tmp_path):
    a = Config().replace("database", data_dir=str(tmp_path / "a"))
    with Database.open(a) as db:
        db.put_many([1, 2, 3], [1.0, 2.0, 3.0])
        db.close(checkpoint=False)
    b = Config().replace("database", data_dir=str(tmp_path / "b"))
    with Database.open(b) as db:
        assert db.lsn() == 0 and db.count() == 0 and db.get(1) is None
    assert a.wal_dir != b.wal_dir
    with Database.open(a) as db:
        assert db.count() == 3


def test_the_guides_layout_keeps_its_wal_next_to_data(tmp_path):
    config = Config().replace("database", data_dir=str(tmp_path / "data"))
    assert config.wal_dir == tmp_path / "wal"


def test_a_segment_of_another_database_is_refused(tmp_path):
    wal = str(tmp_path / "shared-wal")
    a = Config().replace("database", data_dir=str(tmp_path / "a")).replace("wal", dir=wal)
    with Database.open(a) as db:
        db.put_many([1], [1.0])
        db.close(checkpoint=False)
    b = Config().replace("database", data_dir=str(tmp_path / "b")).replace("wal", dir=wal)
    with pytest.raises(ForeignWal) as err:
        Database.open(b)
    message = str(err.value)
    assert "belongs to database" in message and "[wal] dir" in message and wal in message


def test_two_databases_cannot_hold_one_wal_directory(tmp_path):
    wal = str(tmp_path / "shared-wal")
    a = Config().replace("database", data_dir=str(tmp_path / "a")).replace("wal", dir=wal)
    b = Config().replace("database", data_dir=str(tmp_path / "b")).replace("wal", dir=wal)
    with Database.open(a), pytest.raises(DatabaseLocked, match="WAL directory"):
        Database.open(b)


@pytest.mark.parametrize("which", ["first", "middle", "last"])
def test_a_missing_segment_stops_startup_naming_file_and_lsns(tmp_path, which):
    config = _rotating(tmp_path)
    segments = _crashed_with_segments(config)
    assert len(segments) >= 5
    index = {"first": 0, "middle": len(segments) // 2, "last": len(segments) - 1}[which]
    first_lsn, path = segments[index]
    path.unlink()
    with pytest.raises(WalGap) as err:
        Database.open(config)
    message = str(err.value)
    assert f"LSN {first_lsn}" in message and "backup_tool restore" in message and "accept_gap" in message
    if which == "last":
        assert str(path) in message  # WAL_HEAD names the newest segment, which is gone


def test_a_missing_wal_directory_after_a_checkpoint_stops_startup(tmp_path):
    config = _rotating(tmp_path)
    _crashed_with_segments(config, checkpoint_after=3)
    config.wal_dir.rename(tmp_path / "wal-aside")
    with pytest.raises(WalGap) as err:
        Database.open(config)
    assert "holds no segment" in str(err.value) and "LSN 4" in str(err.value)


def test_accept_gap_starts_on_a_new_term_and_logs_an_error(tmp_path, caplog):
    config = _rotating(tmp_path)
    _crashed_with_segments(config, checkpoint_after=3)
    config.wal_dir.rename(tmp_path / "wal-aside")
    override = config.replace("wal", accept_gap=True)
    with caplog.at_level(logging.ERROR), Database.open(override) as db:
        assert db.lsn() == 3 and db.term == 2
        assert db.put_many([1], [1.0]) == 4
        assert db.term_history[-1] == (2, 4)
    assert "accept_gap" in caplog.text and "LOST" in caplog.text
    with Database.open(config) as db:  # the override is not needed again: the WAL is whole from here on
        assert db.lsn() == 4 and db.term == 2 and db.get(1) == 1.0


def test_accept_gap_keeps_what_the_wal_proves_before_the_gap(tmp_path):
    config = _rotating(tmp_path)
    segments = _crashed_with_segments(config)
    segments[3][1].unlink()
    with Database.open(config.replace("wal", accept_gap=True)) as db:
        assert db.lsn() == segments[3][0] - 1 and db.term == 2
        assert db.get(0) == 0.0 and db.get(40_000 * (segments[3][0] - 1)) is None


def test_the_manifest_carries_identity_wal_location_and_a_checksum(tmp_path):
    config = make_config(tmp_path)
    with Database.open(config) as db:
        db.put_many([1], [1.0])
        ident = db.database_id
    raw = json.loads((config.wal_dir.parent / "data" / MANIFEST).read_text())
    assert raw["database_id"] == ident and raw["wal_dir"] == str(config.wal_dir) and raw["checksum"]
    assert read_segment_header(list_segments(config.wal_dir)[-1][1]).database_id == ident
    raw["checkpoint_lsn"] = 0  # a hand edit (or bit rot) the checksum catches
    (config.wal_dir.parent / "data" / MANIFEST).write_text(json.dumps(raw))
    with pytest.raises(CorruptionError, match="checksum mismatch"):
        Database.open(config)


def test_a_previous_release_database_opens_and_is_upgraded(tmp_path):
    data, legacy_wal = tmp_path / "db1", tmp_path / "wal"  # the previous default: <data_dir>/../wal
    config = Config().replace("database", data_dir=str(data))
    with Database.open(config.replace("wal", dir=str(legacy_wal))) as db:
        db.put_many([1, 2], [1.0, 2.0])
        db.checkpoint()
        db.put_many([3], [3.0])
        db.close(checkpoint=False)
    downgrade_to_previous_release(data, legacy_wal)
    with Database.open(config) as db:  # [wal] dir empty, as in the previous release's omendb.toml
        assert db.wal_dir == legacy_wal and db.lsn() == 2 and db.get(3) == 3.0
        assert db.put_many([4], [4.0]) == 3
        ident = db.database_id
    raw = json.loads((data / MANIFEST).read_text())
    assert raw["database_id"] == ident and raw["wal_dir"] == str(legacy_wal) and raw["format_version"] == 2
    assert read_segment_header(list_segments(legacy_wal)[-1][1]).database_id == ident
    with Database.open(config) as db:
        assert db.database_id == ident and db.count() == 4


def test_a_complete_final_frame_with_a_bad_checksum_is_not_called_unacknowledged(tmp_path, caplog):
    config = make_config(tmp_path)
    with Database.open(config) as db:
        for i in range(5):
            db.put_many([i], [float(i)])
        db.close(checkpoint=False)
    path = list_segments(config.wal_dir)[-1][1]
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF  # inside the last frame's values: the frame is whole, its checksum fails
    path.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="omendb.wal"), Database.open(config) as db:
        assert db.lsn() == 4
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert errors and "may have been acknowledged" in errors[0].getMessage()
    assert "never acknowledged" not in caplog.text


def test_a_wal_tail_lost_behind_the_checkpoint_does_not_break_the_next_open(tmp_path):
    """With sync_on_write = false a checkpoint may hold writes whose WAL frames a crash then loses. The log
    must go on after the checkpoint in a new segment, not after the surviving frames in the old one."""
    config = make_config(tmp_path)
    with Database.open(config) as db:
        for i in range(5):
            db.put_many([i], [float(i)])
        db.checkpoint()
        db.close(checkpoint=False)
    path = list_segments(config.wal_dir)[-1][1]
    frame = (path.stat().st_size - SEGMENT_HEADER.size) // 5
    with open(path, "r+b") as f:
        f.truncate(SEGMENT_HEADER.size + 3 * frame)  # frames 4 and 5 lost; the checkpoint holds them
    with Database.open(config) as db:
        assert db.lsn() == 5 and db.put_many([6], [6.0]) == 6
        db.close(checkpoint=False)
    with Database.open(config) as db:
        assert db.lsn() == 6 and db.get(4) == 4.0 and db.get(6) == 6.0
