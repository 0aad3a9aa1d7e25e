"""The backup directory: one subdirectory per published backup, a lock, and atomic publish and delete.

``B/<id>/manifest.json`` + payload files. A backup is built in ``B/.tmp-<id>`` and published by renaming
it to ``B/<id>`` after every file and the directory are fsynced, so a crash leaves either nothing visible
or a complete backup. Deletion renames to ``B/.deleting-<id>`` first, so a half-deleted backup is never
listed. Names starting with ``.`` are never backups; the next writer removes leftovers.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from omendb.backup.errors import BackupError, Busy, Corrupt, NotFound
from omendb.backup.manifest import FULL, MANIFEST_FILE, BackupManifest, parse
from omendb.wal import fsync_dir

log = logging.getLogger("omendb.backup")

LOCK_FILE = ".lock"
TMP_PREFIX = ".tmp-"
DELETING_PREFIX = ".deleting-"


@dataclass(frozen=True)
class Damaged:
    name: str
    problem: str


class BackupStore:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).absolute()

    # ---- locking ---------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def locked(self, exclusive: bool, timeout: float = 0.0) -> Iterator[None]:
        """Serialize writers (backups, cleanup) against each other and against readers (restore, verify)."""
        if exclusive:
            self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / LOCK_FILE
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o640)
        except OSError as exc:
            if not exclusive and exc.errno in (errno.EROFS, errno.EACCES, errno.ENOENT):
                yield  # a read-only backup volume: nobody can be writing to it through us
                return
            raise BackupError(f"cannot open the lock file {path}: {exc.strerror}; check that the backup "
                              f"directory {self.root} is writable") from None
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "unknown"
                        raise Busy(f"backup directory {self.root} is in use by another backup_tool run "
                                   f"({holder}); wait for it to finish, or pass --lock-timeout SECONDS to "
                                   f"wait") from None
                    time.sleep(0.2)
            if exclusive:
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"pid {os.getpid()}: {' '.join(sys.argv[1:])[:300]}\n".encode(), 0)
            yield
        finally:
            os.close(fd)

    # ---- reading ---------------------------------------------------------------------------------------

    def scan(self) -> tuple[list[BackupManifest], list[Damaged]]:
        """Published backups (oldest first) and directories whose manifest cannot be used."""
        good: list[BackupManifest] = []
        damaged: list[Damaged] = []
        if not self.root.is_dir():
            return good, damaged
        for path in self.root.iterdir():
            if path.name.startswith(".") or not path.is_dir():
                continue
            try:
                raw = (path / MANIFEST_FILE).read_bytes()
            except (FileNotFoundError, NotADirectoryError, PermissionError):
                continue  # not a backup (published backups always have their manifest)
            try:
                manifest = parse(raw, str(path / MANIFEST_FILE))
            except Corrupt as exc:
                damaged.append(Damaged(path.name, exc.message))
                continue
            if manifest.id != path.name:
                damaged.append(Damaged(path.name, f"{path}: the manifest says id {manifest.id}"))
                continue
            good.append(manifest)
        good.sort(key=lambda m: (m.created_at_epoch, m.end_lsn, m.id))
        return good, damaged

    def backups(self, database: str | None = None) -> list[BackupManifest]:
        good, _ = self.scan()
        return [m for m in good if database is None or m.database == database]

    def get(self, backup_id: str, database: str | None = None) -> BackupManifest:
        if backup_id == "latest":
            good, damaged = self.scan()
            found = [m for m in good if database is None or m.database == database]
            damaged = [d for d in damaged if database is None or d.name.startswith(f"{database}-")]
            if damaged:
                # The damaged one may be the newest: never fall back to an older backup silently.
                raise Corrupt("cannot tell which backup is the latest: "
                              f"{'; '.join(d.problem for d in damaged)}. Inspect or delete the damaged "
                              "backup, or pass an explicit --backup-id")
            if not found:
                where = f" for database {database!r}" if database else ""
                raise NotFound(f"no backups{where} in {self.root}; take one with `backup_tool --data-dir D "
                               f"--backup-dir {self.root} full-backup --database NAME`")
            return found[-1]
        path = self.root / backup_id
        if backup_id.startswith(".") or "/" in backup_id or not path.is_dir():
            raise NotFound(f"no backup {backup_id!r} in {self.root}; `backup_tool --backup-dir {self.root} "
                           "list --database NAME` shows the backups there")
        try:
            raw = (path / MANIFEST_FILE).read_bytes()
        except FileNotFoundError:
            raise Corrupt(f"{path} has no {MANIFEST_FILE}; it is not a usable backup") from None
        return parse(raw, str(path / MANIFEST_FILE))

    def chain(self, manifest: BackupManifest) -> list[BackupManifest]:
        """The full backup and the incrementals leading to `manifest`, oldest first, checked for
        continuity."""
        chain = [manifest]
        seen = {manifest.id}
        while chain[0].type != FULL:
            child = chain[0]
            if child.parent is None:
                raise Corrupt(f"incremental backup {child.id} names no parent; the chain is broken")
            try:
                parent = self.get(child.parent)
            except NotFound:
                raise Corrupt(f"backup {child.id} depends on {child.parent}, which is missing from "
                              f"{self.root}; the chain is broken — restore from an older chain or take a "
                              "new full backup") from None
            if parent.id in seen:
                raise Corrupt(f"backup {child.id}: its chain of parents loops at {parent.id}")
            if parent.database != child.database or parent.end_lsn != child.start_lsn:
                raise Corrupt(f"backup {child.id} starts at LSN {child.start_lsn} but its parent {parent.id} "
                              f"ends at LSN {parent.end_lsn} (database {parent.database!r}); the chain is "
                              f"broken")
            seen.add(parent.id)
            chain.insert(0, parent)
        return chain

    def path(self, backup_id: str) -> Path:
        return self.root / backup_id

    # ---- writing (under the exclusive lock) -------------------------------------------------------------

    def staging(self, backup_id: str) -> Path:
        path = self.root / f"{TMP_PREFIX}{backup_id}"
        if path.exists():
            shutil.rmtree(path)
        path.mkdir(parents=True)
        return path

    def publish(self, staging: Path, manifest: BackupManifest) -> Path:
        sealed = manifest.sealed()
        target = self.root / sealed.id
        if target.exists():
            raise BackupError(f"backup {sealed.id} already exists in {self.root}")
        with open(staging / MANIFEST_FILE, "xb") as f:
            f.write(sealed.to_json())
            f.flush()
            os.fsync(f.fileno())
        fsync_dir(staging)
        os.rename(staging, target)
        fsync_dir(self.root)
        return target

    def delete(self, backup_id: str) -> None:
        doomed = self.root / f"{DELETING_PREFIX}{backup_id}"
        os.rename(self.root / backup_id, doomed)
        fsync_dir(self.root)  # from here the backup is gone for every reader, even if we die mid-delete
        shutil.rmtree(doomed)

    def remove_leftovers(self) -> list[str]:
        """Temporary directories of interrupted runs (only safe under the exclusive lock)."""
        removed = []
        if self.root.is_dir():
            for path in self.root.iterdir():
                if path.is_dir() and path.name.startswith((TMP_PREFIX, DELETING_PREFIX)):
                    shutil.rmtree(path)
                    removed.append(path.name)
        if removed:
            fsync_dir(self.root)
            log.info("removed leftovers of interrupted runs: %s", ", ".join(sorted(removed)))
        return removed
