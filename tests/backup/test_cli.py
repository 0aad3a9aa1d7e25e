"""backup_tool's safety rails and messages: locks, refusals, exit codes, list format, credentials."""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time

import pytest

from omendb import Database
from omendb.backup.contract import RESULT_VERSION, BackupResult, CleanupResult, RestoreResult, parse_result
from omendb.backup.errors import BackupError
from omendb.backup.layout import resolve
from omendb.backup.source import load_credentials
from tests.backup.conftest import Model, engine_config, read_state, run, write_batches


@pytest.fixture
def db_and_backups(tmp_path, rng):
    root, backups, model = tmp_path / "omendb", tmp_path / "backups", Model()
    with Database.open(engine_config(root)) as db:
        write_batches(db, model, rng, 6)
    run("--data-dir", str(root), "--backup-dir", str(backups), "full-backup", "--database", "production")
    return root, backups, model


def test_concurrent_runs_on_one_backup_dir_are_serialized(db_and_backups):
    root, backups, _ = db_and_backups
    fd = os.open(backups / ".lock", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.pwrite(fd, b"pid 4242: full-backup --database production\n", 0)
    args = ["--data-dir", str(root), "--backup-dir", str(backups), "incremental-backup", "--database",
            "production"]
    try:
        proc = run(*args, check=5)
        assert "in use by another backup_tool run" in proc.stderr and "pid 4242" in proc.stderr
        assert "--lock-timeout" in proc.stderr
        threading.Timer(0.3, fcntl.flock, [fd, fcntl.LOCK_UN]).start()
        run("--lock-timeout", "10", *args)
    finally:
        os.close(fd)


def test_restore_refuses_a_running_server_and_a_non_empty_directory(db_and_backups, tmp_path):
    root, backups, model = db_and_backups
    before = read_state(resolve(root))
    args = ["--data-dir", str(root), "--backup-dir", str(backups), "restore", "--backup-id", "latest"]
    with Database.open(engine_config(root)):  # holds the data directory like `omendb serve`
        proc = run(*args, "--force", check=5)
        assert f"in use by process {os.getpid()}" in proc.stderr and "stop it first" in proc.stderr
    proc = run(*args, check=6)
    assert "--force" in proc.stderr
    assert read_state(resolve(root)) == before
    run(*args, "--force")
    assert read_state(resolve(root)) == (model.data, model.lsn)


def test_list_format_and_exit_codes(db_and_backups, tmp_path):
    root, backups, _ = db_and_backups
    time.sleep(0.01)
    run("--data-dir", str(root), "--backup-dir", str(backups), "incremental-backup", "--database",
        "production")
    run("--data-dir", str(root), "--backup-dir", str(backups), "full-backup", "--database", "staging")
    lines = run("--backup-dir", str(backups), "list", "--database", "production").stdout.splitlines()
    assert len(lines) == 2 and lines[0].split()[0].endswith("-incr") and lines[1].split()[0].endswith("-full")
    assert all(line.split()[0].startswith("production-") for line in lines)
    everything = json.loads(run("--backup-dir", str(backups), "list", "--output", "json").stdout)
    assert [b["database"] for b in everything] == ["staging", "production", "production"]
    assert run("--backup-dir", str(tmp_path / "none"), "list").stdout == ""
    assert "no backups" in run("--backup-dir", str(tmp_path / "none"), "verify", "--backup-id", "latest",
                               check=4).stderr
    assert "no backup 'nope'" in run("--data-dir", str(tmp_path / "x"), "--backup-dir", str(backups),
                                     "restore",
                                     "--backup-id", "nope", check=4).stderr
    assert "ISO 8601" in run("--data-dir", str(tmp_path / "x"), "--backup-dir", str(backups), "restore",
                             "--backup-id", "latest", "--to-time", "yesterday", check=2).stderr
    assert "database name" in run("--data-dir", str(root), "--backup-dir", str(backups), "full-backup",
                                  "--database", "../evil", check=2).stderr
    assert "does not exist" in run("--data-dir", str(tmp_path / "empty"), "--backup-dir", str(backups),
                                   "full-backup", "--database", "x", check=1).stderr
    (tmp_path / "empty" / "data").mkdir(parents=True)
    assert "holds no OmenDB database" in run("--data-dir", str(tmp_path / "empty"), "--backup-dir",
                                             str(backups),
                                             "full-backup", "--database", "x", check=1).stderr
    assert "needs --data-dir" in run("--backup-dir", str(backups), "full-backup", "--database", "x",
                                     check=2).stderr
    assert "needs --backup-dir" in run("full-backup", "--database", "x", check=2).stderr
    # Options may also follow the subcommand.
    run("list", "--backup-dir", str(backups), "--database", "staging")


def test_cleanup_dry_run_and_reporting(db_and_backups):
    _, backups, _ = db_and_backups
    out = run("--backup-dir", str(backups), "cleanup", "--retention-days", "0", "--dry-run").stdout
    assert "kept" in out and "newest backup" in out
    assert len(json.loads(run("--backup-dir", str(backups), "list", "--output", "json").stdout)) == 1


def test_credentials_sources(tmp_path, monkeypatch):
    monkeypatch.delenv("OMENDB_USER", raising=False)
    monkeypatch.delenv("OMENDB_PASSWORD", raising=False)
    plain = tmp_path / "plain"
    plain.write_text("admin:pa:ss\n")
    assert load_credentials(str(plain)) == ("admin", "pa:ss")
    for body in ({"username": "admin", "password": "pw"}, {"user": "admin", "password": "pw"},
                 {"admin": "pw"}):
        (tmp_path / "c.json").write_text(json.dumps(body))
        assert load_credentials(str(tmp_path / "c.json")) == ("admin", "pw")
    (tmp_path / "bad").write_text("no-colon")
    with pytest.raises(BackupError, match="user:password"):
        load_credentials(str(tmp_path / "bad"))
    assert load_credentials(None) is None
    monkeypatch.setenv("OMENDB_USER", "admin")
    with pytest.raises(BackupError, match="OMENDB_PASSWORD"):
        load_credentials(None)
    monkeypatch.setenv("OMENDB_PASSWORD", "pw")
    assert load_credentials(None) == ("admin", "pw")


def test_result_file_reports_backup_and_restore_as_json(db_and_backups, tmp_path):
    """--result-file: what the operator's Jobs put in their termination message (OmenDBBackup status,
    OmenDBRestore verification)."""
    root, backups, model = db_and_backups
    result = tmp_path / "result.json"
    run("--data-dir", str(root), "--backup-dir", str(backups), "--result-file", str(result), "full-backup",
        "--database", "production")
    made = json.loads(result.read_text())
    listed = json.loads(run("--backup-dir", str(backups), "list", "--output", "json").stdout)[0]
    assert made["backupId"] == listed["id"] and made["type"] == "full"
    assert made["sizeBytes"] == sum(f["size"] for f in listed["files"]) > 0
    assert (made["endLSN"], made["records"]) == (model.lsn, len(model.data))
    assert (made["version"], made["kind"]) == (RESULT_VERSION, "backup")
    assert parse_result(result.read_text()) == BackupResult(
        listed["id"], "full", "production", made["sizeBytes"], listed["start_lsn"], model.lsn, len(model.data),
        listed["created_at"])
    target = tmp_path / "restored"
    run("--data-dir", str(target), "--backup-dir", str(backups), "restore", "--backup-id", made["backupId"],
        "--result-file", str(result))
    restored = json.loads(result.read_text())
    assert restored["backupId"] == made["backupId"]
    assert (restored["lsn"], restored["records"]) == (model.lsn, len(model.data))
    assert (restored["backupEndLSN"], restored["backupRecords"]) == (model.lsn, len(model.data))
    assert (restored["version"], restored["kind"]) == (RESULT_VERSION, "restore")
    assert parse_result(result.read_text()) == RestoreResult(made["backupId"], model.lsn, restored["term"],
                                                             len(model.data), model.lsn, len(model.data))
    run("--backup-dir", str(backups), "--result-file", str(result), "cleanup", "--retention-days", "0", "--dry-run")
    older = [b["id"] for b in json.loads(run("--backup-dir", str(backups), "list", "--output", "json").stdout)
             if b["id"] != made["backupId"]]
    assert len(older) == 1  # the fixture's: with 0 days of retention, only the newest full backup stays
    assert parse_result(result.read_text()) == CleanupResult(tuple(older), (made["backupId"],), (), dry_run=True)
    # A failed restore writes no result: the file keeps the previous content.
    run("--data-dir", str(target), "--backup-dir", str(backups), "restore", "--backup-id", "nope",
        "--result-file", str(tmp_path / "none.json"), check=4)
    assert not (tmp_path / "none.json").exists()


def test_restore_keeps_the_operators_set_aside_data(db_and_backups):
    """The operator's restore Job moves the current data into .restore-saved/ (in the data and WAL
    directories) and keeps it until the restored database is verified: a restore must not take it along."""
    root, backups, model = db_and_backups
    layout = resolve(root)
    for directory in (layout.data_dir, layout.wal_dir):
        (directory / ".restore-saved").mkdir()
        (directory / ".restore-saved" / "kept").write_text("previous data")
    run("--data-dir", str(root), "--backup-dir", str(backups), "restore", "--backup-id", "latest", "--force")
    assert read_state(resolve(root)) == (model.data, model.lsn)
    for directory in (layout.data_dir, layout.wal_dir):
        assert (directory / ".restore-saved" / "kept").read_text() == "previous data"
