"""Full + incremental backups of a live data directory, restored to every backup's end, to LSNs in
between and to points in time: each restore equals the reference model at that point."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import numpy as np

from omendb import Database
from omendb.backup.columns import unpack
from omendb.backup.layout import resolve
from tests.backup.conftest import Model, engine_config, read_state, run, write_batches


def _list(backups) -> list[dict]:
    return json.loads(run("--backup-dir", str(backups), "list", "--output", "json").stdout)


def test_full_incremental_and_point_in_time_round_trips(tmp_path, rng):
    root, backups = tmp_path / "omendb", tmp_path / "backups"
    model = Model()
    times: dict[int, int] = {}
    with Database.open(engine_config(root, index={"retrain_threshold": 3000})) as db:
        write_batches(db, model, rng, 30)
        db.checkpoint()
        write_batches(db, model, rng, 10)
        full_end = model.remember()
        run("--data-dir", str(root), "--backup-dir", str(backups), "full-backup", "--database", "production")
        middle = []
        for _ in range(3):  # writes with background merges/checkpoints between incrementals
            for _ in range(6):
                write_batches(db, model, rng, 2)
                middle.append(model.remember())
                times[model.lsn] = time.time_ns() // 1000
                time.sleep(0.003)
            db.checkpoint()
            run("--data-dir", str(root), "--backup-dir", str(backups), "incremental-backup", "--database",
                 "production")
        final = model.remember()
        live_lsn = db.lsn()
    assert live_lsn == final
    listed = _list(backups)
    assert [b["type"] for b in listed] == ["incremental", "incremental", "incremental", "full"]
    assert listed[0]["end_lsn"] == final and listed[-1]["end_lsn"] == full_end
    for newer, older in zip(listed, listed[1:], strict=False):
        assert newer["parent"] == older["id"] and newer["start_lsn"] == older["end_lsn"]
    assert all(b["notice"] is None for b in listed)

    target = tmp_path / "restored"
    # Each backup's end, oldest first.
    for backup in reversed(listed):
        run("--data-dir", str(target), "--backup-dir", str(backups), "restore", "--backup-id", backup["id"],
             "--force")
        data, lsn = read_state(resolve(target))
        assert lsn == backup["end_lsn"]
        assert data == model.at[lsn]
        assert len(data) == backup["records"]
    # LSNs inside incrementals, chosen from 'latest'.
    for lsn in middle[::4] + [full_end]:
        run("--data-dir", str(target), "--backup-dir", str(backups), "restore", "--backup-id", "latest",
             "--to-lsn", str(lsn), "--force")
        data, restored_lsn = read_state(resolve(target))
        assert (restored_lsn, data) == (lsn, model.at[lsn])
    # Points in time (ISO 8601 and epoch seconds).
    for lsn in list(times)[1::5]:
        when = datetime.fromtimestamp(times[lsn] / 1e6, UTC).isoformat()
        run("--data-dir", str(target), "--backup-dir", str(backups), "restore", "--backup-id", "latest",
             "--to-time", when, "--force")
        data, restored_lsn = read_state(resolve(target))
        assert (restored_lsn, data) == (lsn, model.at[lsn])
    lsn = list(times)[2]
    run("--data-dir", str(target), "--backup-dir", str(backups), "restore", "--backup-id", "latest",
         "--to-time", f"{times[lsn] / 1e6:.6f}", "--force")
    assert read_state(resolve(target)) == (model.at[lsn], lsn)
    # Outside the chain: refused with the covered range.
    proc = run("--data-dir", str(target), "--backup-dir", str(backups), "restore", "--backup-id",
                listed[-1]["id"], "--to-lsn", str(final + 5), "--force", check=6)
    assert "covers LSN" in proc.stderr


def test_restore_keeps_lsn_and_term_and_backups_continue(tmp_path, rng):
    root, backups, model = tmp_path / "omendb", tmp_path / "backups", Model()
    with Database.open(engine_config(root)) as db:
        write_batches(db, model, rng, 8)
    run("--data-dir", str(root), "--backup-dir", str(backups), "full-backup", "--database", "production")
    run("--data-dir", str(root), "--backup-dir", str(backups), "restore", "--backup-id", "latest", "--force")
    with Database.open(engine_config(root)) as db:
        assert db.lsn() == model.lsn and db.term == 2  # a restore continues on a new term
        write_batches(db, model, rng, 3)
    out = run("--data-dir", str(root), "--backup-dir", str(backups), "incremental-backup", "--database",
               "production").stdout
    assert "incremental backup" in out, out
    run("--data-dir", str(tmp_path / "again"), "--backup-dir", str(backups), "restore", "--backup-id",
        "latest")
    assert read_state(resolve(tmp_path / "again")) == (model.data, model.lsn)


def test_incremental_becomes_full_when_the_wal_was_released(tmp_path, rng):
    root, backups, model = tmp_path / "omendb", tmp_path / "backups", Model()
    config = engine_config(root, wal={"max_retained_mb": 1, "max_file_size_mb": 1})
    with Database.open(config) as db:
        write_batches(db, model, rng, 3)
        run("--data-dir", str(root), "--backup-dir", str(backups), "full-backup", "--database", "production")
        for _ in range(12):  # ~2 MB of WAL beyond the archived LSN, more than max_retained_mb
            keys = rng.integers(0, 10**6, 10_000, dtype=np.int64)
            values = rng.random(10_000)
            model.put(db.put_many(keys, values), keys, values)
        db.checkpoint()
        assert db.wal_released_unarchived
    proc = run("--data-dir", str(root), "--backup-dir", str(backups), "incremental-backup", "--database",
                "production")
    assert "full backup instead of incremental" in proc.stdout and "no longer holds" in proc.stdout
    assert "NOTICE" in proc.stderr
    latest = json.loads(run("--backup-dir", str(backups), "list", "--output", "json").stdout)[0]
    assert latest["type"] == "full" and latest["notice"]
    run("--data-dir", str(tmp_path / "r"), "--backup-dir", str(backups), "restore", "--backup-id", "latest")
    assert read_state(resolve(tmp_path / "r")) == (model.data, model.lsn)


def test_empty_and_never_checkpointed_databases(tmp_path, rng):
    root, backups, model = tmp_path / "omendb", tmp_path / "backups", Model()
    with Database.open(engine_config(root)) as db:
        write_batches(db, model, rng, 3)
        # Still open: no checkpoint was ever written (the MANIFEST, written at creation, names no base file),
        # everything is in the WAL.
        assert not list((root / "data").glob("base-*"))
        run("--data-dir", str(root), "--backup-dir", str(backups), "full-backup", "--database", "production")
    run("--data-dir", str(tmp_path / "r"), "--backup-dir", str(backups), "restore", "--backup-id", "latest")
    assert read_state(resolve(tmp_path / "r")) == (model.data, model.lsn)
    # The data directory itself (not its parent) is accepted as --data-dir too.
    run("--data-dir", str(root / "data"), "--backup-dir", str(backups), "incremental-backup", "--database",
         "production")


def test_a_format_2_checkpoint_is_stored_packed_and_comes_back_byte_for_byte(tmp_path, rng):
    """The engine's checkpoint (format 2: uncompressed columns, memory-mapped) goes into the backup with its
    key and LSN columns packed (snapshot.odb.cols), not recompressed as a whole; unpacking it gives the
    source's checkpoint byte for byte, and a restore of it equals the source."""
    root, backups, model = tmp_path / "omendb", tmp_path / "backups", Model()
    with Database.open(engine_config(root, storage={"enable_compression": False})) as db:
        write_batches(db, model, rng, 6)
        db.checkpoint()
        write_batches(db, model, rng, 2)
        base = root / "data" / json.loads((root / "data" / "MANIFEST").read_text())["base_file"]
        run("--data-dir", str(root), "--backup-dir", str(backups), "full-backup", "--database", "production")
        source_bytes = base.read_bytes()
    backup = json.loads(run("--backup-dir", str(backups), "list", "--output", "json").stdout)[0]
    files = {f["name"]: f for f in backup["files"]}
    assert "snapshot.odb.zst" not in files and "snapshot.odb" not in files
    assert files["snapshot.odb.cols"]["codec"] == "odb-columns"
    assert files["snapshot.odb.cols"]["raw_size"] == len(source_bytes) > files["snapshot.odb.cols"]["size"]
    unpack(backups / backup["id"] / "snapshot.odb.cols", tmp_path / "unpacked.odb")
    assert (tmp_path / "unpacked.odb").read_bytes() == source_bytes
    run("--backup-dir", str(backups), "verify", "--backup-id", "latest", "--deep")
    run("--data-dir", str(tmp_path / "r"), "--backup-dir", str(backups), "restore", "--backup-id", "latest")
    assert read_state(resolve(tmp_path / "r")) == (model.data, model.lsn)


