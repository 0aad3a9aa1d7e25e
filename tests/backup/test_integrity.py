"""A one-byte change anywhere in a backup is caught by verify and refused by restore, which leaves the
target data directory as it was."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from omendb import Database
from omendb.backup.layout import resolve
from omendb.wal_chain import WalGap
from tests.backup.conftest import Model, engine_config, read_state, run, write_batches


@pytest.fixture(scope="module")
def chain(tmp_path_factory) -> tuple[Path, Path, list[dict]]:
    rng = np.random.default_rng(7)
    tmp = tmp_path_factory.mktemp("integrity")
    root, backups = tmp / "omendb", tmp / "backups"
    model = Model()
    with Database.open(engine_config(root)) as db:
        write_batches(db, model, rng, 10)
        db.checkpoint()
        write_batches(db, model, rng, 5)
        run("--data-dir", str(root), "--backup-dir", str(backups), "full-backup", "--database", "production")
        write_batches(db, model, rng, 5)
        run("--data-dir", str(root), "--backup-dir", str(backups), "incremental-backup", "--database",
            "production")
    listed = json.loads(run("--backup-dir", str(backups), "list", "--output", "json").stdout)
    return root, backups, listed


def _files(backups: Path, listed: list[dict]) -> list[Path]:
    return sorted(p for b in listed for p in (backups / b["id"]).iterdir())


def test_clean_chain_verifies(chain):
    _, backups, _ = chain
    proc = run("--backup-dir", str(backups), "verify", "--backup-id", "latest", "--deep")
    assert "FAIL" not in proc.stdout and "deep check" in proc.stdout


@pytest.mark.parametrize("which", range(5))
def test_one_byte_change_is_caught(chain, tmp_path, which):
    root, backups, listed = chain
    files = _files(backups, listed)
    assert len(files) == 5  # full: manifest, snapshot, WAL; incremental: manifest, WAL
    victim = files[which]
    original = victim.read_bytes()
    damaged = bytearray(original)
    offset = len(damaged) // 2
    damaged[offset] = (damaged[offset] + 1) % 256
    victim.write_bytes(bytes(damaged))
    # A target that already holds a database: a refused restore must leave it untouched.
    target = tmp_path / "target"
    with Database.open(engine_config(target)) as db:
        db.put_many([1, 2, 3], [1.0, 2.0, 3.0])
    before = read_state(resolve(target))
    snapshot = {p.relative_to(target): p.read_bytes() for p in target.rglob("*") if p.is_file()}
    try:
        proc = run("--backup-dir", str(backups), "verify", "--backup-id", "latest", check=3)
        assert "FAIL" in proc.stdout
        proc = run("--data-dir", str(target), "--backup-dir", str(backups), "restore", "--backup-id",
                   "latest",
                   "--force", check=3)
        assert "damaged" in proc.stderr or "mismatch" in proc.stderr, proc.stderr
        after = {p.relative_to(target): p.read_bytes() for p in target.rglob("*") if p.is_file()}
        assert after == snapshot
        assert read_state(resolve(target)) == before
    finally:
        victim.write_bytes(original)
    run("--backup-dir", str(backups), "verify", "--backup-id", "latest")


def test_a_damaged_source_checkpoint_is_refused(tmp_path):
    """The checkpoint is copied into the backup byte for byte, and the copy's block checksums are checked:
    a flipped byte in the source's records refuses the backup and publishes nothing."""
    rng = np.random.default_rng(5)
    root, backups = tmp_path / "omendb", tmp_path / "backups"
    with Database.open(engine_config(root)) as db:
        write_batches(db, Model(), rng, 6)
        db.checkpoint()
    base = root / "data" / json.loads((root / "data" / "MANIFEST").read_text())["base_file"]
    damaged = bytearray(base.read_bytes())
    damaged[4096 + 8 * 100] ^= 0x01  # a key of the first block (format 2: the keys column starts at 4096)
    base.write_bytes(bytes(damaged))
    proc = run("--data-dir", str(root), "--backup-dir", str(backups), "full-backup", "--database", "production",
               check=3)
    assert "checkpoint is damaged" in proc.stderr and "block 0" in proc.stderr, proc.stderr
    assert not any(backups.rglob("manifest.json"))


def test_a_restore_whose_wal_tail_is_not_where_the_server_looks_refuses_to_start(tmp_path):
    """The WAL after the restored checkpoint is a segment in the restore's WAL directory, and WAL_HEAD names
    it: a server configured with another WAL directory refuses to start instead of missing those writes."""
    rng = np.random.default_rng(6)
    root, backups, model = tmp_path / "omendb", tmp_path / "backups", Model()
    with Database.open(engine_config(root)) as db:
        write_batches(db, model, rng, 4)
        db.checkpoint()
        write_batches(db, model, rng, 4)
        db.close(checkpoint=False)  # writes 5..8 only in the WAL: the backup holds them as its WAL tail
    run("--data-dir", str(root), "--backup-dir", str(backups), "full-backup", "--database", "production")
    target, elsewhere = tmp_path / "target", tmp_path / "wal-elsewhere"
    run("--data-dir", str(target), "--wal-dir", str(elsewhere), "--backup-dir", str(backups), "restore",
        "--backup-id", "latest")
    assert list(elsewhere.glob("*.wal"))
    with pytest.raises(WalGap, match="holds no segment"):  # the default WAL directory (target/wal)
        read_state(resolve(target, tmp_path / "target" / "wal"))
    assert read_state(resolve(target, elsewhere)) == (model.data, model.lsn)
