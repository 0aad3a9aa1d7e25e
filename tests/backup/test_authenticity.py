"""Backups are tamper-evident with a backup key: a forged incremental whose every sha256 (payload, content
digest, manifest) was recomputed still passes the checksums, and only the keyed manifest's MAC catches it.
Without a key, an unkeyed backup verifies with a warning; with a key, an unkeyed one is refused unless
--allow-unkeyed (a forger could strip the signature)."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pytest

from omendb import Database
from omendb.backup.keys import BackupKey, load_key
from omendb.backup.layout import resolve
from omendb.backup.manifest import MANIFEST_FILE, WAL_FILE, BackupManifest, parse
from omendb.backup.payload import PayloadWriter, frame_bytes
from omendb.backup.restore import load_frames, materialize
from omendb.backup.store import BackupStore
from tests.backup.conftest import Model, engine_config, read_state, run, write_batches

KEY = "4f6d656e44422062" * 8  # 128 hex characters: the key is the text itself, like `openssl rand -hex 64`


def _chain(tmp: Path, key_file: Path | None) -> tuple[Path, Path, Model]:
    rng = np.random.default_rng(5)
    root, backups, model = tmp / "omendb", tmp / "backups", Model()
    keyed = ["--key-file", str(key_file)] if key_file else []
    with Database.open(engine_config(root)) as db:
        write_batches(db, model, rng, 6)
        db.checkpoint()
        run("--data-dir", str(root), "--backup-dir", str(backups), *keyed, "full-backup", "--database",
            "production")
        write_batches(db, model, rng, 4)
        run("--data-dir", str(root), "--backup-dir", str(backups), *keyed, "incremental-backup", "--database",
            "production")
    return root, backups, model


@pytest.fixture
def key_file(tmp_path) -> Path:
    path = tmp_path / "secret" / "key"  # never on the backup volume
    path.parent.mkdir()
    path.write_text(KEY + "\n")
    return path


def _incremental(backups: Path) -> str:
    listed = json.loads(run("--backup-dir", str(backups), "list", "--output", "json").stdout)
    assert [b["type"] for b in listed] == ["incremental", "full"]
    return listed[0]["id"]


def forge_incremental(backups: Path, backup_id: str, strip_signature: bool = False) -> float:
    """What an attacker with write access to the backup volume (and no key) can do: rewrite an incremental's
    WAL (here, every value written becomes 666.0), then recompute the file's size and sha256, the record count
    and content digest of the state it leads to, and the manifest's own sha256. Returns the forged value."""
    store = BackupStore(backups)
    path = backups / backup_id
    manifest = parse((path / MANIFEST_FILE).read_bytes(), "forgery")
    frames = load_frames(store, manifest)
    forged = [dataclasses.replace(f, values=np.full(len(f.keys), 666.0)) if f.values is not None else f
              for f in frames]
    (path / WAL_FILE).unlink()
    writer = PayloadWriter(path / WAL_FILE)
    for frame in forged:
        writer.write(frame_bytes(frame))
    entry = writer.close()
    manifest = dataclasses.replace(manifest, files=[entry if f.name == WAL_FILE else f for f in manifest.files])
    chain = [parse((backups / manifest.parent / MANIFEST_FILE).read_bytes(), "parent"), manifest]  # type: ignore[operator]
    state = materialize(store, chain)
    manifest = dataclasses.replace(manifest, records=len(state.keys), content_sha256=state.digest())
    if strip_signature:
        manifest = dataclasses.replace(manifest, key_id=None, mac=None, parent_mac=None)
    (path / MANIFEST_FILE).write_bytes(manifest.sealed().to_json())
    return 666.0


def test_forged_unkeyed_incremental_passes_every_checksum(tmp_path):
    """Why keys exist: without one, a forgery with recomputed digests is indistinguishable from a backup.
    It verifies (deep) with a warning that authenticity was not checked."""
    _, backups, _ = _chain(tmp_path, None)
    forge_incremental(backups, _incremental(backups))
    proc = run("--backup-dir", str(backups), "verify", "--backup-id", "latest", "--deep")
    assert "FAIL" not in proc.stdout
    assert "WARN" in proc.stdout and "unkeyed" in proc.stdout and "OMENDB_BACKUP_KEY_FILE" in proc.stdout
    assert "authenticity is not checked" in proc.stderr


@pytest.mark.parametrize("strip", [False, True], ids=["mac-kept", "signature-stripped"])
def test_forged_keyed_incremental_is_refused(tmp_path, key_file, strip):
    _, backups, model = _chain(tmp_path, key_file)
    run("--backup-dir", str(backups), "--key-file", str(key_file), "verify", "--backup-id", "latest",
        "--deep")
    incremental = _incremental(backups)
    forge_incremental(backups, incremental, strip_signature=strip)
    keyed = ["--key-file", str(key_file)]
    proc = run("--backup-dir", str(backups), *keyed, "verify", "--backup-id", "latest", "--deep", check=3)
    assert f"FAIL backup {incremental}" in proc.stdout
    assert ("unkeyed but a backup key is configured" if strip else "signature (mac) does not match") \
        in proc.stdout
    target = tmp_path / "target"
    proc = run("--data-dir", str(target), "--backup-dir", str(backups), *keyed, "restore", "--backup-id",
               "latest", check=3)
    assert incremental in proc.stderr
    assert not (target / "data" / "MANIFEST").exists()
    # The key is also taken from the environment (the operator's Jobs: a file named by the variable).
    os.environ["OMENDB_BACKUP_KEY_FILE"] = str(key_file)
    try:
        run("--backup-dir", str(backups), "verify", "--backup-id", "latest", check=3)
    finally:
        del os.environ["OMENDB_BACKUP_KEY_FILE"]


