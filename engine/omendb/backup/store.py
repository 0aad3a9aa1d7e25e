"""The backup directory: one subdirectory per published backup, a lock, and atomic publish and delete.

``B/<id>/manifest.json`` + payload files. A backup is built in ``B/.tmp-<id>`` and published by renaming
it to ``B/<id>`` after every file and the directory are fsynced, so a crash leaves either nothing visible
or a complete backup. Deletion renames to ``B/.deleting-<id>`` first, so a half-deleted backup is never
listed. Names starting with ``.`` are never backups; the next writer removes leftovers, whatever they are
(a half-deleted directory, a file, a symbolic link), so no leftover can wedge a later run.

Nothing here follows a symbolic link: an entry of ``B`` that is a link is never read as a backup and,
when deleted, only the link goes, never what it points to.

With a backup key (keys.py) every backup is signed when published and every manifest of a chain is
authenticated before it is used (manifest.authenticate).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import re
import shutil
import stat
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from omendb.backup.errors import BackupError, Busy, Corrupt, NotFound
from omendb.backup.keys import BackupKey, NotAuthentic
from omendb.backup.manifest import FULL, MANIFEST_FILE, BackupManifest, authenticate, parse
from omendb.files import fsync_dir
from omendb.wal_archive import DirectoryLocation, Location

log = logging.getLogger("omendb.backup")

LOCK_FILE = ".lock"
TMP_PREFIX = ".tmp-"
DELETING_PREFIX = ".deleting-"
# A backup id (manifest.new_id): a directory so named is a backup, so one without a readable manifest is a
# damaged backup rather than something else kept in the backup directory (lost+found, a user's notes).
BACKUP_ID = re.compile(r"^(?P<database>.+)-(?P<stamp>\d{8}T\d{9}Z)-(?:full|incr)$")


@dataclass(frozen=True)
class Damaged:
    name: str
    problem: str


def remove_entry(path: Path) -> None:
    """Delete a directory entry without following a symbolic link: a link (or file) is unlinked, a real
    directory removed with everything in it (shutil.rmtree unlinks links inside, never their targets)."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISDIR(mode):
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _stamp(backup_id: str) -> str:
    match = BACKUP_ID.match(backup_id)
    return match["stamp"] if match else ""


