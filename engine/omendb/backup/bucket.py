"""Backups in an object store: ``--backup-dir s3://bucket/prefix`` (docs/backup.md "Object storage").

The same layout as a backup directory, as keys under the prefix: ``<id>/manifest.json`` and ``<id>/<payload>``,
plus the writers' lock object ``.lock`` (omendb.objectlock). S3 has no rename, so a backup is published by
uploading its payload files first (multipart, streamed from the local staging directory) and its manifest
LAST: a backup is listed only once its manifest exists, so a run killed mid-upload leaves nothing listable,
and the next writer (holding the lock) deletes what such a run left. Deleting goes the other way: manifest
first (the backup is gone for every reader from then on), payloads after.

Reading streams each backup's objects down to a local working directory when the backup is first used
(``path``), where the payload checks of the local store (sizes, sha256, frame checksums) run unchanged; a
restore puts that directory beside the data directory it restores into, so the download lands on the
database's own volume. Nothing is held in memory whole.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

from omendb.backup.errors import BackupError, Busy, Corrupt, NotFound, StoreUnavailable
from omendb.backup.keys import BackupKey
from omendb.backup.manifest import MANIFEST_FILE, BackupManifest, parse
from omendb.backup.store import BACKUP_ID, DELETING_PREFIX, TMP_PREFIX, BackupStore, Damaged
from omendb.objectlock import LOCK_KEY, LockBusy, LockLost, ObjectLock
from omendb.objectstore import BucketNotFound, ObjectInfo, ObjectStore, ObjectStoreError, is_object_url
from omendb.objectstore import NotFound as ObjectNotFound
from omendb.wal_archive import BucketLocation, Location

log = logging.getLogger("omendb.backup")


@contextlib.contextmanager
def _translated() -> Iterator[None]:
    """Object store failures as the backup tool's errors (and exit codes)."""
    try:
        yield
    except (LockBusy, LockLost) as exc:
        raise Busy(exc.message) from None
    except BucketNotFound as exc:
        raise StoreUnavailable(exc.message) from None
    except ObjectNotFound as exc:
        raise NotFound(exc.message) from None
    except ObjectStoreError as exc:
        raise StoreUnavailable(exc.message) from None


