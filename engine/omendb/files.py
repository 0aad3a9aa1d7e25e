"""The engine's files: where each one lives, what it is called, and how it is replaced without a torn state.

Every name and path of a database's on-disk layout is decided here, and the few file operations that keep
it crash-safe (an fsynced write, an atomic replace, a directory lock) are done here; the engine, the backup
tool and a replica's re-seed go through this module instead of building paths themselves. What goes
*inside* a checkpoint or a WAL segment is ``checkpoint.py``'s and ``wal.py``'s business.

Data directory (``[database] data_dir``)::

    MANIFEST           the current checkpoint, the database's identity and WAL location (JSON with a crc32);
                       replaced atomically, it is the commit point of checkpoints, restores and re-seeds
    base-<lsn>.odb     checkpoint files; only the one the MANIFEST names is kept
    WAL_HEAD           identity and first LSN of the newest WAL segment (see wal_chain)
    LOCK               flock held by the one process that has the database open (its pid inside)
    RESTORED_FROM      which backup and LSN a restore brought in
    <name>.tmp         a file being replaced; left only by a crash, removed when the database opens
    restore-staging/, restore-previous/   a backup_tool restore in progress (backup/restore.py)
    reseed-staging/    a replica's re-seed in progress (server/replica.py)

WAL directory (``[wal] dir``; by default see ``default_wal_dir``)::

    <first-lsn>.wal    segments, 20 digits, oldest first
    ARCHIVED           LSN up to which backups hold the WAL
    LOCK               as in the data directory, when the WAL has a directory of its own
    gap-<time>/        segments set aside by ``[wal] accept_gap``
    .space-probe       scratch file probing whether a full WAL volume has room again

Both directories may hold ``.restore-saved/``: the previous data an operator restore Job keeps until the
restored database is verified. The engine and backup_tool never move or delete it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omendb.errors import CorruptionError

# ---- names --------------------------------------------------------------------------------------------

MANIFEST = "MANIFEST"
MANIFEST_VERSION = 2  # 2 adds database_id, wal_dir and checksum; version 1 (previous release) is upgraded
WAL_HEAD = "WAL_HEAD"
LOCK = "LOCK"
ARCHIVED = "ARCHIVED"
RESTORED_FROM = "RESTORED_FROM"
SPACE_PROBE = ".space-probe"
TMP_SUFFIX = ".tmp"
BASE_PREFIX, BASE_SUFFIX = "base-", ".odb"
SEGMENT_SUFFIX = ".wal"
GAP_PREFIX = "gap-"
RESTORE_STAGING = "restore-staging"
RESTORE_PREVIOUS = "restore-previous"
RESTORE_MOVED_OUT = ".moved-out"  # in restore-previous/: every previous file is out; names what moves in
RESTORE_MARKER = MANIFEST + ".restore"  # the poisoned MANIFEST while it is being written
RESEED_STAGING = "reseed-staging"
# Where the operator's restore Jobs keep the previous data until a restore is verified (docs/operations/
# backup-and-restore.md): never moved or deleted by a restore.
SET_ASIDE = ".restore-saved"
# The guide's layout: one directory (/var/lib/omendb) holding the data and WAL directories side by side.
GUIDE_DATA, GUIDE_WAL = "data", "wal"
RESTORE_REMEDY = "restore the data directory from a backup (backup_tool restore --backup-id latest --force)"


def default_wal_dir(data_dir: Path) -> Path:
    """``<parent>/wal`` for a data directory named ``data`` (the guide's layout), else ``<data_dir>-wal``:
    a function of the data directory's own name, so sibling databases never share a WAL directory."""
    data_dir = Path(os.path.abspath(data_dir))
    if data_dir.name == GUIDE_DATA:
        return data_dir.parent / GUIDE_WAL
    return data_dir.parent / f"{data_dir.name}-wal"


def legacy_wal_dir(data_dir: Path) -> Path:
    """Where the previous release put every database's WAL: ``<data_dir>/../wal`` (see locate_wal_dir)."""
    return Path(os.path.abspath(data_dir)).parent / GUIDE_WAL


def guide_layout(root: Path) -> tuple[Path, Path]:
    """(data directory, WAL directory) of the guide's layout under `root`."""
    return root / GUIDE_DATA, default_wal_dir(root / GUIDE_DATA)


def base_name(lsn: int) -> str:
    """The checkpoint file holding every record as of `lsn`."""
    return f"{BASE_PREFIX}{lsn:020d}{BASE_SUFFIX}"


def is_base_name(name: str) -> bool:
    return name.startswith(BASE_PREFIX)


def segment_name(first_lsn: int) -> str:
    return f"{first_lsn:020d}{SEGMENT_SUFFIX}"


def segment_lsn(name: str) -> int | None:
    """The first LSN a segment's file name gives, or None for a file that is no segment."""
    stem, suffix = os.path.splitext(name)
    return int(stem) if suffix == SEGMENT_SUFFIX and stem.isdigit() else None


def list_segments(wal_dir: Path) -> list[tuple[int, Path]]:
    """(first LSN, path) of every segment, oldest first."""
    if not wal_dir.exists():
        return []
    out = []
    for path in wal_dir.iterdir():
        lsn = segment_lsn(path.name)
        if lsn is not None:
            out.append((lsn, path))
    return sorted(out)


def tmp_path(path: Path) -> Path:
    """Where `path`'s next content is written before it replaces `path`."""
    return path.with_name(path.name + TMP_SUFFIX)


def is_leftover(name: str, current_base: str | None) -> bool:
    """A data-directory file that only a crash leaves behind: a temporary file, or a checkpoint file the
    MANIFEST no longer names."""
    return name.endswith(TMP_SUFFIX) or (is_base_name(name) and name != current_base)


def gap_dir(wal_dir: Path, at: float | None = None) -> Path:
    """Where [wal] accept_gap sets the segments aside (named after the time, UTC)."""
    return wal_dir / f"{GAP_PREFIX}{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime(at))}"


def looks_like_data_dir(path: Path) -> bool:
    """A directory an engine has used as its data directory (a MANIFEST, a checkpoint file or a LOCK)."""
    return (path / MANIFEST).exists() or any(path.glob(BASE_PREFIX + "*")) or (path / LOCK).exists()


# ---- writing safely -------------------------------------------------------------------------------------


def fsync_dir(path: Path) -> None:
    """Make the directory's entries (a create, rename or unlink in it) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_WRITEBACK: list = []  # [sync_file_range], or [None] where the C library lacks it; looked up once


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Have the kernel start writing `length` bytes of `fd` at `offset` to disk now, without waiting for
    them (Linux ``sync_file_range(SYNC_FILE_RANGE_WRITE)``). A large file written a piece at a time is then
    mostly on disk by the time it is fsynced, so the disk works while the writer still computes instead of
    all of it after the last write. Durability still comes from fsync; a no-op where the call is missing."""
    if not _WRITEBACK:
        import ctypes  # here: most processes never write a large file (3 ms of import)

        call = getattr(ctypes.CDLL(None, use_errno=True), "sync_file_range", None)
        if call is not None:
            call.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
        _WRITEBACK.append(call)
    call = _WRITEBACK[0]
    if call is not None and length > 0:
        call(fd, offset, length, 2)  # SYNC_FILE_RANGE_WRITE; an error only means no head start


@contextlib.contextmanager
def removed_on_failure(tmp: Path) -> Iterator[None]:
    """A temporary file that a failure (a full volume, say) must not leave behind taking space."""
    try:
        yield
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, OSError) and exc.filename is None:  # a failed write or flush names no file
            exc.filename = str(tmp)
        raise


