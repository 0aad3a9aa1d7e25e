"""Restore: rebuild the state at a backup, LSN or time from a chain, and swap it into a data directory.

When the chain's snapshot is a format-2 checkpoint stored as is (verbatim.py), it is copied back byte for
byte (its sha256 checked as it passes) and the chain's WAL frames up to the target become one WAL segment
after it, which the engine replays when it opens (``WAL_HEAD`` names that segment, so an engine that looks
for the WAL elsewhere refuses to start instead of missing those writes). Otherwise (older backups) the state
is rebuilt in memory (the snapshot plus the frames up to the target) and written as a fresh checkpoint at the
target LSN with an empty WAL. Either way the database continues the LSN sequence on a new term.

The swap into the data directory happens under the engine's ``LOCK`` (a running server refuses it) and
is crash-safe: ``MANIFEST`` is first replaced by a marker that no engine opens, the previous files are
moved into ``restore-previous/`` (in the data and WAL directories, so no copy crosses volumes), the new
checkpoint is moved in, and renaming the new ``MANIFEST`` over the marker commits. Until that rename the
previous data is intact; an interrupted restore is rolled back by the next ``restore`` or by
``rollback-restore``. After the commit the previous files are deleted.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from omendb import wal_archive
from omendb.backup.columns import CODEC, unpack
from omendb.backup.errors import BackupError, Busy, Corrupt, NotFound, Refused, StoreUnavailable
from omendb.backup.layout import Layout
from omendb.backup.manifest import FULL, WAL_FILE, BackupManifest, format_us
from omendb.backup.payload import State, check_contiguous, check_file, decode_frames, frame_bytes, read_checked
from omendb.backup.source import RESTORE_POISON
from omendb.backup.store import BackupStore
from omendb.checkpoint import BaseFile, base_format, open_base, read_base, write_base
from omendb.errors import CorruptionError
from omendb.files import (
    LOCK,
    MANIFEST,
    RESTORE_MARKER,
    RESTORE_MOVED_OUT,
    RESTORE_PREVIOUS,
    RESTORE_STAGING,
    RESTORED_FROM,
    SET_ASIDE,
    WAL_HEAD,
    HeldBy,
    Manifest,
    base_name,
    fsync_dir,
    head_bytes,
    lock_directory,
    write_staged_manifest,
    write_synced,
)
from omendb.runs import Run, merged_count
from omendb.wal import Frame, pack_segment_header, segment_name

log = logging.getLogger("omendb.backup")

WAL_MARK = "wal/"  # in RESTORE_MOVED_OUT: a name in the WAL directory (the others are in the data directory)
# Never moved or deleted by a restore: the operator's restore Jobs keep the previous data there until a
# restore is verified (docs/operations/backup-and-restore.md). The name is omendb.files.SET_ASIDE.
KEEP_IN_PLACE = {LOCK, MANIFEST, RESTORE_PREVIOUS, RESTORE_STAGING, SET_ASIDE}
Progress = Callable[[int], None]


@dataclass(frozen=True)
class Target:
    lsn: int | None = None
    time_us: int | None = None

    def describe(self) -> str:
        if self.lsn is not None:
            return f"LSN {self.lsn}"
        if self.time_us is not None:
            return f"time {format_us(self.time_us)}"
        return "the end of the backup"


# ---- choosing and reading a chain ---------------------------------------------------------------------


def covers(chain: list[BackupManifest], target: Target, archive_end: int = 0) -> bool:
    """Whether the chain (continued by archived WAL up to `archive_end`) can restore to the target."""
    if target.lsn is not None:
        return chain[0].start_lsn <= target.lsn <= max(chain[-1].end_lsn, archive_end)
    if target.time_us is not None:
        return chain[0].earliest_restore_us <= target.time_us
    return True


def choose_chain(store: BackupStore, backup_id: str, database: str | None, target: Target,
                 use_wal_archive: bool = True) -> list[BackupManifest]:
    """The chain to restore. With ``latest`` and a target, the newest backup whose chain covers it (continued
    by the WAL archive beside the backups unless `use_wal_archive` is false)."""

    ends: dict[str, int] = {}  # one listing of the archive per database

    def archive_end(manifest: BackupManifest) -> int:
        database_id = str(manifest.source.get("database_id") or "")
        if use_wal_archive and database_id not in ends:
            ends[database_id] = archived_through(store, manifest)
        return ends.get(database_id, 0)

    if backup_id != "latest" or (target.lsn is None and target.time_us is None):
        chain = store.chain(store.get(backup_id, database))
        if not covers(chain, target, archive_end(chain[-1])):
            raise Refused(f"backup {chain[-1].id} cannot restore to {target.describe()}: its chain covers "
                          f"LSN {chain[0].start_lsn}..{chain[-1].end_lsn}, times from "
                          f"{format_us(chain[0].earliest_restore_us)} to "
                          f"{format_us(chain[-1].last_commit_us)}; pick another backup (backup_tool list)")
        return chain
    good, damaged = store.scan()
    candidates = [m for m in good if database is None or m.database == database]
    # An unreadable backup newer than every readable one might be the one that covers the target.
    store.refuse_damaged_newer(damaged, candidates[-1] if candidates else None, database)
    if not candidates:
        raise NotFound(f"no backups{' for database ' + repr(database) if database else ''} in {store.root}")
    problems = []
    for manifest in reversed(candidates):
        try:
            chain = store.chain(manifest)
        except Corrupt as exc:
            if _might_cover(manifest, target):
                # Never fall back silently to an older backup than one that should have been used.
                raise Corrupt(f"backup {manifest.id}, the newest one that may cover {target.describe()}, "
                              f"cannot be used: {exc.message}. Refusing to fall back to an older backup "
                              f"silently: check it with `backup_tool --backup-dir {store.root} verify "
                              f"--backup-id {manifest.id}`, or name an older backup with --backup-id ID "
                              "(backup_tool list)") from None
            problems.append(exc.message)
            continue
        if covers(chain, target, archive_end(manifest)):
            newer = candidates[-1] is not manifest
            last = manifest.last_commit_us or int(manifest.created_at_epoch * 1_000_000)
            if target.time_us is not None and newer and target.time_us > last and \
                    archive_end(manifest) <= manifest.end_lsn:
                log.warning("no backup holds the writes between %s (the end of %s) and %s; restoring to the "
                            "end of %s, the latest point before the requested time that backups hold",
                            format_us(last), manifest.id, format_us(target.time_us), manifest.id)
            return chain
    detail = f" (skipped broken chains: {'; '.join(problems)})" if problems else ""
    raise Refused(f"no backup in {store.root} covers {target.describe()}{detail}; `backup_tool list` shows "
                  f"each backup's LSN range and times")


def archived_through(store: BackupStore, manifest: BackupManifest) -> int:
    """The last LSN the WAL archive beside the backups holds for the database of `manifest` (0: none)."""
    database_id = manifest.source.get("database_id")
    if not database_id:
        return 0
    location = store.wal_archive(str(database_id))
    try:
        return max((p.last for p in wal_archive.pieces(location)), default=0)
    except wal_archive.ArchiveError as exc:
        raise StoreUnavailable(f"cannot list the WAL archive {location.where}: {exc.message}; restore with "
                          "--without-wal-archive to stop at the end of the backups") from None


def restore_frames(store: BackupStore, chain: list[BackupManifest], target: Target = Target(),
                   progress: Progress | None = None, use_wal_archive: bool = True
                   ) -> tuple[list[Frame], wal_archive.Replay | None]:
    """The chain's WAL frames up to the target, continued by the WAL archive beside the backups when the
    chain ends before the target (every restore without a target: the newest archived write is the end)."""
    frames = chain_frames(store, chain, target, progress)
    last = chain[-1]
    end = frames[-1].lsn if frames else chain[0].start_lsn
    database_id = last.source.get("database_id")
    if not use_wal_archive or end != last.end_lsn or (target.lsn is not None and end >= target.lsn) or \
            not database_id:
        return frames, None
    term = frames[-1].term if frames else chain[0].start_term
    location = store.wal_archive(str(database_id))
    try:
        replay = wal_archive.replay_after(location, str(database_id), end, term,
                                          store.key.secret if store.key is not None else None,
                                          until_lsn=target.lsn, until_us=target.time_us)
    except wal_archive.ArchiveError as exc:
        raise StoreUnavailable(f"cannot read the WAL archive {location.where}: {exc.message}; restore with "
                          "--without-wal-archive to stop at the end of the backups") from None
    if replay.stop:
        log.warning("%s; the restore ends at LSN %d", replay.stop, replay.last_lsn or end)
    if target.lsn is not None and (replay.last_lsn or end) < target.lsn:
        raise Refused(f"backup {last.id} and the WAL archive cannot restore to {target.describe()}: "
                      f"{replay.stop or 'the archive ends at LSN ' + str(replay.last_lsn or end)}")
    if progress and replay.frames:
        progress(sum(f.payload_bytes for f in replay.frames))
    return frames + replay.frames, replay


def _might_cover(manifest: BackupManifest, target: Target) -> bool:
    """Whether the chain of `manifest` could cover the target, from its own manifest alone (its chain
    cannot be read): it holds every write up to end_lsn since earliest_restore_us (its chain's start)."""
    if target.lsn is not None:
        return target.lsn <= manifest.end_lsn and not (manifest.type == FULL and target.lsn < manifest.start_lsn)
    if target.time_us is not None:
        return manifest.earliest_restore_us <= target.time_us
    return True


def load_snapshot(store: BackupStore, manifest: BackupManifest, progress: Progress | None = None) -> State:
    entry = manifest.snapshot
    if entry is None:
        raise Corrupt(f"full backup {manifest.id} lists no snapshot file; this backup is damaged")
    path = store.path(manifest.id) / entry.name
    with tempfile.TemporaryDirectory(prefix="omendb-restore-") as tmp:
        if entry.codec == "none":  # the checkpoint file as is: check its sha256, then the engine reads it
            check_file(path, entry)
            raw_path = path
            if progress:
                progress(entry.size)
        elif entry.codec == CODEC:  # packed columns: the sha256 of what is unpacked, then the engine reads it
            check_file(path, entry)
            raw_path = Path(tmp) / "base.odb"
            unpack(path, raw_path, progress)
        else:
            raw_path = Path(tmp) / "base.odb"
            with open(raw_path, "wb") as out:
                for chunk in read_checked(path, entry):
                    out.write(chunk)
                    if progress:
                        progress(len(chunk))
        try:
            lsn, keys, values, lsns, _ = read_base(raw_path)
        except CorruptionError as exc:
            raise Corrupt(f"{path}: the snapshot inside is damaged ({exc.message})") from None
    if lsn != manifest.start_lsn:
        raise Corrupt(f"{path} holds LSN {lsn}, the manifest says {manifest.start_lsn}; this backup is "
                      "damaged")
    return State(keys, values, lsns, lsn, manifest.start_term)


def load_frames(store: BackupStore, manifest: BackupManifest,
                progress: Progress | None = None) -> list[Frame]:
    entry = manifest.file(WAL_FILE)
    if entry is None:
        raise Corrupt(f"backup {manifest.id} lists no {WAL_FILE}; this backup is damaged")
    path = store.path(manifest.id) / WAL_FILE
    parts = []
    for chunk in read_checked(path, entry):
        parts.append(chunk)
        if progress:
            progress(len(chunk))
    frames = decode_frames(b"".join(parts), str(path))
    check_contiguous(frames, manifest.start_lsn, str(path))
    last = frames[-1].lsn if frames else manifest.start_lsn
    if last != manifest.end_lsn:
        raise Corrupt(f"{path} ends at LSN {last}, the manifest says {manifest.end_lsn}; this backup is "
                      "damaged")
    return frames


def chain_frames(store: BackupStore, chain: list[BackupManifest], target: Target = Target(),
                 progress: Progress | None = None) -> list[Frame]:
    """The WAL frames a chain holds after its full backup's snapshot, up to the target; every checksum and
    the LSN continuity are checked."""
    held: list[Frame] = []
    for manifest in chain:
        frames = load_frames(store, manifest, progress)
        if target.lsn is not None:
            frames = [f for f in frames if f.lsn <= target.lsn]
        if target.time_us is not None:
            keep = 0
            while keep < len(frames) and frames[keep].commit_us <= target.time_us:
                keep += 1
            frames = frames[:keep]
        held.extend(frames)
        if target.lsn is not None and (held[-1].lsn if held else chain[0].start_lsn) >= target.lsn:
            break
        if target.time_us is not None and manifest.last_commit_us is not None and \
                manifest.last_commit_us > target.time_us:
            break
    return held


def materialize(store: BackupStore, chain: list[BackupManifest], target: Target = Target(),
                progress: Progress | None = None, frames: list[Frame] | None = None) -> State:
    """The database state at the target, from the chain's snapshot and WAL (or `frames`, the chain's WAL
    continued by the archive); every checksum is checked."""
    full = chain[0]
    if full.type != FULL:
        raise Corrupt(f"the chain of {chain[-1].id} does not start with a full backup")
    state = load_snapshot(store, full, progress)
    state.apply(chain_frames(store, chain, target, progress) if frames is None else frames)
    return state


def check_against_manifest(state: State, manifest: BackupManifest) -> None:
    if state.lsn != manifest.end_lsn:
        return
    if len(state.keys) != manifest.records or state.digest() != manifest.content_sha256:
        raise Corrupt(f"the state rebuilt from backup {manifest.id} ({len(state.keys)} records) does not "
                      f"match what was backed up ({manifest.records} records, content sha256 "
                      f"{manifest.content_sha256[:12]}...); this backup chain is damaged")


# ---- writing a data directory ------------------------------------------------------------------------


def write_checkpoint(state: State, directory: Path, database: str, index: dict[str, object],
                     database_id: str | None = None, new_term: bool = False) -> list[Path]:
    """A checkpoint of `state` (base file + MANIFEST) in `directory`; returns the files written.

    `database_id`: the identity the database keeps (None: the engine gives it one when it opens it).
    `new_term`: continue on a term of its own after `state.lsn`, as a restore does: the backed-up database
    may have gone on past that LSN (or a copy restored elsewhere may), and one (LSN, term) must never name
    two different writes of one database."""
    # Imported here, once per restore that rebuilds the checkpoint: training compiles (numba), and importing
    # numba costs the other restores (a format-2 checkpoint put back as is) 0.4-0.8 s of start-up.
    from omendb import rmi

    model_type = str(index.get("model_type", "recursive"))
    max_error = int(str(index.get("max_error", 50)))
    learned = rmi.train(state.keys, model_type, max_error)
    name = base_name(state.lsn)
    write_base(directory / name, state.lsn, state.keys, state.values, state.lsns, learned, compress=True,
               block_size=100_000)
    term, history = state.term, [[1, 1]]
    if new_term:
        term += 1
        history.append([term, state.lsn + 1])
    manifest = Manifest(database=database, checkpoint_lsn=state.lsn, term=term, base_file=name,
                        records=len(state.keys), created_at=time.time(), model_type=learned.model_type,
                        max_error=learned.max_error, database_id=database_id, term_history=history,
                        index_meta={"observed_max_error": learned.observed_max_error,
                                    "observed_mean_error": learned.observed_mean_error,
                                    "depth": learned.depth,
                                    "train_seconds": learned.train_seconds})
    return [directory / name, write_staged_manifest(directory, manifest)]


@contextlib.contextmanager
def data_dir_lock(layout: Layout) -> Iterator[None]:
    """The engine's own lock: a running server (or another restore) holds it."""
    try:
        fd = lock_directory(layout.data_dir)
    except HeldBy as exc:
        raise Busy(f"data directory {layout.data_dir} is in use by process {exc.holder} (an `omendb serve` "
                   "or another restore); stop it first — in Kubernetes scale the database to 0 "
                   "replicas (kubectl scale ... --replicas=0), on a host stop the omendb service — "
                   "then run the restore again") from None
    try:
        yield
    finally:
        os.close(fd)


def _move_all(src: Path, dst: Path, keep: set[str]) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for path in list(src.iterdir()):
        if path.name not in keep:
            os.replace(path, dst / path.name)
    fsync_dir(dst)
    fsync_dir(src)


def _poisoned(layout: Layout) -> bool:
    try:
        with open(layout.data_dir / MANIFEST, "rb") as f:
            return f.read(len(RESTORE_POISON)) == RESTORE_POISON
    except FileNotFoundError:
        return False


def recover_interrupted(layout: Layout) -> str | None:
    """Finish the bookkeeping of an interrupted restore (call with the data directory lock held): roll it
    back if it had not committed, else delete what it left. Returns what was done, or None."""
    data_prev, wal_prev = layout.data_dir / RESTORE_PREVIOUS, layout.wal_dir / RESTORE_PREVIOUS
    staging = layout.data_dir / RESTORE_STAGING
    if _poisoned(layout):
        # Not committed. Files the restore moved in are deleted only if every previous file had been moved
        # out first (the marker says so and names them); then the previous files go back, MANIFEST last.
        marker = data_prev / RESTORE_MOVED_OUT
        if marker.exists():
            for name in json.loads(marker.read_text()):
                if name.startswith(WAL_MARK):
                    (layout.wal_dir / name[len(WAL_MARK):]).unlink(missing_ok=True)
                else:
                    (layout.data_dir / name).unlink(missing_ok=True)
            marker.unlink()
        if wal_prev.is_dir():
            _move_all(wal_prev, layout.wal_dir, set())
        if data_prev.is_dir():
            _move_all(data_prev, layout.data_dir, {MANIFEST})
            if (data_prev / MANIFEST).exists():
                os.replace(data_prev / MANIFEST, layout.data_dir / MANIFEST)
            else:
                (layout.data_dir / MANIFEST).unlink()
        else:
            (layout.data_dir / MANIFEST).unlink()
        fsync_dir(layout.data_dir)
        done = "rolled back an interrupted restore: the previous data is back in place"
    elif data_prev.exists() or wal_prev.exists() or staging.exists():
        done = "removed the leftovers of an earlier restore (it had completed or not yet started)"
    else:
        return None
    for path in (data_prev, wal_prev, staging):
        if path.exists():
            shutil.rmtree(path)
    fsync_dir(layout.data_dir)
    if layout.wal_dir.is_dir():
        fsync_dir(layout.wal_dir)
    return done


def swap_in(layout: Layout, staged: Path, poison_text: str, wal_files: dict[str, bytes] | None = None) -> None:
    """Replace the database in `layout` by the checkpoint files in `staged` and the WAL segments
    `wal_files` (name: bytes, written into the WAL directory) (see the module docstring)."""
    wal_files = wal_files or {}
    data_prev, wal_prev = layout.data_dir / RESTORE_PREVIOUS, layout.wal_dir / RESTORE_PREVIOUS
    layout.wal_dir.mkdir(parents=True, exist_ok=True)
    data_prev.mkdir()
    wal_prev.mkdir()
    manifest = layout.data_dir / MANIFEST
    if manifest.exists():
        os.link(manifest, data_prev / MANIFEST)
    marker = layout.data_dir / RESTORE_MARKER
    write_synced(marker, RESTORE_POISON + b"\n" + poison_text.encode() + b"\n")
    os.replace(marker, manifest)  # from here no engine opens this directory
    fsync_dir(layout.data_dir)
    try:
        _move_all(layout.data_dir, data_prev, KEEP_IN_PLACE)
        _move_all(layout.wal_dir, wal_prev, {RESTORE_PREVIOUS, SET_ASIDE})
        incoming = sorted(p.name for p in staged.iterdir() if p.name != MANIFEST)
        write_synced(data_prev / RESTORE_MOVED_OUT, json.dumps(incoming + [WAL_MARK + n for n in wal_files]).encode())
        fsync_dir(data_prev)
        for name, data in wal_files.items():
            write_synced(layout.wal_dir / name, data)
        fsync_dir(layout.wal_dir)
        for path in list(staged.iterdir()):
            if path.name != MANIFEST:
                os.replace(path, layout.data_dir / path.name)
        fsync_dir(layout.data_dir)
        os.replace(staged / MANIFEST, manifest)  # the commit point
        fsync_dir(layout.data_dir)
    except BaseException:
        recover_interrupted(layout)
        raise
    for path in (data_prev, wal_prev, staged):
        shutil.rmtree(path)
    fsync_dir(layout.data_dir)
    fsync_dir(layout.wal_dir)


@dataclass(frozen=True)
class RestoreResult:
    backup_id: str
    lsn: int
    term: int
    records: int
    recovered: str | None
    backup_end_lsn: int = 0  # the chain's end and its record count there, to check a restore against
    backup_records: int = 0
    archived_lsn: int | None = None  # continued with archived WAL up to here (None: no archived WAL used)
    archive_stop: str = ""


def restore(store: BackupStore, layout: Layout, backup_id: str, database: str | None, target: Target,
            force: bool, progress: Progress | None = None, command_hint: str = "",
            use_wal_archive: bool = True) -> RestoreResult:
    chain = choose_chain(store, backup_id, database, target, use_wal_archive)
    last = chain[-1]
    with data_dir_lock(layout):
        recovered = recover_interrupted(layout)
        if layout.holds_database() and not force:
            raise Refused(f"{layout.data_dir} already holds a database; pass --force to replace it (the "
                          f"current data is kept aside until the restore succeeds)")
        staged = layout.data_dir / RESTORE_STAGING
        if staged.exists():
            shutil.rmtree(staged)
        staged.mkdir()
        verbatim = _verbatim_snapshot(store, chain)
        wal_files: dict[str, bytes] = {}
        try:
            frames, replay = restore_frames(store, chain, target, progress, use_wal_archive)
            if verbatim is not None:
                lsn, term, records, wal_files = _stage_verbatim(chain, verbatim, frames, staged, progress)
            else:
                state = materialize(store, chain, target, progress, frames)
                check_against_manifest(state, last)
                write_checkpoint(state, staged, last.engine_database or last.database, last.index,
                                 database_id=last.source.get("database_id"), new_term=True)
                lsn, term, records = state.lsn, state.term, len(state.keys)
        except BaseException:
            shutil.rmtree(staged, ignore_errors=True)  # a refused restore leaves the target as it was
            raise
        write_synced(staged / RESTORED_FROM, json.dumps({
            "backup_id": last.id, "database": last.database, "lsn": lsn, "term": term,
            "restored_at": time.time()}).encode())
        fsync_dir(staged)
        hint = (f"A backup_tool restore of backup {last.id} into this directory was interrupted. Run "
                f"`{command_hint}` again to finish it, or `backup_tool --data-dir {layout.data_dir} "
                f"rollback-restore` to put the previous data back.")
        swap_in(layout, staged, hint, wal_files)
    archived = replay.last_lsn if replay is not None else None
    return RestoreResult(last.id, lsn, term + 1, records, recovered, last.end_lsn, last.records, archived,
                         replay.stop if replay is not None else "")


def _verbatim_snapshot(store: BackupStore, chain: list[BackupManifest]) -> Path | None:
    """The chain's snapshot file when it can be restored as is: a format-2 checkpoint stored uncompressed,
    whose index description and database identity the backup recorded; else None (rebuilt instead)."""
    full = chain[0]
    entry, checkpoint = full.snapshot, full.index.get("checkpoint")
    if full.type != FULL or entry is None or entry.codec not in ("none", CODEC) or \
            not chain[-1].source.get("database_id"):
        return None
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("meta"), dict) or \
            not {"observed_max_error", "observed_mean_error", "depth", "train_seconds"} <= checkpoint["meta"].keys():
        return None
    path = store.path(full.id) / entry.name
    if entry.codec == CODEC:
        return path  # only format-2 checkpoints are packed
    try:
        return path if base_format(path) == 2 else None
    except CorruptionError:
        return None  # the rebuild reports the damage


