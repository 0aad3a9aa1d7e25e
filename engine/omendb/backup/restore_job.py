"""The operator's restore Jobs (``python -m omendb.backup.restore_job ACTION --data-dir D --wal-dir W``),
run in the engine image on one pod's data and WAL volumes. The operator builds the command from
contract.RestoreJobRequest.

    set-aside   move the volumes' contents into SET_ASIDE/ (a rename on the same volume, never a copy)
    restore     set aside, create D/LOCK, then exec the command after ``--`` (backup_tool restore ...);
                its exit code is the Job's
    put-back    delete what a restore wrote and move the set-aside contents back
    discard     delete SET_ASIDE/ (the restore was verified)

Every action can be rerun after a crash at any point and ends where an uninterrupted run would:
set-aside marks a directory done (``.complete``) only after every entry moved and the moves are durable;
put-back deletes what a restore wrote only while ``.complete`` is there, renames it to ``.putting-back``
once the deletions are durable, then moves the saved entries back; a set-aside that never completed is
simply moved back. LOCK (the engine's lock file) and lost+found stay where they are. An empty data
directory gets a LOCK so backup_tool reads --data-dir as the data directory, not as the parent of data/
and wal/. Every rename, deletion and marker is fsynced (file and directories) before the next step
depends on it.

``OMENDB_RESTORE_JOB_KILL_AFTER=N`` (tests only) makes the program SIGKILL itself after its N-th change
to the file system, so the tests can crash it at every step of every action.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from omendb.backup.contract import RESTORE_ACTIONS
from omendb.files import LOCK, SET_ASIDE, fsync_dir

COMPLETE = ".complete"
PUTTING_BACK = ".putting-back"
STAYS = {SET_ASIDE, LOCK, "lost+found"}  # never moved, never deleted
KILL_AFTER_ENV = "OMENDB_RESTORE_JOB_KILL_AFTER"

_changes = 0


def _changed() -> None:
    """Count one change to the file system; the crash tests' hook dies here."""
    global _changes
    _changes += 1
    if os.environ.get(KILL_AFTER_ENV) == str(_changes):
        os.kill(os.getpid(), signal.SIGKILL)


def _entries(directory: Path) -> list[Path]:
    return sorted(directory.iterdir())


def _touch(path: Path) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    _changed()


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()
    _changed()


def set_aside(directory: Path) -> None:
    saved = directory / SET_ASIDE
    if (saved / COMPLETE).is_file():
        return
    if not saved.is_dir():
        saved.mkdir(parents=True)
        _changed()
    for entry in _entries(directory):
        if entry.name not in STAYS:
            entry.rename(saved / entry.name)
            _changed()
    # The moves are durable before .complete says they are all done.
    fsync_dir(directory)
    fsync_dir(saved)
    _touch(saved / COMPLETE)
    fsync_dir(saved)
    print(f"set aside the previous contents of {directory} in {saved}")


def put_back(directory: Path) -> None:
    saved = directory / SET_ASIDE
    if not saved.is_dir():
        print(f"nothing set aside in {directory}")
        return
    if (saved / COMPLETE).is_file():
        for entry in _entries(directory):
            if entry.name not in STAYS:
                _remove(entry)
        # What the restore wrote is durably gone before the marker says the saved entries may come back.
        fsync_dir(directory)
        (saved / COMPLETE).rename(saved / PUTTING_BACK)
        _changed()
        fsync_dir(saved)
    for entry in _entries(saved):
        if entry.name != PUTTING_BACK:
            entry.rename(directory / entry.name)
            _changed()
    fsync_dir(directory)
    fsync_dir(saved)
    (saved / PUTTING_BACK).unlink(missing_ok=True)
    _changed()
    saved.rmdir()
    _changed()
    fsync_dir(directory)
    print(f"put the previous contents of {directory} back")


def discard(data_dir: Path, wal_dir: Path) -> None:
    for directory in (data_dir, wal_dir):
        if (directory / SET_ASIDE).exists():
            shutil.rmtree(directory / SET_ASIDE)
            _changed()
            fsync_dir(directory)
    print("deleted the data set aside by the restore")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m omendb.backup.restore_job",
                                description="One step of an operator restore Job on a pod's data and WAL "
                                            "volumes (docs/operations/backup-and-restore.md).")
    p.add_argument("action", choices=RESTORE_ACTIONS)
    p.add_argument("--data-dir", required=True, type=Path, help="the pod's data volume")
    p.add_argument("--wal-dir", required=True, type=Path, help="the pod's WAL volume")
    p.epilog = "restore takes the restore command after --: ... restore --data-dir D --wal-dir W -- backup_tool ..."
    return p


def main(argv: Sequence[str] | None = None) -> int:
    global _changes
    _changes = 0
    argv = list(sys.argv[1:] if argv is None else argv)
    # Everything after the first -- is the restore command, never parsed here.
    split = argv.index("--") if "--" in argv else len(argv)
    args, command = parser().parse_args(argv[:split]), argv[split + 1:]
    if (args.action == "restore") != bool(command):
        print(f"restore_job: error: {'restore needs' if args.action == 'restore' else 'only restore takes'} "
              f"a command after --", file=sys.stderr)
        return 2
    data_dir, wal_dir = args.data_dir, args.wal_dir
    try:
        if args.action in ("set-aside", "restore"):
            set_aside(data_dir)
            set_aside(wal_dir)
        if args.action == "restore" and not (data_dir / LOCK).exists():
            _touch(data_dir / LOCK)
            fsync_dir(data_dir)
        elif args.action == "put-back":
            put_back(data_dir)
            put_back(wal_dir)
        elif args.action == "discard":
            discard(data_dir, wal_dir)
    except OSError as exc:  # the operator shows this line (the end of the Job's log) in the status
        print(f"restore_job: error: {args.action} failed: {exc}; fix the cause and rerun: every action "
              f"can be rerun from where it stopped", file=sys.stderr)
        return 1
    if args.action == "restore":
        sys.stdout.flush()
        try:
            os.execvp(command[0], command)
        except OSError as exc:
            print(f"restore_job: error: cannot run {command[0]}: {exc}", file=sys.stderr)
            return 127
    return 0


if __name__ == "__main__":
    sys.exit(main())