def write_synced(path: Path, data: bytes) -> None:
    """Write `path` and fsync it (not its directory: for files that a later rename or fsync_dir commits)."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def atomic_write(path: Path, data: bytes) -> None:
    """Replace `path` by `data` so that a crash at any point leaves either the old or the new content:
    the temporary file is written and fsynced, renamed over `path`, then the directory is fsynced."""
    tmp = tmp_path(path)
    with removed_on_failure(tmp):
        write_synced(tmp, data)
        os.replace(tmp, path)
    fsync_dir(path.parent)


def move_in(path: Path, directory: Path) -> Path:
    """Rename `path` into `directory` (same volume) durably; returns its new path."""
    target = directory / path.name
    os.replace(path, target)
    fsync_dir(directory)
    return target


class HeldBy(Exception):
    """The directory's LOCK is held by another process (``holder``: its pid as it wrote it, or "unknown")."""

    def __init__(self, directory: Path, holder: str) -> None:
        super().__init__(f"{directory} is locked by process {holder}")
        self.directory, self.holder = directory, holder


def lock_directory(directory: Path) -> int:
    """Take the exclusive flock on `directory`/LOCK (creating both if needed) and write our pid into it;
    returns the descriptor, which holds the lock until it is closed. Raises HeldBy when another process
    has it."""
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / LOCK, os.O_RDWR | os.O_CREAT, 0o640)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise HeldBy(directory, holder) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


