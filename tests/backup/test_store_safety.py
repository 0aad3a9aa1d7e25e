"""The backup directory is handled defensively: `latest` never silently means an older backup than the
newest one, and nothing deletes through a symbolic link or is wedged by what an interrupted run left."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from omendb import Database
from omendb.backup.manifest import MANIFEST_FILE, BackupManifest, FileEntry
from tests.backup.conftest import Model, engine_config, run, write_batches


def _backup(root: Path, backups: Path, kind: str, database: str = "production") -> str:
    out = run("--data-dir", str(root), "--backup-dir", str(backups), kind, "--database", database).stdout
    return out.split("\t", 1)[0]


@pytest.fixture
def two_chains(tmp_path) -> tuple[Path, Path, list[str]]:
    """full1 <- incr1, then full2 <- incr2 (the newest), of a database that keeps changing."""
    rng = np.random.default_rng(9)
    root, backups, model = tmp_path / "omendb", tmp_path / "backups", Model()
    ids = []
    with Database.open(engine_config(root)) as db:
        for kind in ("full-backup", "incremental-backup", "full-backup", "incremental-backup"):
            write_batches(db, model, rng, 3)
            ids.append(_backup(root, backups, kind))
            time.sleep(0.01)
    return root, backups, ids


@pytest.mark.parametrize("target", [[], ["--to-time", "2100-01-01T00:00:00Z"]], ids=["end", "to-time"])
def test_latest_refuses_when_the_newest_backup_is_unreadable(two_chains, tmp_path, target):
    _, backups, ids = two_chains
    newest = ids[-1]
    (backups / newest / MANIFEST_FILE).unlink()  # lost (or unreadable): the backup can no longer be read
    proc = run("--data-dir", str(tmp_path / "r"), "--backup-dir", str(backups), "restore", "--backup-id",
               "latest", *target, check=3)
    assert f"the latest backup {newest} cannot be used" in proc.stderr
    assert "Refusing to fall back to an older backup silently" in proc.stderr
    assert f"verify --backup-id {newest}" in proc.stderr and "--backup-id ID" in proc.stderr
    assert f"{ids[-2]} is the newest readable one" in proc.stderr
    assert not (tmp_path / "r" / "data" / "MANIFEST").exists()
    # verify latest says the same; an explicit older id still restores.
    proc = run("--backup-dir", str(backups), "verify", "--backup-id", "latest", check=3)
    assert newest in proc.stdout
    run("--data-dir", str(tmp_path / "r"), "--backup-dir", str(backups), "restore", "--backup-id", ids[-2])


def test_latest_with_a_target_refuses_a_newest_chain_that_fails_its_checks(two_chains, tmp_path):
    """The newest chain's full backup is damaged: restoring to "now" must not quietly use the older chain."""
    _, backups, ids = two_chains
    path = backups / ids[2] / MANIFEST_FILE
    body = json.loads(path.read_text())
    body["end_lsn"] += 1  # breaks the chain full2 -> incr2 (and the manifest checksum is recomputed)
    body["files"] = [FileEntry(**f) for f in body["files"]]
    path.write_bytes(BackupManifest(**body).sealed().to_json())
    proc = run("--data-dir", str(tmp_path / "r"), "--backup-dir", str(backups), "restore", "--backup-id",
               "latest", "--to-time", "2100-01-01T00:00:00Z", check=3)
    assert f"backup {ids[3]}, the newest one that may cover" in proc.stderr
    assert "Refusing to fall back" in proc.stderr
    assert not (tmp_path / "r" / "data" / "MANIFEST").exists()


def _age(backups: Path, days: float) -> None:
    for path in backups.glob(f"*/{MANIFEST_FILE}"):
        body = json.loads(path.read_text())
        body["created_at_epoch"] -= days * 86400
        body["files"] = [FileEntry(**f) for f in body["files"]]
        path.write_bytes(BackupManifest(**body).sealed().to_json())


def test_cleanup_never_deletes_through_a_symlink(two_chains, tmp_path):
    root, backups, ids = two_chains
    outside = tmp_path / "elsewhere"
    # 1. a symbolic link inside an expired backup, pointing at a directory outside the backup volume
    (outside / "precious").mkdir(parents=True)
    (outside / "precious" / "data.txt").write_text("keep me")
    (backups / ids[0] / "link").symlink_to(outside / "precious", target_is_directory=True)
    # 2. an entry of the backup directory that is a link to (a copy of) a backup elsewhere
    shutil.copytree(backups / ids[1], outside / "copy")
    linked_id = "production-20250101T000000000Z-full"  # an older, backup-like name
    body = json.loads((outside / "copy" / MANIFEST_FILE).read_text())
    body.update(id=linked_id, type="full", parent=None)
    body["files"] = [FileEntry(**f) for f in body["files"]]
    (outside / "copy" / MANIFEST_FILE).write_bytes(BackupManifest(**body).sealed().to_json())
    (backups / linked_id).symlink_to(outside / "copy", target_is_directory=True)
    _age(backups, 40)
    proc = run("--backup-dir", str(backups), "cleanup", "--retention-days", "30")
    assert f"removed\t{ids[0]}" in proc.stdout and f"removed\t{ids[1]}" in proc.stdout
    assert f"skipped\t{linked_id}" in proc.stdout and "symbolic link" in proc.stdout
    assert (outside / "precious" / "data.txt").read_text() == "keep me"
    assert (outside / "copy" / MANIFEST_FILE).exists() and (backups / linked_id).is_symlink()
    assert not any(p.name.startswith(".deleting-") for p in backups.iterdir())
    # A later backup is not wedged by any of it.
    _backup(root, backups, "incremental-backup")


def test_leftovers_of_any_kind_never_wedge_a_later_run(two_chains, tmp_path):
    """What an interrupted run (or a hand) left under a temporary name — a link to a directory outside, a
    file, a half-deleted directory — is removed by the next writer, which never follows the link."""
    root, backups, ids = two_chains
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "data.txt").write_text("keep me")
    (backups / f".deleting-{ids[0]}").symlink_to(outside, target_is_directory=True)
    (backups / ".tmp-production-20260101T000000000Z-full").write_text("a file, not a directory")
    (backups / ".deleting-production-20250101T000000000Z-full" / "sub").mkdir(parents=True)
    _backup(root, backups, "incremental-backup")
    assert (outside / "data.txt").read_text() == "keep me"
    assert sorted(p.name for p in backups.iterdir() if p.name.startswith(".")) == [".lock"]
    run("--backup-dir", str(backups), "list")
    # A backup whose .deleting- name is already taken (a leftover) is still deleted by cleanup.
    (backups / f".deleting-{ids[0]}").mkdir()
    (backups / f".deleting-{ids[0]}" / "junk").write_text("x")
    _age(backups, 40)
    out = run("--backup-dir", str(backups), "cleanup", "--retention-days", "30").stdout
    assert f"removed\t{ids[0]}" in out
    assert sorted(p.name for p in backups.iterdir() if p.name.startswith(".")) == [".lock"]