class BackupStore:
    def __init__(self, root: str | Path, key: BackupKey | None = None, allow_unkeyed: bool = False) -> None:
        self.root = Path(root).absolute()
        self.key = key  # signs what is published, authenticates what is read (keys.py)
        self.allow_unkeyed = allow_unkeyed
        self.warnings: list[str] = []  # unkeyed backups accepted so far (said once each)

    def close(self) -> None:
        """Nothing to release for a directory (an object store's working directory, bucket.py)."""

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
            if path.name.startswith("."):
                continue
            looks_like_backup = BACKUP_ID.match(path.name) is not None
            if path.is_symlink():
                if looks_like_backup:
                    damaged.append(Damaged(path.name, f"{path} is a symbolic link, which backup_tool never "
                                                      "follows; move the backup itself into the backup "
                                                      "directory"))
                continue
            if not path.is_dir():
                continue
            try:
                raw = (path / MANIFEST_FILE).read_bytes()
            except OSError as exc:
                # Published backups always have their manifest: a backup-named directory without a
                # readable one is damaged (and must stop `latest` from silently meaning an older backup).
                if looks_like_backup:
                    damaged.append(Damaged(path.name, f"{path / MANIFEST_FILE} cannot be read "
                                                      f"({exc.strerror or exc})"))
                continue
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

    def wal_archive(self, database_id: str) -> Location:
        """Where the server's WAL archiver ([wal_archive] url = this directory) ships that database's WAL."""
        return DirectoryLocation(Path(self.root), database_id)

    def backups(self, database: str | None = None) -> list[BackupManifest]:
        good, _ = self.scan()
        return [m for m in good if database is None or m.database == database]

    def get(self, backup_id: str, database: str | None = None) -> BackupManifest:
        if backup_id == "latest":
            good, damaged = self.scan()
            found = [m for m in good if database is None or m.database == database]
            self.refuse_damaged_newer(damaged, found[-1] if found else None, database)
            if not found:
                where = f" for database {database!r}" if database else ""
                raise NotFound(f"no backups{where} in {self.root}; take one with `backup_tool --data-dir D "
                               f"--backup-dir {self.root} full-backup --database NAME`")
            return found[-1]
        path = self.root / backup_id
        if backup_id.startswith(".") or "/" in backup_id or not path.is_dir():
            raise NotFound(f"no backup {backup_id!r} in {self.root}; `backup_tool --backup-dir {self.root} "
                           "list --database NAME` shows the backups there")
        if path.is_symlink():
            raise Corrupt(f"{path} is a symbolic link, which backup_tool never follows; move the backup "
                          "itself into the backup directory")
        try:
            raw = (path / MANIFEST_FILE).read_bytes()
        except FileNotFoundError:
            raise Corrupt(f"{path} has no {MANIFEST_FILE}; it is not a usable backup") from None
        return parse(raw, str(path / MANIFEST_FILE))

    def refuse_damaged_newer(self, damaged: list[Damaged], chosen: BackupManifest | None,
                             database: str | None) -> None:
        """`latest` must never silently mean an older backup than the newest one: refuse when a damaged
        (unreadable) backup of the database is newer than `chosen`, naming it and the remedies."""
        newer = []
        for d in damaged:
            match = BACKUP_ID.match(d.name)
            if match is None or (database is not None and match["database"] != database):
                continue
            if chosen is None or match["stamp"] > _stamp(chosen.id):
                newer.append(d)
        if newer:
            d = max(newer, key=lambda d: d.name)
            older = f" ({chosen.id} is the newest readable one)" if chosen else ""
            raise Corrupt(f"the latest backup {d.name} cannot be used: {d.problem}. Refusing to fall back to "
                          f"an older backup silently. Check it with `backup_tool --backup-dir {self.root} verify "
                          f"--backup-id {d.name}`; if it is damaged, move it out of {self.root} (or delete "
                          f"it), or restore an older backup by naming it with --backup-id ID{older}")

    def authenticate(self, manifest: BackupManifest) -> None:
        """manifest.authenticate with this store's key; an accepted unkeyed backup is warned about once."""
        warning = authenticate(manifest, self.key, self.allow_unkeyed)
        if warning and warning not in self.warnings:
            self.warnings.append(warning)
            log.warning("WARNING: %s", warning)

    def chain(self, manifest: BackupManifest) -> list[BackupManifest]:
        """The full backup and the incrementals leading to `manifest`, oldest first, checked for
        continuity and authenticated (a keyed incremental names its parent's mac)."""
        self.authenticate(manifest)
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
            self.authenticate(parent)
            if child.keyed and child.parent_mac != parent.mac:
                raise NotAuthentic(f"backup {child.id} was made on top of another {parent.id} than the one in "
                                   f"{self.root} (its parent's signature differs): the chain was tampered "
                                   "with; restore another backup and take a new full backup")
            seen.add(parent.id)
            chain.insert(0, parent)
        return chain

    def path(self, backup_id: str) -> Path:
        return self.root / backup_id

    # ---- writing (under the exclusive lock) -------------------------------------------------------------

    def staging(self, backup_id: str) -> Path:
        path = self.root / f"{TMP_PREFIX}{backup_id}"
        remove_entry(path)
        path.mkdir(parents=True)
        return path

    def publish(self, staging: Path, manifest: BackupManifest) -> Path:
        sealed = manifest.sealed(self.key)
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
        remove_entry(doomed)  # a leftover of the same name would make the rename fail
        os.rename(self.root / backup_id, doomed)  # renames a link itself, never its target
        fsync_dir(self.root)  # from here the backup is gone for every reader, even if we die mid-delete
        remove_entry(doomed)
        fsync_dir(self.root)

    def remove_leftovers(self) -> list[str]:
        """Temporary entries of interrupted runs (only safe under the exclusive lock). One that cannot be
        removed is logged and left: it is never read as a backup, so it must not stop this run."""
        removed = []
        if self.root.is_dir():
            for path in self.root.iterdir():
                if not path.name.startswith((TMP_PREFIX, DELETING_PREFIX)):
                    continue
                try:
                    remove_entry(path)
                except OSError as exc:
                    log.warning("could not remove %s, left by an interrupted run (%s); remove it by hand",
                                path, exc)
                    continue
                removed.append(path.name)
        if removed:
            fsync_dir(self.root)
            log.info("removed leftovers of interrupted runs: %s", ", ".join(sorted(removed)))
        return removed