def test_latest_with_a_target_picks_the_chain_that_covers_it(tmp_path, rng):
    root, backups, model = tmp_path / "omendb", tmp_path / "backups", Model()
    args = ["--data-dir", str(root), "--backup-dir", str(backups)]
    with Database.open(engine_config(root)) as db:
        write_batches(db, model, rng, 4)
        run(*args, "full-backup", "--database", "production")
        write_batches(db, model, rng, 4)
        in_first_chain = model.remember()
        write_batches(db, model, rng, 4)
        run(*args, "incremental-backup", "--database", "production")
        end_of_first_chain = model.remember()
        time.sleep(0.01)
        between = time.time()
        time.sleep(0.01)
        write_batches(db, model, rng, 4)
        db.checkpoint()
        run(*args, "full-backup", "--database", "production")
    target = tmp_path / "r"
    run("--data-dir", str(target), "--backup-dir", str(backups), "restore", "--backup-id", "latest",
        "--to-lsn", str(in_first_chain))
    assert read_state(resolve(target)) == (model.at[in_first_chain], in_first_chain)
    proc = run("--data-dir", str(target), "--backup-dir", str(backups), "restore", "--backup-id", "latest",
               "--to-time", f"{between:.6f}", "--force")
    assert "no backup holds the writes between" in proc.stderr
    assert read_state(resolve(target)) == (model.at[end_of_first_chain], end_of_first_chain)