# ---- MANIFEST ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Manifest:
    database: str
    checkpoint_lsn: int
    term: int
    base_file: str | None
    records: int
    created_at: float
    model_type: str
    max_error: int
    index_meta: dict[str, float]  # observed errors, depth and training time of the stored model
    format_version: int = MANIFEST_VERSION
    term_history: list[list[int]] = field(default_factory=lambda: [[1, 1]])  # [term, first LSN], ascending
    database_id: str | None = None  # None only in a previous-release MANIFEST, until the engine adopts one
    wal_dir: str | None = None  # absolute; None until the engine has opened a WAL for this database
    # The identity was given when a previous-release database was upgraded: a replica may still exchange it
    # for its primary's in place (every node of a cluster got its own on upgrade).
    identity_from_upgrade: bool = False
    previous_database_id: str | None = None  # set only while segments are being relabelled (see adopt_identity)

    def to_json(self) -> str:
        fields = {**self.__dict__, "format_version": MANIFEST_VERSION}
        return json.dumps({**fields, "checksum": manifest_checksum(fields)}, indent=2, sort_keys=True)


def manifest_checksum(fields: dict[str, Any]) -> str:
    """crc32 of the canonical JSON of every field but the checksum itself."""
    body = {k: v for k, v in fields.items() if k != "checksum"}
    return f"{zlib.crc32(json.dumps(body, sort_keys=True, separators=(',', ':')).encode()):08x}"


def read_manifest(data_dir: Path) -> Manifest | None:
    """The MANIFEST of `data_dir`, None when there is none; damage raises CorruptionError."""
    path = data_dir / MANIFEST
    try:
        raw: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (ValueError, UnicodeDecodeError) as exc:
        raise CorruptionError(f"{path} is not valid JSON ({exc}); {RESTORE_REMEDY}") from None
    version = raw.get("format_version") if isinstance(raw, dict) else None
    if version not in (1, MANIFEST_VERSION):
        raise CorruptionError(f"{path}: format version {version} is not supported (this OmenDB reads 1 and "
                              f"{MANIFEST_VERSION}); run the OmenDB version that wrote it")
    if version == MANIFEST_VERSION and raw.pop("checksum", None) != manifest_checksum(raw):
        raise CorruptionError(f"{path}: checksum mismatch (the file was damaged or edited by hand); "
                              f"{RESTORE_REMEDY}, or put back a copy of this MANIFEST that passes its checksum")
    try:
        return Manifest(**raw)
    except TypeError as exc:
        raise CorruptionError(f"{path} is missing fields ({exc}); {RESTORE_REMEDY}") from None


def write_manifest(data_dir: Path, manifest: Manifest) -> None:
    """Replace the MANIFEST atomically (see atomic_write): the commit point of a checkpoint."""
    atomic_write(data_dir / MANIFEST, manifest.to_json().encode())


def write_staged_manifest(directory: Path, manifest: Manifest) -> Path:
    """A MANIFEST written and fsynced in a staging directory, for a later rename to commit."""
    path = directory / MANIFEST
    write_synced(path, manifest.to_json().encode())
    return path


# ---- WAL_HEAD and ARCHIVED -------------------------------------------------------------------------------


def read_head(data_dir: Path) -> tuple[str, int] | None:
    """(database id, first LSN) of the newest WAL segment as WAL_HEAD records it, or None."""
    try:
        raw = json.loads((data_dir / WAL_HEAD).read_text())
        return str(raw["database_id"]), int(raw["first_lsn"])
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError) as exc:
        raise CorruptionError(f"{data_dir / WAL_HEAD} is damaged ({exc}); restore from a backup (backup_tool "
                              f"restore --backup-id latest --force)") from None


def head_bytes(database_id: str, first_lsn: int) -> bytes:
    return json.dumps({"database_id": database_id, "first_lsn": first_lsn}).encode()


def write_head(data_dir: Path, database_id: str, first_lsn: int) -> None:
    atomic_write(data_dir / WAL_HEAD, head_bytes(database_id, first_lsn))


def drop_head(data_dir: Path) -> None:
    """Forget the newest segment (the WAL is off, set aside or discarded)."""
    (data_dir / WAL_HEAD).unlink(missing_ok=True)


def read_archived(wal_dir: Path) -> int | None:
    """LSN up to which backups have archived the WAL (None until the first backup)."""
    try:
        return int((wal_dir / ARCHIVED).read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def write_archived(wal_dir: Path, lsn: int) -> None:
    atomic_write(wal_dir / ARCHIVED, f"{lsn}\n".encode())


def discard_wal(data_dir: Path, wal_dir: Path) -> None:
    """Delete a database's WAL (a replica re-seeding: its frames are in the new snapshot or not on the
    primary's timeline). WAL_HEAD first, then the newest segments first: a crash in between leaves a WAL
    that is a contiguous prefix, which recovery accepts. ARCHIVED goes too: no backup archived the new WAL."""
    drop_head(data_dir)
    fsync_dir(data_dir)
    for _, segment in reversed(list_segments(wal_dir)):
        segment.unlink()
    (wal_dir / ARCHIVED).unlink(missing_ok=True)
    fsync_dir(wal_dir)
