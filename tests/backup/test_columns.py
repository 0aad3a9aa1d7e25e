"""Packed checkpoints (snapshot.odb.cols, omendb/backup/columns.py): byte-for-byte round trips, damage to
any part of the stored file refused, and backups of the previous format (the checkpoint stored as is,
format_version 1) still verified and restored."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

from omendb import Database, rmi
from omendb.backup import columns
from omendb.backup.layout import resolve
from omendb.backup.manifest import MANIFEST_FILE, SNAPSHOT_COLS, SNAPSHOT_FILE, FileEntry, parse
from omendb.checkpoint import BASE_HEADER, BASE_LAYOUT, write_base
from tests.backup.conftest import Model, engine_config, read_state, run, write_batches


def _checkpoint(path: Path, keys: np.ndarray, lsns: np.ndarray, rng: np.random.Generator) -> bytes:
    keys = np.asarray(keys, np.int64)
    write_base(path, int(lsns.max()) if len(lsns) else 0, keys, rng.random(len(keys)), np.asarray(lsns, np.int64),
               rmi.train(keys, "recursive", 50), block_size=1000)
    return path.read_bytes()


def _round_trip(tmp_path: Path, source: bytes) -> tuple[bytes, Path]:
    fd = os.open(tmp_path / "base.odb", os.O_RDONLY)
    try:
        size, sha, raw = columns.pack(fd, tmp_path / "packed")  # type: ignore[misc]
    finally:
        os.close(fd)
    stored = (tmp_path / "packed").read_bytes()
    assert (size, sha, raw) == (len(stored), hashlib.sha256(stored).hexdigest(), len(source))
    columns.unpack(tmp_path / "packed", tmp_path / "unpacked")
    return (tmp_path / "unpacked").read_bytes(), tmp_path / "packed"


@pytest.mark.parametrize("case", ["extremes", "dense", "empty", "one"])
def test_pack_and_unpack_give_the_checkpoint_back_byte_for_byte(tmp_path, rng, monkeypatch, case):
    """Keys anywhere in int64 (negative, both extremes, gaps wider than 2**63: the differences wrap), LSNs
    with every byte used, across many chunks (a chunk is made small here), and the empty and one-record
    checkpoints."""
    monkeypatch.setattr(columns, "CHUNK_RECORDS", 997)
    info = np.iinfo(np.int64)
    if case == "extremes":
        keys = np.unique(np.concatenate([rng.integers(info.min, info.max, 5000, dtype=np.int64),
                                         [info.min, info.min + 1, -1, 0, 1, info.max - 1, info.max]]))
        lsns = rng.integers(1, info.max, len(keys), dtype=np.int64)
    elif case == "dense":
        keys = np.arange(-3000, 4000, dtype=np.int64)
        lsns = rng.integers(1, 5, len(keys), dtype=np.int64)
    elif case == "empty":
        keys, lsns = np.zeros(0, np.int64), np.zeros(0, np.int64)
    else:
        keys, lsns = np.array([info.min], np.int64), np.array([7], np.int64)
    source = _checkpoint(tmp_path / "base.odb", keys, lsns, rng)
    unpacked, packed = _round_trip(tmp_path, source)
    assert unpacked == source
    if case == "dense":  # small differences and LSNs: most byte planes are dropped
        assert packed.stat().st_size < len(source) * 0.6


def test_a_flipped_byte_anywhere_in_the_packed_file_is_caught(tmp_path, rng):
    """Every part of the stored file (a raw section, a packed chunk's header or data, the table, the footer):
    the sha256 the manifest holds catches it first. Even with that sha256 recomputed (a backup_tool bug, or
    an unkeyed backup forged), unpacking refuses damage to the packed columns, the table and the footer (it
    checks the columns' block checksums as it goes), and the block checksums catch the rest (the engine
    checks them in the background after opening)."""
    from omendb.backup.errors import Corrupt
    from omendb.backup.verbatim import verify_blocks
    from omendb.checkpoint import open_base
    from omendb.errors import CorruptionError

    keys = np.unique(rng.integers(0, 2**40, 4000, dtype=np.int64))
    source = _checkpoint(tmp_path / "base.odb", keys, rng.integers(1, 100, len(keys), dtype=np.int64), rng)
    _, packed = _round_trip(tmp_path, source)
    good = packed.read_bytes()
    fd = os.open(packed, os.O_RDONLY)
    try:
        _, sections = columns._read_table(fd, packed)
    finally:
        os.close(fd)
    table_offset = sections[-1][3] + sections[-1][4]
    # Raw sections: the record count in the header, a value, the model, the checksum table, the end marker
    # (the page padding between them is covered by the sha256 alone: no reader looks at it).
    layout = BASE_LAYOUT.unpack_from(source, BASE_HEADER.size)
    in_checkpoint = [16, layout[1] + 100, layout[3] + 10, layout[5] + 4, len(source) - 1]
    raw_places = [stored + at - offset for at in in_checkpoint
                  for kind, offset, length, stored, _ in sections
                  if kind == columns.RAW and offset <= at < offset + length]
    assert len(raw_places) == len(in_checkpoint)
    packed_places = [table_offset + 9, len(good) - 1]  # the table of sections, the footer
    for kind, _, _, stored, stored_length in sections:  # packed: a chunk header, inside a frame
        if kind != columns.RAW:
            packed_places += [stored, stored + 9, stored + columns.CHUNK.size + 3, stored + stored_length // 2]
    for place in raw_places + packed_places:
        bad = bytearray(good)
        bad[place] ^= 0x10
        assert hashlib.sha256(bytes(bad)).hexdigest() != hashlib.sha256(good).hexdigest()
        packed.write_bytes(bytes(bad))
        target = tmp_path / f"out-{place}"
        try:
            columns.unpack(packed, target)
            assert place in raw_places, f"unpacking took a flipped byte at offset {place} of a packed column"
            verify_blocks(open_base(target))
        except (Corrupt, CorruptionError):
            continue
        pytest.fail(f"a flipped byte at offset {place} of the packed file was not caught")


def test_a_flipped_byte_in_a_backups_packed_snapshot_fails_the_restore(tmp_path, rng):
    root, backups, model = tmp_path / "omendb", tmp_path / "backups", Model()
    with Database.open(engine_config(root)) as db:
        write_batches(db, model, rng, 6)
        db.checkpoint()
        run("--data-dir", str(root), "--backup-dir", str(backups), "full-backup", "--database", "production")
    backup_id = json.loads(run("--backup-dir", str(backups), "list", "--output", "json").stdout)[0]["id"]
    stored = backups / backup_id / SNAPSHOT_COLS
    data = bytearray(stored.read_bytes())
    data[len(data) // 3] ^= 1
    stored.write_bytes(bytes(data))
    proc = run("--data-dir", str(tmp_path / "r"), "--backup-dir", str(backups), "restore", "--backup-id", "latest",
               check=None)
    assert proc.returncode != 0 and "sha256 mismatch" in proc.stderr
    assert not (tmp_path / "r" / "data" / "MANIFEST").exists()


def test_backups_of_the_previous_format_still_verify_and_restore(tmp_path, rng):
    """A format-1 backup (the checkpoint stored as is in snapshot.odb, manifest format_version 1), as the
    previous backup_tool wrote it, with an incremental of this format on top: verify --deep passes and a
    restore equals the source."""
    root, backups, model = tmp_path / "omendb", tmp_path / "backups", Model()
    with Database.open(engine_config(root)) as db:
        write_batches(db, model, rng, 6)
        db.checkpoint()
        write_batches(db, model, rng, 2)
        run("--data-dir", str(root), "--backup-dir", str(backups), "full-backup", "--database", "production")
        full_end = model.remember()
        full_id = json.loads(run("--backup-dir", str(backups), "list", "--output", "json").stdout)[0]["id"]
        # Rewrite it as the previous release stored it.
        directory = backups / full_id
        manifest = parse((directory / MANIFEST_FILE).read_bytes(), "test")
        columns.unpack(directory / SNAPSHOT_COLS, directory / SNAPSHOT_FILE)
        (directory / SNAPSHOT_COLS).unlink()
        raw = (directory / SNAPSHOT_FILE).read_bytes()
        entry = FileEntry(SNAPSHOT_FILE, len(raw), hashlib.sha256(raw).hexdigest(), len(raw), "none")
        files = [entry if f.name == SNAPSHOT_COLS else f for f in manifest.files]
        old = dataclasses.replace(manifest, files=files, format_version=1, manifest_sha256="").sealed()
        (directory / MANIFEST_FILE).write_bytes(old.to_json())
        assert json.loads((directory / MANIFEST_FILE).read_text())["format_version"] == 1
        write_batches(db, model, rng, 3)
        run("--data-dir", str(root), "--backup-dir", str(backups), "incremental-backup", "--database",
            "production")
    listed = json.loads(run("--backup-dir", str(backups), "list", "--output", "json").stdout)
    assert [b["type"] for b in listed] == ["incremental", "full"] and listed[1]["format_version"] == 1
    assert listed[0]["format_version"] == 2
    run("--backup-dir", str(backups), "verify", "--backup-id", full_id, "--deep")
    run("--backup-dir", str(backups), "verify", "--backup-id", "latest", "--deep")
    for backup_id, lsn in ((full_id, full_end), (listed[0]["id"], model.lsn)):
        target = tmp_path / f"r-{lsn}"
        run("--data-dir", str(target), "--backup-dir", str(backups), "restore", "--backup-id", backup_id)
        assert read_state(resolve(target)) == (model.at.get(lsn, model.data), lsn)


@pytest.mark.parametrize("tail", ["updates", "inserts", "deletes", "mixed"])
def test_the_streamed_digest_equals_the_digest_of_the_rebuilt_state(rng, monkeypatch, tail):
    """stream_digest (pieces, with the in-place path for a tail of updates) gives what payload.state_digest
    of the state rebuilt by the engine's replay gives, across many pieces."""
    from omendb.backup import verbatim
    from omendb.backup.payload import State
    from omendb.wal import OP_DELETE, OP_PUT, Frame

    monkeypatch.setattr(verbatim, "DIGEST_PIECE", 500)
    keys = np.unique(rng.integers(-10**6, 10**6, 6000, dtype=np.int64))
    values, lsns = rng.random(len(keys)), np.ones(len(keys), np.int64)
    frames = []
    for lsn in range(2, 7):
        chosen = rng.choice(keys, 300)
        fresh = rng.integers(-10**6, 10**6, 300, dtype=np.int64)
        if tail == "deletes" or tail == "mixed" and lsn % 2:
            frames.append(Frame(lsn, 1, 0, OP_DELETE, np.unique(chosen), None))
        else:
            batch = np.unique(fresh if tail == "inserts" or tail == "mixed" else chosen)
            frames.append(Frame(lsn, 1, 0, OP_PUT, batch, rng.random(len(batch))))
    state = State(keys, values, lsns, 1, 1)
    state.apply(frames)
    assert verbatim.stream_digest(keys, values, lsns, verbatim.delta_of(frames)) == (len(state.keys), state.digest())


def test_an_offline_backup_reads_the_wal_once(tmp_path, rng, monkeypatch):
    """The frames the WAL check (info) proved after the checkpoint are the backup's: the segments are not
    decoded a second time."""
    from omendb import wal, wal_chain

    root, backups, model = tmp_path / "omendb", tmp_path / "backups", Model()
    with Database.open(engine_config(root)) as db:
        write_batches(db, model, rng, 6)
        db.checkpoint()
        write_batches(db, model, rng, 3)
    reads: list[Path] = []
    original = wal.read_segment

    def counting(path: Path, *args, **kwargs):
        reads.append(path)
        return original(path, *args, **kwargs)

    monkeypatch.setattr(wal, "read_segment", counting)
    monkeypatch.setattr(wal_chain, "read_segment", counting)
    run("--data-dir", str(root), "--backup-dir", str(backups), "full-backup", "--database", "production")
    assert reads and len(reads) == len(set(reads)), reads
    monkeypatch.undo()
    run("--data-dir", str(tmp_path / "r"), "--backup-dir", str(backups), "restore", "--backup-id", "latest")
    assert read_state(resolve(tmp_path / "r")) == (model.data, model.lsn)


def test_a_backup_of_a_newer_format_is_refused_saying_which_versions_are_read(tmp_path, rng):
    from omendb.backup.errors import Corrupt

    root, backups, model = tmp_path / "omendb", tmp_path / "backups", Model()
    with Database.open(engine_config(root)) as db:
        write_batches(db, model, rng, 2)
        run("--data-dir", str(root), "--backup-dir", str(backups), "full-backup", "--database", "production")
    path = next(backups.glob("*/manifest.json"))
    body = json.loads(path.read_text())
    body["format_version"] = 3
    with pytest.raises(Corrupt, match=r"format version 3 is not supported .* reads versions 1, 2"):
        parse(json.dumps(body).encode(), str(path))
