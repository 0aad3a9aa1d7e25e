"""Taking a backup: full (snapshot + the WAL after it) or incremental (the WAL since the parent's end).

An incremental continues the newest backup of the database when that backup's chain is intact, the
source's history contains it (not restored to an earlier point since, not another database) and the
source still holds every WAL frame since its end; otherwise a full backup is taken with a notice saying
why. Every backup records the record count and a content digest of the state at its end, computed by
streaming the snapshot merged with the WAL after it a piece at a time, never the whole state in memory (for
incrementals from the chain, first checked against the parent's digest, which proves the chain restorable).

A format-2 snapshot (the engine's memory-mappable checkpoint) is stored byte for byte, hashed while it is
copied, and its block checksums are checked in the copy (verbatim.py); an older format-1 snapshot is stored
as before (compressed if the engine did not compress its blocks).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from omendb.backup import columns
from omendb.backup.errors import BackupError, Corrupt, WalGone
from omendb.backup.manifest import (
    FULL,
    INCREMENTAL,
    SNAPSHOT_COLS,
    SNAPSHOT_FILE,
    SNAPSHOT_ZST,
    WAL_FILE,
    BackupManifest,
    FileEntry,
    check_database_name,
    new_id,
)
from omendb.backup.payload import PayloadWriter, State, frame_bytes
from omendb.backup.restore import chain_frames, load_snapshot
from omendb.backup.source import Snapshot, SourceInfo
from omendb.backup.store import BackupStore
from omendb.backup.verbatim import BackgroundSync, copy_file, delta_of, sha256_file, stream_digest, verify_blocks
from omendb.checkpoint import BASE_HEADER, BASE_MAGIC_2, FLAG_COMPRESSED, BaseFile, base_format, open_base, read_base
from omendb.errors import CorruptionError
from omendb.wal import Frame

log = logging.getLogger("omendb.backup")
Progress = Callable[[int], None]


class Source(Protocol):
    description: dict[str, Any]

    def info(self) -> SourceInfo: ...
    def snapshot(self, sink: Callable[[bytes], None]) -> Snapshot: ...
    def frames_after(self, lsn: int) -> list[Frame]: ...
    def mark_archived(self, lsn: int) -> None: ...


def _parent_chain(store: BackupStore, database: str, info: SourceInfo
                  ) -> tuple[list[BackupManifest] | None, str | None]:
    existing = store.backups(database)
    if not existing:
        return None, f"no earlier backup of database {database!r} in {store.root}"
    parent = existing[-1]
    try:
        chain = store.chain(parent)
    except Corrupt as exc:
        return None, f"the latest backup {parent.id} cannot be continued ({exc.message})"
    if info.engine_database and parent.engine_database and info.engine_database != parent.engine_database:
        return None, (f"the source is database {info.engine_database!r} but {parent.id} was taken from "
                      f"{parent.engine_database!r}")
    parent_id = parent.source.get("database_id")
    if info.database_id and parent_id and info.database_id != parent_id:
        return None, (f"the source is database {info.database_id} but {parent.id} was taken from database "
                      f"{parent_id}")
    restored = info.restored_from
    if restored and float(restored.get("restored_at", 0)) > parent.created_at_epoch \
            and int(restored.get("lsn", 0)) < parent.end_lsn:
        return None, (f"the source was restored to LSN {restored.get('lsn')} after {parent.id} (which ends "
                      f"at LSN {parent.end_lsn}) was taken, so its history diverged from that backup")
    if info.lsn < parent.end_lsn:
        return None, (f"the source is at LSN {info.lsn}, before the end of {parent.id} (LSN "
                      f"{parent.end_lsn}): it is not the database that backup continues")
    return chain, None


def take_backup(store: BackupStore, source: Source, database: str, kind: str, *, lock_timeout: float = 0.0,
                progress: Progress | None = None, level: int = 3) -> BackupManifest:
    check_database_name(database)
    with store.locked(True, lock_timeout):
        store.remove_leftovers()
        info = source.info()
        chain: list[BackupManifest] | None = None
        frames: list[Frame] = []
        held: list[Frame] = []  # an incremental: what the chain already holds after its snapshot
        base: State | None = None  # the chain's snapshot (a full backup: this one's), never modified
        if kind == INCREMENTAL:
            chain, why = _parent_chain(store, database, info)
            if chain is not None:
                try:
                    frames = source.frames_after(chain[-1].end_lsn)
                    base = load_snapshot(store, chain[0])
                    held = chain_frames(store, chain)
                    _check_digest(base, held, chain[-1])
                except WalGone as exc:
                    chain, why = None, (f"{exc.message} (released before a backup archived it, after [wal] "
                                        f"max_retained_mb was exceeded or by another backup series)")
                except Corrupt as exc:
                    chain, why = None, f"the chain of the latest backup is damaged ({exc.message})"
            if chain is None:
                log.warning("NOTICE: taking a full backup instead of an incremental one: %s", why)
                held = []
        notice = None if kind == FULL or chain is not None else f"full backup instead of incremental: {why}"
        when = datetime.now(UTC)
        backup_id = new_id(database, FULL if chain is None else INCREMENTAL, when)
        while store.path(backup_id).exists():
            time.sleep(0.002)
            when = datetime.now(UTC)
            backup_id = new_id(database, FULL if chain is None else INCREMENTAL, when)
        staging = store.staging(backup_id)
        try:
            files: list[FileEntry] = []
            sync: BackgroundSync | None = None
            index: dict[str, Any] = {"model_type": info.model_type, "max_error": info.max_error}
            if chain is None:
                snapshot, base, frames, entry, sync, (records, digest) = _take_snapshot(store, staging, source,
                                                                                        progress, level)
                files.append(entry)
                start_lsn, start_term, earliest = snapshot.lsn, snapshot.term, snapshot.created_us
                if snapshot.index is not None:
                    index["checkpoint"] = snapshot.index  # how a verbatim restore describes the snapshot
            else:
                assert base is not None
                start_lsn = chain[-1].end_lsn
                start_term = max([base.term, *(f.term for f in held)])
                earliest = chain[0].earliest_restore_us
            writer = PayloadWriter(staging / WAL_FILE, level)
            writer.on_progress = progress
            for frame in frames:
                writer.write(frame_bytes(frame))
            files.append(writer.close())
            every = held + frames
            if chain is not None:
                records, digest = stream_digest(base.keys, base.values, base.lsns, delta_of(every))
            manifest = BackupManifest(
                id=backup_id, type=FULL if chain is None else INCREMENTAL,
                parent=None if chain is None else chain[-1].id, database=database, start_lsn=start_lsn,
                end_lsn=every[-1].lsn if every else base.lsn, start_term=start_term,
                term=max([base.term, *(f.term for f in every)]),
                created_at=when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                created_at_epoch=when.timestamp(),
                first_commit_us=frames[0].commit_us if frames else None,
                last_commit_us=frames[-1].commit_us if frames else None,
                earliest_restore_us=earliest, records=records, content_sha256=digest,
                files=files, source=source.description, engine_database=info.engine_database,
                index=index, notice=notice,
                parent_mac=None if chain is None or store.key is None else chain[-1].mac)
            if sync is not None:
                sync.wait()
            store.publish(staging, manifest)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        try:
            source.mark_archived(manifest.end_lsn)
        except (BackupError, OSError) as exc:  # the backup is complete; only WAL retention is affected
            log.warning("backup %s is complete, but recording that backups hold the WAL through LSN %d "
                        "failed (%s): the engine may release WAL the next incremental needs, which then "
                        "becomes a full backup", manifest.id, manifest.end_lsn, exc)
        return manifest.sealed(store.key)


def _check_digest(base: State, held: list[Frame], parent: BackupManifest) -> None:
    """The chain rebuilt (streamed) to the parent's end matches the parent's record count and digest."""
    end = held[-1].lsn if held else base.lsn
    if end != parent.end_lsn:
        raise Corrupt(f"the chain of backup {parent.id} ends at LSN {end}, its manifest says {parent.end_lsn}")
    records, digest = stream_digest(base.keys, base.values, base.lsns, delta_of(held))
    if (records, digest) != (parent.records, parent.content_sha256):
        raise Corrupt(f"the state rebuilt from backup {parent.id} ({records} records) does not match what was "
                      f"backed up ({parent.records} records, content sha256 {parent.content_sha256[:12]}...)")


def _checked_snapshot(path: Path, snapshot: Snapshot, mapped: BaseFile | None = None
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """(keys, values, LSNs, LSN) of a checkpoint, every block checksum checked: a format-2 file is mapped
    (nothing decoded; `mapped` when the caller mapped it already), an older one read."""
    try:
        if mapped is None and base_format(path) == 2:
            mapped = open_base(path)
        if mapped is not None:
            verify_blocks(mapped)
            keys, values, lsns, lsn = mapped.keys, mapped.values, mapped.lsns, mapped.lsn
        else:
            lsn, keys, values, lsns, _ = read_base(path)
    except (CorruptionError, Corrupt) as exc:
        raise Corrupt(f"the source's checkpoint is damaged, refusing to back it up: {exc.message}") from None
    if lsn != snapshot.lsn:
        raise Corrupt(f"the source's checkpoint holds LSN {lsn} but was announced as LSN {snapshot.lsn}")
    return keys, values, lsns, lsn


class _Packing:
    """A local source's checkpoint being stored: a format-2 one packed (columns.pack) on another thread,
    mapped here meanwhile so that its checksums and the digest are computed from the same file on this
    thread; an older one (or an empty database's) copied as is."""

    def __init__(self, staging: Path, progress: Progress | None) -> None:
        self.raw_path, self.packed_path = staging / SNAPSHOT_FILE, staging / SNAPSHOT_COLS
        self.progress = progress
        self.mapped: BaseFile | None = None
        self.packed: Future[tuple[int, str, int] | None] | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="omendb-pack")

    def take(self, f: Any) -> None:
        fd = f.fileno()
        if base_format_of(fd) == 2:
            try:
                self.mapped = open_base(Path(f.name), fd=fd)  # the mapping outlives the file's descriptor
            except CorruptionError as exc:
                raise Corrupt(f"the source's checkpoint is damaged, refusing to back it up: {exc.message}") from None
            dup = os.dup(fd)  # the packing thread's own descriptor: `f` is closed when this returns

            def run() -> tuple[int, str, int] | None:
                try:
                    return columns.pack(dup, self.packed_path, self.progress)
                finally:
                    os.close(dup)

            self.packed = self._pool.submit(run)
        elif Path(f.name) != self.raw_path:  # (a streamed snapshot is already there)
            copy_file(f, self.raw_path)

    def empty(self, data: bytes) -> None:
        self.raw_path.write_bytes(data)

    def wait(self) -> FileEntry | None:
        """The packed file's entry (None: copied as is to raw_path); raises what packing raised."""
        try:
            done = self.packed.result() if self.packed is not None else None
        finally:
            self._pool.shutdown()
        if done is None:
            return None
        size, sha, raw_size = done
        return FileEntry(SNAPSHOT_COLS, size, sha, raw_size, columns.CODEC)


