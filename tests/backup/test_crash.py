"""SIGKILL during backup, restore and cleanup leaves everything consistent: `list` shows only complete
backups that verify, the data directory holds either the old or the new state (or refuses to open with a
message, and `rollback-restore` brings the old state back), and the next run of the command succeeds."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from omendb import Database
from omendb.backup.layout import resolve
from omendb.errors import CorruptionError
from tests.backup.conftest import BACKUP_TOOL, Model, engine_config, read_state, run, write_batches


def _kill_when(args: list[str], ready: Callable[[], bool], delay: float) -> int:
    """Start backup_tool, SIGKILL it `delay` seconds after `ready()` first holds (or when it exits)."""
    proc = subprocess.Popen([str(BACKUP_TOOL), *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while proc.poll() is None and not ready() and time.monotonic() < deadline:
            time.sleep(0.001)
        if delay:
            time.sleep(delay)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        return proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def big(tmp_path_factory) -> tuple[Path, Model]:
    """A database large enough (400k records) that backup and restore take a while."""
    rng = np.random.default_rng(3)
    root = tmp_path_factory.mktemp("crash") / "omendb"
    model = Model()
    with Database.open(engine_config(root)) as db:
        for _ in range(4):
            keys = rng.integers(0, 2**40, 100_000, dtype=np.int64)
            values = rng.random(100_000)
            model.put(db.put_many(keys, values), keys, values)
        db.checkpoint()
        write_batches(db, model, rng, 8)
    return root, model


def _listed(backups: Path) -> list[dict]:
    return json.loads(run("--backup-dir", str(backups), "list", "--output", "json").stdout)


def _staging(backups: Path) -> Callable[[], bool]:
    return lambda: backups.is_dir() and any(p.name.startswith(".tmp-") for p in backups.iterdir())


def test_sigkill_during_backup(big, tmp_path):
    root, model = big
    backups = tmp_path / "backups"
    args = ["--data-dir", str(root), "--backup-dir", str(backups), "full-backup", "--database", "production"]
    outcomes = []
    for delay in (0.0, 0.05, 0.2, 0.5):
        outcomes.append(_kill_when(args, _staging(backups), delay))
        for backup in _listed(backups):  # whatever is listed is complete
            run("--backup-dir", str(backups), "verify", "--backup-id", backup["id"])
    assert -signal.SIGKILL in outcomes
    run(*args)  # the next run succeeds and cleans up the leftovers
    assert not any(p.name.startswith(".tmp-") for p in backups.iterdir())
    latest = _listed(backups)[0]
    run("--data-dir", str(tmp_path / "r"), "--backup-dir", str(backups), "restore", "--backup-id",
        latest["id"])
    assert read_state(resolve(tmp_path / "r")) == (model.data, model.lsn)


@pytest.mark.parametrize("then", ["rerun", "rollback"])
def test_sigkill_during_restore(big, tmp_path, then):
    root, model = big
    backups = tmp_path / "backups"
    run("--data-dir", str(root), "--backup-dir", str(backups), "full-backup", "--database", "production")
    target = tmp_path / "target"
    old_model = Model()
    with Database.open(engine_config(target)) as db:
        write_batches(db, old_model, np.random.default_rng(11), 5)
    old = read_state(resolve(target))
    args = ["--data-dir", str(target), "--backup-dir", str(backups), "restore", "--backup-id", "latest",
            "--force"]
    # Kills while staging, at the start of the swap and later; which phase each one hits depends on timing,
    # so every possible outcome is checked rather than one expected.
    for marker, delay in (("restore-staging", 0.0), ("restore-previous", 0.0), ("restore-staging", 0.3)):
        _kill_when(args, lambda m=marker: (target / "data" / m).exists(), delay)
        try:
            state = read_state(resolve(target))
        except CorruptionError as exc:  # the interrupted swap: the engine refuses, saying what to do
            assert "RESTORE IN PROGRESS" in (target / "data" / "MANIFEST").read_text()
            assert "not valid JSON" in exc.message
            if then == "rollback":
                run("--data-dir", str(target), "rollback-restore")
                assert read_state(resolve(target)) == old
                continue
            run(*args)
            state = read_state(resolve(target))
        assert state in (old, (model.data, model.lsn))
        if state != old:
            # The restore had committed, so there is nothing to roll back (4) — unless the kill came after the
            # commit but before the previous data was deleted: then rollback-restore finishes that cleanup
            # (0). Either way the restored data stays.
            rolled = run("--data-dir", str(target), "rollback-restore", check=None)
            assert rolled.returncode in (0, 4), rolled
            kept = read_state(resolve(target)) == (model.data, model.lsn)  # a bool: no diff of 100k-key dicts
            assert kept, f"rollback-restore changed a committed restore: {rolled}"
            break
    run(*args)  # finishing (or repeating) the restore works whatever happened before
    assert read_state(resolve(target)) == (model.data, model.lsn)
    assert not (target / "data" / "restore-previous").exists()
    assert not (target / "wal" / "restore-previous").exists()


def test_interrupted_swap_is_rolled_back(big, tmp_path, monkeypatch):
    """A failure right before the commit (here: the rename that commits) puts the previous data back."""
    from omendb.backup import restore as restore_module

    root, _ = big
    backups = tmp_path / "backups"
    run("--data-dir", str(root), "--backup-dir", str(backups), "full-backup", "--database", "production")
    target = tmp_path / "target"
    with Database.open(engine_config(target)) as db:
        db.put_many([5, 6], [0.5, 0.6])
    old = read_state(resolve(target))
    real_replace = os.replace

    def failing_replace(src, dst):
        if str(dst).endswith("/MANIFEST") and "restore-staging" in str(src):
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(restore_module.os, "replace", failing_replace)
    proc = run("--data-dir", str(target), "--backup-dir", str(backups), "restore", "--backup-id", "latest",
               "--force", check=1)
    assert "No space left" in proc.stderr
    monkeypatch.undo()
    assert read_state(resolve(target)) == old
    assert sorted(p.name for p in (target / "data").iterdir()) == sorted(
        ["LOCK", "MANIFEST", "WAL_HEAD", next(p.name for p in (target / "data").glob("base-*"))])


def test_sigkill_during_cleanup_never_breaks_a_chain(big, tmp_path):
    root, _ = big
    backups = tmp_path / "backups"
    for kind in ("full-backup", "incremental-backup", "incremental-backup", "full-backup",
                 "incremental-backup"):
        run("--data-dir", str(root), "--backup-dir", str(backups), kind, "--database", "production")
    listed = _listed(backups)
    for backup in listed:  # age every backup past the retention: only the newest chain must survive
        path = backups / backup["id"] / "manifest.json"
        body = json.loads(path.read_text())
        body["created_at_epoch"] -= 40 * 86400
        from omendb.backup.manifest import BackupManifest, FileEntry

        body["files"] = [FileEntry(**f) for f in body["files"]]
        path.write_bytes(BackupManifest(**body).sealed().to_json())
    args = ["--backup-dir", str(backups), "cleanup", "--retention-days", "30"]
    _kill_when(args, lambda: any(p.name.startswith(".deleting-") for p in backups.iterdir()), 0.0)
    for backup in _listed(backups):
        run("--backup-dir", str(backups), "verify", "--backup-id", backup["id"])
    # Whatever the kill left (a half-deleted .deleting- directory) never wedges a later backup: the next
    # writer removes it. (Another database, so the retention below is unchanged for production.)
    run("--data-dir", str(root), "--backup-dir", str(backups), "full-backup", "--database", "other")
    assert not any(p.name.startswith(".deleting-") for p in backups.iterdir())
    out = run(*args).stdout
    remaining = [b for b in _listed(backups) if b["database"] == "production"]
    assert [b["type"] for b in remaining] == ["incremental", "full"]
    assert remaining[0]["parent"] == remaining[1]["id"]
    assert "newest backup of database 'production'" in out and "depends on it" in out
    assert not any(p.name.startswith(".") and p.name != ".lock" for p in backups.iterdir())