class ObjectBackupStore(BackupStore):
    """BackupStore's interface over an object store prefix."""

    def __init__(self, url: str, key: BackupKey | None = None, allow_unkeyed: bool = False,
                 env: Mapping[str, str] | None = None, work_dir: str | Path | None = None) -> None:
        super().__init__(".", key, allow_unkeyed)
        with _translated():
            self.objects = ObjectStore.from_url(url) if env is None else ObjectStore.from_url(url, env)
        self.root = self.objects.url  # type: ignore[assignment]  # shown in messages, like a directory
        self.work_parent = Path(work_dir) if work_dir else None
        self._work: Path | None = None
        self._downloaded: set[str] = set()
        self._lock: ObjectLock | None = None

    # ---- the local working directory ----------------------------------------------------------------------

    @property
    def work(self) -> Path:
        if self._work is None:
            try:
                self._work = Path(tempfile.mkdtemp(prefix=".omendb-backup-s3-", dir=self.work_parent))
            except OSError as exc:
                if self.work_parent is None:
                    raise
                log.warning("cannot use %s for the backup's files (%s); using %s instead", self.work_parent,
                            exc.strerror, tempfile.gettempdir())
                self._work = Path(tempfile.mkdtemp(prefix=".omendb-backup-s3-"))
        return self._work

    def close(self) -> None:
        if self._work is not None:
            shutil.rmtree(self._work, ignore_errors=True)
            self._work = None
            self._downloaded.clear()

    # ---- locking ------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def locked(self, exclusive: bool, timeout: float = 0.0) -> Iterator[None]:
        """Writers hold the lock object; readers take none (S3 has no shared lock): a restore or verify that
        races a cleanup deleting its backup fails cleanly (an object is missing) before committing anything."""
        with _translated():
            self.objects.check()  # a clear error now rather than halfway through
            if not exclusive:
                yield
                return
            lock = ObjectLock(self.objects, LOCK_KEY)
            lock.acquire(timeout)
        self._lock = lock
        try:
            yield
        finally:
            self._lock = None
            with _translated():
                lock.release()

    def _still_locked(self) -> None:
        if self._lock is not None:
            with _translated():
                self._lock.check()

    # ---- reading ------------------------------------------------------------------------------------------

    def _groups(self) -> dict[str, list[ObjectInfo]]:
        """Objects by their first path component (a backup id, a leftover, the lock)."""
        with _translated():
            objects = self.objects.list()
        groups: dict[str, list[ObjectInfo]] = {}
        for o in objects:
            top, _, rest = o.key.partition("/")
            if rest:
                groups.setdefault(top, []).append(o)
        return groups

    def _manifest(self, backup_id: str) -> BackupManifest:
        key = f"{backup_id}/{MANIFEST_FILE}"
        with _translated():
            raw = self.objects.get(key)
        return parse(raw, f"{self.root}/{key}")

    def scan(self) -> tuple[list[BackupManifest], list[Damaged]]:
        good: list[BackupManifest] = []
        damaged: list[Damaged] = []
        for name, objects in self._groups().items():
            if name.startswith(".") or not any(o.key == f"{name}/{MANIFEST_FILE}" for o in objects):
                continue  # no manifest: not published (an interrupted run's leftover, removed by the next writer)
            try:
                manifest = self._manifest(name)
            except NotFound:
                continue  # deleted since the listing
            except Corrupt as exc:
                damaged.append(Damaged(name, exc.message))
                continue
            if manifest.id != name:
                damaged.append(Damaged(name, f"{self.root}/{name}: the manifest says id {manifest.id}"))
                continue
            good.append(manifest)
        good.sort(key=lambda m: (m.created_at_epoch, m.end_lsn, m.id))
        return good, damaged

    def get(self, backup_id: str, database: str | None = None) -> BackupManifest:
        if backup_id == "latest":
            return super().get(backup_id, database)
        if backup_id.startswith(".") or "/" in backup_id or not backup_id:
            raise NotFound(f"no backup {backup_id!r} in {self.root}")
        try:
            return self._manifest(backup_id)
        except NotFound:
            raise NotFound(f"no backup {backup_id!r} in {self.root}; `backup_tool --backup-dir {self.root} "
                           "list --database NAME` shows the backups there") from None

    def wal_archive(self, database_id: str) -> Location:
        return BucketLocation(self.objects, database_id)

    def path(self, backup_id: str) -> Path:
        """The backup's files, streamed down from the bucket into the working directory on first use, each
        checked against its manifest entry (size, sha256) as it streams. A backup that is not published gives
        a directory that does not exist."""
        local = self.work / backup_id
        if backup_id in self._downloaded:
            return local
        try:
            manifest = self._manifest(backup_id)
        except NotFound:
            return local
        shutil.rmtree(local, ignore_errors=True)
        local.mkdir(parents=True)
        for entry in manifest.files:
            key = f"{backup_id}/{entry.name}"
            if "/" in entry.name or entry.name in ("", ".", ".."):
                raise Corrupt(f"{self.root}/{backup_id}/{MANIFEST_FILE} lists a file named {entry.name!r}; "
                              "this backup is damaged")
            sha, size = hashlib.sha256(), 0
            try:
                with _translated(), open(local / entry.name, "wb") as f:
                    for piece in self.objects.get_stream(key):
                        sha.update(piece)
                        size += len(piece)
                        f.write(piece)
            except NotFound:
                raise Corrupt(f"{self.root}/{key} is missing (the manifest lists it; or a cleanup deleted the "
                              "backup meanwhile); this backup is damaged") from None
            if size != entry.size or sha.hexdigest() != entry.sha256:
                raise Corrupt(f"{self.root}/{key}: size or sha256 mismatch ({size} bytes, the manifest says "
                              f"{entry.size}; the object was modified or damaged); this backup is damaged")
        self._downloaded.add(backup_id)
        return local

    # ---- writing (under the lock) -------------------------------------------------------------------------

    def staging(self, backup_id: str) -> Path:
        """A local directory the backup is built in; publish() uploads it."""
        path = self.work / f"{TMP_PREFIX}{backup_id}"
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        return path

    def publish(self, staging: Path, manifest: BackupManifest) -> Path:
        sealed = manifest.sealed(self.key)
        prefix = f"{sealed.id}/"
        uploaded: list[str] = []
        with _translated():
            if self.objects.list(prefix):
                raise BackupError(f"backup {sealed.id} already exists in {self.root}")
            try:
                for path in sorted(staging.iterdir()):
                    if path.name == MANIFEST_FILE or not path.is_file():
                        continue
                    self._still_locked()
                    uploaded.append(prefix + path.name)
                    self.objects.put_file(prefix + path.name, path)
                self._still_locked()
                # Last, and only if absent: from here the backup is listed.
                self.objects.put_if_absent(prefix + MANIFEST_FILE, sealed.to_json())
            except BaseException:
                with contextlib.suppress(ObjectStoreError):
                    self.objects.delete(uploaded)  # else the next writer removes them
                raise
        shutil.rmtree(staging, ignore_errors=True)
        return self.work / sealed.id

    def delete(self, backup_id: str) -> None:
        self._still_locked()
        with _translated():
            keys = [o.key for o in self.objects.list(f"{backup_id}/")]
            manifest = f"{backup_id}/{MANIFEST_FILE}"
            self.objects.delete([manifest])  # from here the backup is gone for every reader
            self.objects.delete([k for k in keys if k != manifest])
        self._downloaded.discard(backup_id)

    def remove_leftovers(self) -> list[str]:
        """Backups without a manifest (a run killed mid-upload, or mid-delete), under the writers' lock."""
        removed = []
        for name, objects in self._groups().items():
            leftover = name.startswith((TMP_PREFIX, DELETING_PREFIX)) or (
                BACKUP_ID.match(name) is not None and not any(o.key == f"{name}/{MANIFEST_FILE}" for o in objects))
            if not leftover:
                continue
            try:
                with _translated():
                    self.objects.delete([o.key for o in objects])
            except StoreUnavailable as exc:
                log.warning("could not remove %s/%s, left by an interrupted run (%s)", self.root, name, exc.message)
                continue
            removed.append(name)
        if removed:
            log.info("removed leftovers of interrupted runs: %s", ", ".join(sorted(removed)))
        return removed


def open_store(location: str, key: BackupKey | None = None, allow_unkeyed: bool = False,
               work_dir: str | Path | None = None) -> BackupStore:
    """The backup store at `location`: a directory, or an object store URL (s3://bucket/prefix)."""
    if is_object_url(location):
        return ObjectBackupStore(location, key, allow_unkeyed, work_dir=work_dir)
    return BackupStore(location, key, allow_unkeyed)

