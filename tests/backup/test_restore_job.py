"""The operator's restore Jobs' program (omendb.backup.restore_job) run for real on temporary directories,
and SIGKILLed after every change it makes to the file system: a rerun of the action (the Job retried), or
a put-back (the operator gave up on the restore), always ends where an uninterrupted run would."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from omendb.backup import restore_job
from omendb.backup.contract import RestoreJobRequest, RestoreRequest
from omendb.backup.restore import SET_ASIDE

# The restore command the tests' "restore" runs after setting aside: writes what a restore would, exits 4.
WRITER = "echo new > {root}/data/MANIFEST; echo new > {root}/wal/00000009.wal; exit 4"


def _tree(root: Path) -> dict[str, str]:
    """Every file (with its text) and every directory (as "<dir>") under root."""
    return {str(p.relative_to(root)): "<dir>" if p.is_dir() else p.read_text() for p in sorted(root.rglob("*"))}


def _populate(root: Path) -> dict[str, str]:
    (root / "data" / "lost+found").mkdir(parents=True)
    (root / "wal").mkdir()
    for rel, text in {"data/MANIFEST": "old manifest", "data/base-1.odb": "old base", "data/.hidden": "h",
                      "data/LOCK": "", "wal/00000001.wal": "old wal"}.items():
        (root / rel).write_text(text)
    return _tree(root)


def _run(root: Path, action: str, *command: str, kill_after: int | None = None
         ) -> subprocess.CompletedProcess[str]:
    """The program as the Job runs it (its argv from the contract), in a process of its own."""
    argv = [sys.executable, "-m", "omendb.backup.restore_job", action, "--data-dir", str(root / "data"),
            "--wal-dir", str(root / "wal")]
    if command:
        argv += ["--", *command]
    env = {restore_job.KILL_AFTER_ENV: str(kill_after)} if kill_after is not None else {}
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, env={**os.environ, **env})


def _put_back(root: Path) -> None:
    """A put-back run to its end (in this process: only the crashed runs need a process of their own)."""
    assert restore_job.main(["put-back", "--data-dir", str(root / "data"), "--wal-dir", str(root / "wal")]) == 0


def test_the_job_command_is_the_contracts():
    request = RestoreRequest("/var/lib/omendb/data", "/var/backups/omendb", wal_dir="/var/lib/omendb/wal",
                             force=True)
    argv = RestoreJobRequest("restore", "/d", "/w", request).argv()
    assert argv[:3] == ["python", "-m", "omendb.backup.restore_job"]
    assert argv[3:] == ["restore", "--data-dir", "/d", "--wal-dir", "/w", "--", *request.argv()]
    parsed = restore_job.parser().parse_args(argv[3:argv.index("--")])
    assert (parsed.action, str(parsed.data_dir), str(parsed.wal_dir)) == ("restore", "/d", "/w")


def test_sets_aside_restores_and_puts_back(tmp_path):
    before = _populate(tmp_path)
    proc = _run(tmp_path, "restore", "sh", "-c", WRITER.format(root=tmp_path))
    assert proc.returncode == 4, proc.stderr  # the restore command's exit code is the Job's
    assert (tmp_path / f"data/{SET_ASIDE}/MANIFEST").read_text() == "old manifest"
    assert (tmp_path / f"data/{SET_ASIDE}/.hidden").read_text() == "h"
    assert (tmp_path / "data/LOCK").exists() and not (tmp_path / f"data/{SET_ASIDE}/LOCK").exists()
    assert (tmp_path / "data/lost+found").is_dir() and not (tmp_path / f"data/{SET_ASIDE}/lost+found").exists()
    assert (tmp_path / f"wal/{SET_ASIDE}/00000001.wal").read_text() == "old wal"
    assert (tmp_path / "data/MANIFEST").read_text() == "new\n"
    # A rerun (the Job retried) keeps the first set-aside: the new files are not mixed into it.
    assert _run(tmp_path, "restore", "true").returncode == 0
    assert not (tmp_path / f"data/{SET_ASIDE}/{SET_ASIDE}").exists()
    assert (tmp_path / f"data/{SET_ASIDE}/MANIFEST").read_text() == "old manifest"
    # put-back: what the restore wrote goes, the previous data comes back; a second run changes nothing.
    proc = _run(tmp_path, "put-back")
    assert proc.returncode == 0 and "put the previous contents" in proc.stdout
    assert "nothing set aside" in _run(tmp_path, "put-back").stdout
    assert _tree(tmp_path) == before


def test_discards_after_success_and_handles_empty_volumes(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "wal").mkdir()
    assert _run(tmp_path, "restore", "true").returncode == 0  # a fresh volume: nothing to set aside
    assert (tmp_path / "data/LOCK").exists()  # so backup_tool takes --data-dir for the data directory
    (tmp_path / "data/MANIFEST").write_text("restored")
    assert _run(tmp_path, "discard").returncode == 0
    assert _tree(tmp_path) == {"data": "<dir>", "data/LOCK": "", "data/MANIFEST": "restored", "wal": "<dir>"}
    bad = _run(tmp_path, "explode")
    assert bad.returncode == 2 and "invalid choice: 'explode'" in bad.stderr
    missing = _run(tmp_path, "restore")
    assert missing.returncode == 2 and "restore needs a command after --" in missing.stderr
    gone = _run(tmp_path, "restore", str(tmp_path / "no-such-program"))
    assert gone.returncode == 127 and "cannot run" in gone.stderr
    shutil.rmtree(tmp_path / "wal")
    (tmp_path / "wal").write_text("a file where the WAL volume should be")
    broken = _run(tmp_path, "set-aside")
    assert broken.returncode == 1 and "restore_job: error: set-aside failed" in broken.stderr
    assert "Traceback" not in broken.stderr and "rerun" in broken.stderr


def test_a_restore_killed_at_every_step_reruns_or_puts_back(tmp_path):
    before = _populate(tmp_path / "pristine")
    writer = ["sh", "-c", WRITER.format(root=tmp_path / "run")]
    kills = 0
    while True:
        root = tmp_path / "run"
        shutil.rmtree(root, ignore_errors=True)
        shutil.copytree(tmp_path / "pristine", root)
        proc = _run(root, "restore", *writer, kill_after=kills + 1)
        if proc.returncode == 4:  # every step done: the restore command ran
            break
        assert proc.returncode == -signal.SIGKILL, proc.stderr
        kills += 1
        crashed = tmp_path / "crashed"
        shutil.rmtree(crashed, ignore_errors=True)
        shutil.copytree(root, crashed, symlinks=True)
        # The operator gives up: put-back restores the previous contents exactly.
        _put_back(crashed)
        assert _tree(crashed) == before, f"put-back after a kill at step {kills}"
        # The Job is retried: the rerun completes the set-aside (nothing lost, nothing mixed in), then
        # put-back still restores the previous contents.
        assert _run(root, "restore", *writer).returncode == 4
        saved = {k: v for k, v in _tree(root / "data" / SET_ASIDE).items() if k != ".complete"}
        assert saved == {k.removeprefix("data/"): v for k, v in before.items()
                         if k.startswith("data/") and k not in ("data/LOCK", "data/lost+found")}
        _put_back(root)
        assert _tree(root) == before, f"rerun and put-back after a kill at step {kills}"
    assert kills >= 8  # mkdir, 3 moves and .complete in data/; mkdir, 1 move and .complete in wal/


def test_a_put_back_killed_at_every_step_finishes_when_rerun(tmp_path):
    before = _populate(tmp_path / "restored")
    assert _run(tmp_path / "restored", "restore", "sh", "-c", WRITER.format(root=tmp_path / "restored")
                ).returncode == 4
    kills = 0
    while True:
        root = tmp_path / "run"
        shutil.rmtree(root, ignore_errors=True)
        shutil.copytree(tmp_path / "restored", root)
        proc = _run(root, "put-back", kill_after=kills + 1)
        if proc.returncode == 0:
            break
        assert proc.returncode == -signal.SIGKILL, proc.stderr
        kills += 1
        _put_back(root)
        assert _tree(root) == before, f"put-back rerun after a kill at step {kills}"
    assert _tree(root) == before
    assert kills >= 12  # per volume: what the restore wrote deleted, the marker renamed, entries moved back,
    #                     the marker deleted, the set-aside directory removed


def test_a_discard_killed_at_every_step_finishes_when_rerun(tmp_path):
    _populate(tmp_path / "restored")
    restored = tmp_path / "restored"
    assert _run(restored, "restore", "sh", "-c", WRITER.format(root=restored)).returncode == 4
    after = {k: v for k, v in _tree(restored).items() if SET_ASIDE not in k}
    kills = 0
    while True:
        root = tmp_path / "run"
        shutil.rmtree(root, ignore_errors=True)
        shutil.copytree(restored, root)
        proc = _run(root, "discard", kill_after=kills + 1)
        if proc.returncode == 0:
            break
        assert proc.returncode == -signal.SIGKILL, proc.stderr
        kills += 1
        assert _run(root, "discard").returncode == 0
        assert _tree(root) == after
    assert kills == 2 and _tree(root) == after