def _stage_verbatim(chain: list[BackupManifest], snapshot: Path, frames: list[Frame], staged: Path,
                    progress: Progress | None) -> tuple[int, int, int, dict[str, bytes]]:
    """Stage the snapshot as the checkpoint and a MANIFEST in `staged`; returns (LSN, term before the new
    one, records, WAL segments to write). Everything is checked before anything is committed."""
    from concurrent.futures import ThreadPoolExecutor

    from omendb.backup.verbatim import copy_checked, delta_of

    full, last = chain[0], chain[-1]
    assert full.snapshot is not None
    name = base_name(full.start_lsn)
    # The WAL tail's combined effect does not depend on the checkpoint: computed while it is put back.
    replaying = ThreadPoolExecutor(max_workers=1, thread_name_prefix="omendb-replay")
    delta = replaying.submit(delta_of, frames)
    replaying.shutdown(wait=False)

    def check() -> tuple[int, int, int, dict[str, bytes]]:  # runs while the copy is hashed and written back
        try:
            base = open_base(staged / name)
        except CorruptionError as exc:
            raise Corrupt(f"{snapshot}: the snapshot inside is damaged ({exc.message})") from None
        if base.lsn != full.start_lsn:
            raise Corrupt(f"{snapshot} holds LSN {base.lsn}, the manifest says {full.start_lsn}; this backup is "
                          "damaged")
        return _verbatim_state(full, last, base, frames, delta.result())

    staged_state, sync = copy_checked(snapshot, staged / name, full.snapshot, check, progress)
    sync.wait()
    return staged_state