def test_keyed_chain_restores_and_checks_its_key(tmp_path, key_file):
    _, backups, model = _chain(tmp_path, key_file)
    listed = run("--backup-dir", str(backups), "list").stdout.splitlines()
    key_id = load_key(str(key_file)).key_id  # type: ignore[union-attr]
    assert all(line.endswith(f"key={key_id}") for line in listed)
    proc = run("--backup-dir", str(backups), "--key-file", str(key_file), "verify", "--backup-id", "latest")
    assert proc.stdout.count(f"signature verified with key id {key_id}") == 2 and "WARN" not in proc.stdout
    # Same key given as the text itself in OMENDB_BACKUP_KEY.
    os.environ["OMENDB_BACKUP_KEY"] = KEY
    try:
        run("--data-dir", str(tmp_path / "r"), "--backup-dir", str(backups), "restore", "--backup-id", "latest")
    finally:
        del os.environ["OMENDB_BACKUP_KEY"]
    assert read_state(resolve(tmp_path / "r")) == (model.data, model.lsn)
    # No key: refused with the remedy. Another key: refused, naming both key ids.
    proc = run("--backup-dir", str(backups), "verify", "--backup-id", "latest", check=3)
    assert "no backup key is configured" in proc.stdout and "--key-file" in proc.stdout
    other = tmp_path / "other.key"
    other.write_text("x" * 64)
    proc = run("--data-dir", str(tmp_path / "r2"), "--backup-dir", str(backups), "--key-file", str(other),
               "restore", "--backup-id", "latest", check=3)
    assert key_id in proc.stderr and "use the key it was made with" in proc.stderr


def test_spliced_parent_is_refused(tmp_path, key_file):
    """A genuine keyed full backup put in place of an incremental's parent (same id) breaks the child: the
    child's MAC covers its parent's MAC."""
    _, backups, _ = _chain(tmp_path, key_file)
    incremental = _incremental(backups)
    key = load_key(str(key_file))
    assert isinstance(key, BackupKey)
    parent_dir = backups / parse((backups / incremental / MANIFEST_FILE).read_bytes(), "x").parent  # type: ignore[operator]
    parent = parse((parent_dir / MANIFEST_FILE).read_bytes(), "parent")
    # Re-signed with the real key but different (e.g. an older manifest of the same backup): a new mac.
    resigned: BackupManifest = dataclasses.replace(parent, notice="replayed").sealed(key)
    (parent_dir / MANIFEST_FILE).write_bytes(resigned.to_json())
    proc = run("--backup-dir", str(backups), "--key-file", str(key_file), "verify", "--backup-id", incremental,
               check=3)
    assert "its parent's signature differs" in proc.stdout


def test_unkeyed_backups_with_a_key_configured(tmp_path, key_file):
    """Backups taken before keys: refused once a key is configured, accepted with --allow-unkeyed and a
    warning; the next incremental does not continue an unkeyed chain but becomes a keyed full backup."""
    root, backups, model = _chain(tmp_path, None)
    keyed = ["--key-file", str(key_file)]
    proc = run("--data-dir", str(tmp_path / "r"), "--backup-dir", str(backups), *keyed, "restore",
               "--backup-id", "latest", check=3)
    assert "--allow-unkeyed" in proc.stderr
    proc = run("--data-dir", str(tmp_path / "r"), "--backup-dir", str(backups), *keyed, "restore",
               "--backup-id", "latest", "--allow-unkeyed")
    assert "unkeyed" in proc.stderr
    assert read_state(resolve(tmp_path / "r")) == (model.data, model.lsn)
    proc = run("--data-dir", str(root), "--backup-dir", str(backups), *keyed, "incremental-backup", "--database",
               "production")
    assert "full backup instead" in proc.stdout
    run("--backup-dir", str(backups), *keyed, "verify", "--backup-id", "latest", "--deep")


def test_bad_key_configuration_is_a_usage_error(tmp_path):
    _, backups, _ = _chain(tmp_path, None)
    proc = run("--backup-dir", str(backups), "--key-file", str(tmp_path / "missing"), "verify", "--backup-id",
               "latest", check=2)
    assert "cannot read the backup key file" in proc.stderr
    short = tmp_path / "short.key"
    short.write_text("too short")
    proc = run("--backup-dir", str(backups), "--key-file", str(short), "verify", "--backup-id", "latest",
               check=2)
    assert "at least 32" in proc.stderr and "openssl rand -hex 32" in proc.stderr