def base_format_of(fd: int) -> int:
    """2 for a format-2 checkpoint open at `fd`, else 1 (format 1 or not a checkpoint: read_base says which)."""
    head = os.pread(fd, BASE_HEADER.size, 0)
    return 2 if len(head) == BASE_HEADER.size and BASE_HEADER.unpack(head)[:2] == (BASE_MAGIC_2, 2) else 1


def _streamed(source: Source, raw_path: Path, progress: Progress | None
              ) -> Callable[[Callable[[Any], None], Callable[[bytes], None]], Snapshot]:
    """For a source that streams its snapshot (a running server): `snapshot_with` that writes the stream
    into `raw_path`, then hands that file over like a local checkpoint."""
    def use(take: Callable[[Any], None], _empty: Callable[[bytes], None]) -> Snapshot:
        with open(raw_path, "xb") as out:
            def sink(chunk: bytes) -> None:
                out.write(chunk)
                if progress is not None:
                    progress(len(chunk))
            snapshot = source.snapshot(sink)
        with open(raw_path, "rb") as f:
            take(f)
        return snapshot
    return use


def _take_snapshot(store: BackupStore, staging: Path, source: Source, progress: Progress | None, level: int
                   ) -> tuple[Snapshot, State, list[Frame], FileEntry, BackgroundSync | None, tuple[int, str]]:
    """The source's checkpoint in `staging` (checked), the WAL after it, the stored file's fsync if it is
    still running (wait for it before publishing), and the record count and digest at the end of that WAL."""
    raw_path = staging / SNAPSHOT_FILE
    for _ in range(5):
        for leftover in (raw_path, staging / SNAPSHOT_ZST, staging / SNAPSHOT_COLS):
            leftover.unlink(missing_ok=True)
        sync: BackgroundSync | None = None
        hashed: Future[tuple[int, str]] | None = None
        use = getattr(source, "snapshot_with", None) or _streamed(source, raw_path, progress)
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="omendb-sha256") as pool:
            # A file (local, or the stream written out): packed on another thread, checked and digested here
            # meanwhile.
            packing = _Packing(staging, progress)
            try:
                snapshot = use(packing.take, packing.empty)
            except BaseException:
                with contextlib.suppress(BaseException):
                    packing.wait()
                raise
            mapped = packing.mapped
            if packing.packed is None:  # not format 2: stored as is, hashed from the copy meanwhile
                packing.wait()
                sync = BackgroundSync(raw_path)
                hashed = pool.submit(sha256_file, raw_path)
            try:
                frames = source.frames_after(snapshot.lsn)
            except WalGone:
                log.info("a checkpoint released the WAL right after the snapshot at LSN %d; taking it again",
                         snapshot.lsn)
                with contextlib.suppress(BaseException):
                    packing.wait()
                if sync is not None:
                    sync.wait()
                continue
            try:
                keys, values, lsns, lsn = _checked_snapshot(raw_path, snapshot, mapped)
                end = stream_digest(keys, values, lsns, delta_of(frames))  # while the copy is packed or hashed
            except BaseException:
                with contextlib.suppress(BaseException):
                    packing.wait()
                raise
            if packing.packed is not None:
                packed = packing.wait()
                assert packed is not None
                entry = packed
                sync = BackgroundSync(packing.packed_path)
                raw_path.unlink(missing_ok=True)  # a streamed snapshot, now packed
            elif hashed is not None:
                size, sha = hashed.result()
                entry = FileEntry(SNAPSHOT_FILE, size, sha, size, "none")
                if progress is not None:
                    progress(size)
        if entry.name == SNAPSHOT_FILE:
            with open(raw_path, "rb") as f:
                flags = BASE_HEADER.unpack(f.read(BASE_HEADER.size))[2]
            if base_format(raw_path) == 1 and not flags & FLAG_COMPRESSED:
                # A format-1 checkpoint written without compression ([storage] enable_compression = false).
                if sync is not None:
                    sync.wait()
                    sync = None
                packed_zst = PayloadWriter(staging / SNAPSHOT_ZST, level)
                with open(raw_path, "rb") as f:
                    while chunk := f.read(1 << 20):
                        packed_zst.write(chunk)
                entry = packed_zst.close()
                raw_path.unlink()
        return snapshot, State(keys, values, lsns, lsn, snapshot.term), frames, entry, sync, end
    raise BackupError("the WAL after the snapshot kept being released by checkpoints; retry the backup when "
                      "the database is less busy, or raise [wal] max_retained_mb")