def _verbatim_state(full: BackupManifest, last: BackupManifest, base: BaseFile, frames: list[Frame], delta: Run
                    ) -> tuple[int, int, int, dict[str, bytes]]:
    """(LSN, term before the new one, records, WAL segments) of a verbatim restore (`delta`: the frames'
    combined effect, verbatim.delta_of); writes the MANIFEST (and WAL_HEAD when there is a WAL tail) next to
    the staged checkpoint `base`."""

    lsn = frames[-1].lsn if frames else base.lsn
    term = max([full.start_term, *(f.term for f in frames)])
    # The checkpoint's sha256 (checked as it was copied) and every frame's are what the signed manifest lists,
    # and the content digest was computed from exactly these bytes when the backup was taken: the record
    # count is checked here (cheap: a search per WAL entry), the digest by `verify --deep`.
    records = merged_count(base.keys, delta)
    if lsn == last.end_lsn and records != last.records:
        raise Corrupt(f"the state rebuilt from backup {last.id} ({records} records) does not match what was "
                      f"backed up ({last.records} records); this backup chain is damaged")
    database_id = str(last.source["database_id"])
    checkpoint = full.index["checkpoint"]
    manifest = Manifest(database=last.engine_database or last.database, checkpoint_lsn=base.lsn, term=term + 1,
                        base_file=base.path.name, records=len(base.keys), created_at=time.time(),
                        model_type=str(checkpoint["model_type"]), max_error=int(checkpoint["max_error"]),
                        database_id=database_id, term_history=[[1, 1], [term + 1, lsn + 1]],
                        index_meta=dict(checkpoint["meta"]))
    wal_files: dict[str, bytes] = {}
    if frames:
        first = base.lsn + 1
        wal_files[segment_name(first)] = pack_segment_header(database_id, first, frames[0].term) + \
            b"".join(frame_bytes(f) for f in frames)
        write_synced(base.path.parent / WAL_HEAD, head_bytes(database_id, first))
    write_synced(base.path.parent / MANIFEST, manifest.to_json().encode())
    return lsn, term, records, wal_files


def rollback(layout: Layout) -> str:
    with data_dir_lock(layout):
        done = recover_interrupted(layout)
    if done is None:
        raise NotFound(f"no interrupted restore in {layout.data_dir}; nothing to roll back")
    return done


def keys_digest_of_directory(layout: Layout) -> tuple[int, str, int]:
    """(records, content sha256, LSN) of a data directory, by opening it with the engine."""
    from omendb.backup.payload import state_digest
    from omendb.config import Config
    from omendb.database import Database

    config = Config().replace("database", data_dir=str(layout.data_dir)).replace("wal",
                                                                                 dir=str(layout.wal_dir))
    try:
        with Database.open(config) as db:
            keys, values = db.range(-(2**63))
            return len(keys), state_digest(np.asarray(keys), np.asarray(values)), db.lsn()
    except CorruptionError as exc:
        raise Corrupt(f"the restored directory does not open: {exc.message}") from None
    except BackupError:
        raise