def test_a_restore_puts_the_checkpoint_back_byte_for_byte_and_replays_the_wal_tail(tmp_path, rng):
    """A restore copies the backed-up checkpoint as is (no rebuild, no recompression) and hands the WAL after
    it to the engine as a segment: the restored database equals the source at the end and at an LSN inside
    the tail, and goes on taking writes on a new term."""
    root, backups, model = tmp_path / "omendb", tmp_path / "backups", Model()
    with Database.open(engine_config(root)) as db:
        write_batches(db, model, rng, 6)
        db.checkpoint()
        checkpoint_lsn = model.remember()
        write_batches(db, model, rng, 4)
        inside = model.remember()
        write_batches(db, model, rng, 4)
        run("--data-dir", str(root), "--backup-dir", str(backups), "full-backup", "--database", "production")
        snapshot = (root / "data" / json.loads((root / "data" / "MANIFEST").read_text())["base_file"]).read_bytes()
    target = tmp_path / "restored"
    for lsn, expected in ((None, model.data), (inside, model.at[inside]), (checkpoint_lsn, model.at[checkpoint_lsn])):
        extra = ["--to-lsn", str(lsn)] if lsn is not None else []
        run("--data-dir", str(target), "--backup-dir", str(backups), "restore", "--backup-id", "latest", "--force",
            *extra)
        manifest = json.loads((target / "data" / "MANIFEST").read_text())
        assert manifest["checkpoint_lsn"] == checkpoint_lsn
        assert (target / "data" / manifest["base_file"]).read_bytes() == snapshot
        segments = sorted((target / "wal").glob("*.wal"))
        assert len(segments) == (0 if lsn == checkpoint_lsn else 1)
        assert read_state(resolve(target)) == (expected, lsn or model.lsn)
    with Database.open(engine_config(target)) as db:
        assert db.term == 2 and db.lsn() == checkpoint_lsn
        assert db.put_many([7], [0.7]) == checkpoint_lsn + 1
