"""The embedded database: ``Database.open(config_or_path)``.

In memory a database is a *base* (sorted arrays of every record as of the last merge, with its learned
index) and a *delta* of later writes: a small dict (``mem``) for the newest small batches and sorted
runs for larger ones, newest last, at most about log2(delta) of them. Reads consult the delta, newest
first, then the base. When the delta reaches ``retrain_threshold`` records it is frozen (a new empty delta
takes the writes) and merged into a new base in the background; the new model is trained there and the
new base swapped in atomically, then written as a checkpoint.

Writes: one batch = one LSN = one WAL frame. LSNs are assigned and frames appended under a short lock;
the fsync is shared among concurrent writers (group commit); a batch becomes visible to readers only after
it is durable, and batches become visible in LSN order.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import gc
import json
import logging
import math
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from omendb import files, rmi
from omendb.checkpoint import BaseFile, BaseWriter, base_format, open_base, read_base, release_pages
from omendb.config import Config, load_config
from omendb.errors import (
    CorruptionError,
    DatabaseClosed,
    DatabaseLocked,
    InvalidInput,
    Isolated,
    MemoryLimitExceeded,
    OmenDBError,
    ReadOnly,
    StorageFull,
    is_storage_full,
)
from omendb.files import (
    LOCK,
    MANIFEST,
    MANIFEST_VERSION,
    HeldBy,
    Manifest,
    base_name,
    fsync_dir,
    list_segments,
    read_head,
    read_manifest,
    segment_name,
    write_manifest,
)
from omendb.replication import Fenced, FrameRing, ReplicaTracker, TermHistory
from omendb.runs import (
    EMPTY_RUN,
    RUN_RECORD_BYTES,
    Run,
    apply_to_base,
    chunk_bounds,
    combine,
    merge_chunks,
    merged_count_runs,
    replay,
    run_from_batch,
    slice_range,
)
from omendb.validation import INT64_MAX, INT64_MIN, as_key, as_keys, as_values
from omendb.wal import (
    Frame,
    WalWriteError,
    WalWriter,
    encode_frame,
    read_frames,
    read_segment_header,
    relabel_segment,
)
from omendb.wal_chain import locate_wal_dir, prove

log = logging.getLogger("omendb.database")

MEM_LIMIT = 8192  # entries in the delta's dict before it is flushed into a sorted run
RUN_MIN = 1024  # batches at least this large go straight into a sorted run
MEM_ENTRY_BYTES = 160  # measured cost of one dict entry (key, tuple, float, int objects)
REPLICA_WAL_RETENTION_S = 600  # WAL is kept for replicas heard from within this many seconds
FRAME_RING_BYTES = 16 << 20  # newest WAL frames kept in memory for replicas (see replication.FrameRing)
# A memory-mapped checkpoint up to this size is verified before open returns; a larger one in the background
# after the database is ready (a bad block then fails health and writes loudly, see _verify_in_background).
VERIFY_SYNC_BYTES = 64 << 20


@dataclass(frozen=True)
class Base:
    keys: np.ndarray
    values: np.ndarray
    lsns: np.ndarray
    index: rmi.LearnedIndex
    lsn: int  # every write up to this LSN is in here

    @property
    def nbytes(self) -> int:
        return self.keys.nbytes + self.values.nbytes + self.lsns.nbytes + self.index.model_bytes

    @functools.cached_property
    def point_lookup(self) -> Callable[[np.ndarray, np.ndarray, int], int]:
        """The index's single-key lookup for this base's arrays (rmi.point_lookup), made on first use."""
        return rmi.point_lookup(self.index.nodes, self.keys)


class Delta:
    """Writes not yet merged into the base. Mutated only under the database's state lock."""

    def __init__(self) -> None:
        self.mem: dict[int, tuple[float | None, int]] = {}
        self.runs: tuple[Run, ...] = ()
        self._mem_run: Run | None = None

    def __len__(self) -> int:
        return len(self.mem) + sum(len(r) for r in self.runs)

    @property
    def nbytes(self) -> int:
        return len(self.mem) * MEM_ENTRY_BYTES + sum(r.nbytes for r in self.runs)

    def mem_run(self) -> Run:
        """The dict as a sorted run (cached until the next write)."""
        if self._mem_run is None:
            if not self.mem:
                self._mem_run = EMPTY_RUN
            else:
                keys = np.fromiter(self.mem.keys(), dtype=np.int64, count=len(self.mem))
                entries = list(self.mem.values())
                values = np.array([v if v is not None else 0.0 for v, _ in entries], dtype=np.float64)
                lsns = np.array([lsn for _, lsn in entries], dtype=np.int64)
                live = np.array([v is not None for v, _ in entries], dtype=bool)
                order = np.argsort(keys)
                self._mem_run = Run(keys[order], values[order], lsns[order], live[order])
        return self._mem_run

    def layers(self) -> list[Run]:
        """Sorted runs, newest first (the dict is always newer than every run)."""
        return [self.mem_run(), *reversed(self.runs)]

    def combined(self) -> Run:
        return combine([*self.runs, self.mem_run()])


@dataclass(frozen=True)
class View:
    """What a reader needs besides the active delta: swapped atomically by merges."""

    base: Base
    frozen: Delta | None  # a delta being merged into the next base
    frozen_lsn: int


def _push_run(runs: tuple[Run, ...], run: Run) -> tuple[Run, ...]:
    """`runs` with `run` appended as the newest, merging neighbours of similar size so that at most about
    log2(delta) runs exist (each run is more than twice the size of the next newer one)."""
    out = [*runs, run]
    while len(out) >= 2 and len(out[-2]) <= 2 * len(out[-1]):
        newest = out.pop()
        out[-1] = combine([out[-1], newest])
    return tuple(out)


def _release_columns(columns: tuple[np.ndarray, ...], start: int, stop: int) -> None:
    for column in columns:
        release_pages(column, start, stop)


def _segment_term(path: Path) -> int:
    """The term a segment was started in (0 when its header does not say: previous release, or damaged)."""
    try:
        return read_segment_header(path).term or 0
    except (CorruptionError, OSError):
        return 0


class Database:
    """A durable int64 -> float64 store. Thread-safe; use ``Database.open``."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.data_dir = Path(config.database.data_dir)
        self.wal_dir = config.wal_dir  # the MANIFEST's recorded location may replace it (see locate_wal_dir)
        self.database_id = ""
        self.identity_from_upgrade = False  # see Manifest.identity_from_upgrade
        self._compiled = config.performance.enable_simd
        self._state_lock = threading.Lock()  # guards _view, _active
        self._write_lock = threading.Lock()  # orders LSN assignment and WAL appends
        self._apply_lock = threading.Lock()  # applies durable batches in LSN order
        self._merge_lock = threading.Lock()  # one merge at a time
        self._pending: collections.deque[tuple[int, np.ndarray, np.ndarray | None, int]] = collections.deque()
        self._active = Delta()
        self._closed = False
        self._failed: OmenDBError | None = None
        self._merge_thread: threading.Thread | None = None
        self._merge_extra_bytes = 0  # memory a running merge holds besides the base and the deltas
        self._verify_thread: threading.Thread | None = None
        self.checkpoint_verified: bool | None = None  # None: no mapped checkpoint, False: still checking
        self.checkpoint_verify_seconds: float | None = None  # how long the background verification took
        self._count_cache: tuple[int, int] | None = None
        self.retrains_total = 0
        self.retrain_seconds_total = 0.0
        self.last_retrain_at: float | None = None
        self.last_retrain_seconds: float | None = None
        self._released_through: int | None = None  # WAL released before any backup archived it, up to here
        # [wal_archive]: the WAL is kept until the archiver shipped it (wal_archive.py); -1 until it knows
        # where the archive ends, None when nothing is archived here (off, or a replica).
        self._archive_hold: int | None = -1 if config.wal_archive.url else None
        self.read_only: str | None = None  # why writes are refused (a replica names its primary), or None
        self.isolated: str | None = None  # why a primary cut off from replicas and the API refuses writes
        self.replicas = ReplicaTracker()  # on a primary: what each replica holds
        self.frame_ring = FrameRing(FRAME_RING_BYTES)  # newest WAL frames, for streaming to replicas
        self.sync_replicas, self.sync_timeout_s = 0, 0.0  # synchronous replication: replicas to wait for
        self.last_commit_us = 0  # commit time (on the primary that wrote it) of the newest visible batch
        self._lsn_changed = threading.Condition()
        opened_before = (self.data_dir / LOCK).exists()  # a previous release left it (see locate_wal_dir)
        self._lock_fd = self._lock_dir(self.data_dir, "data directory")
        self._wal_lock_fd = -1
        try:
            self._recover(opened_before)
        except BaseException:
            os.close(self._lock_fd)
            if self._wal_lock_fd >= 0:
                os.close(self._wal_lock_fd)
            raise

    # ---- opening -------------------------------------------------------------------------------------

    @classmethod
    def open(cls, config_or_path: Config | str | os.PathLike[str] | None = None) -> Database:
        """Open (creating if needed) a database from a Config, an omendb.toml path, or a data directory."""
        if isinstance(config_or_path, Config):
            config = config_or_path
        elif config_or_path is None:
            config = Config()
        else:
            path = Path(config_or_path)
            if path.is_dir() or not path.suffix:
                config = Config().replace("database", data_dir=str(path))
            else:
                config = load_config(path)
        return cls(config)

    @staticmethod
    def _lock_dir(directory: Path, what: str) -> int:
        """Hold an exclusive flock on `directory`/LOCK for as long as the database is open."""
        try:
            return files.lock_directory(directory)
        except HeldBy as exc:
            raise DatabaseLocked(f"{what} {directory} is in use by process {exc.holder} (an `omendb serve` or a "
                                 f"backup_tool run); stop it before opening the database here, or give each "
                                 f"database its own directory") from None

    def _recover(self, opened_before: bool) -> None:
        started = time.perf_counter()
        cfg = self.config
        manifest = read_manifest(self.data_dir)
        self.wal_dir = locate_wal_dir(self.data_dir, self.config.wal.dir, manifest, opened_before)
        if manifest is not None and manifest.wal_dir and manifest.wal_dir != str(self.wal_dir):
            log.warning("[wal] dir = %s, but the MANIFEST of %s records its WAL in %s: using [wal] dir (recovery "
                        "refuses to start if the WAL is not there)", self.wal_dir, self.data_dir, manifest.wal_dir)
        self.database_id = manifest.database_id if manifest is not None and manifest.database_id else ""
        self.identity_from_upgrade = manifest is not None and manifest.identity_from_upgrade
        if not self.database_id:
            self.database_id = str(uuid.uuid4())
            if manifest is not None:
                self.identity_from_upgrade = True
                log.warning("upgrading %s: the database gets the identity %s", self.data_dir, self.database_id)
        self.term = manifest.term if manifest else 1
        self.term_history: TermHistory = [(int(t), int(first)) for t, first in manifest.term_history] \
            if manifest else [(1, 1)]
        to_verify: BaseFile | None = None
        if manifest and manifest.base_file:
            path = self.data_dir / manifest.base_file
            if base_format(path) == 2:  # mapped, not read: open costs no pass over the records
                mapped = open_base(path)
                lsn, keys, values, lsns, nodes = mapped.lsn, mapped.keys, mapped.values, mapped.lsns, mapped.nodes
                if mapped.data_bytes <= VERIFY_SYNC_BYTES:
                    mapped.verify()
                    self.checkpoint_verified = True
                else:
                    to_verify, self.checkpoint_verified = mapped, False
            else:
                lsn, keys, values, lsns, nodes = read_base(path)
            if lsn != manifest.checkpoint_lsn:
                raise CorruptionError(f"{manifest.base_file} holds LSN {lsn} but the manifest says "
                                      f"{manifest.checkpoint_lsn}; restore from a backup")
            meta = manifest.index_meta
            if manifest.model_type == cfg.index.model_type and manifest.max_error == cfg.index.max_error:
                index = rmi.LearnedIndex(nodes, manifest.model_type, manifest.max_error,
                                         int(meta["observed_max_error"]), float(meta["observed_mean_error"]),
                                         int(np.count_nonzero(nodes["kind"] == rmi.LEAF)), int(meta["depth"]),
                                         float(meta["train_seconds"]))
            else:
                log.info("index settings changed since the checkpoint; retraining the model")
                index = rmi.train(keys, cfg.index.model_type, cfg.index.max_error)
            base = Base(keys, values, lsns, index, manifest.checkpoint_lsn)
            log.debug("recovery: loaded checkpoint %s at LSN %d (%d records)", manifest.base_file,
                      manifest.checkpoint_lsn, len(keys))
        else:
            empty = np.zeros(0, np.int64)
            base = Base(empty, np.zeros(0), empty, rmi.train(empty, cfg.index.model_type, cfg.index.max_error),
                        manifest.checkpoint_lsn if manifest else 0)
        self._checkpoint_lsn = base.lsn
        self._view = View(base, None, base.lsn)
        self._lsn = base.lsn
        replayed = 0
        if cfg.wal.enabled:
            log.debug("recovery: replaying the WAL in %s after LSN %d", self.wal_dir, base.lsn)
            if os.path.abspath(self.wal_dir) != os.path.abspath(self.data_dir):
                self._wal_lock_fd = self._lock_dir(self.wal_dir, "WAL directory")
            previous = manifest.previous_database_id if manifest is not None else None
            chain = prove(self.wal_dir, self.data_dir, self.database_id, base.lsn, repair=True,
                          previous_id=previous)
            if chain.gap is not None and not cfg.wal.accept_gap:
                raise chain.gap
            if previous:
                self._relabel_wal(previous)  # an adopt_identity interrupted by a crash
                manifest = read_manifest(self.data_dir)
            self._record_identity(manifest)

            def seen(frame: Frame) -> None:
                nonlocal replayed
                self._lsn, self.last_commit_us = frame.lsn, frame.commit_us
                if frame.term > self.term:
                    self.term = frame.term
                    self.term_history.append((frame.term, frame.lsn))
                replayed += 1

            replayed_run = replay(chain.frames, seen)
            if replayed_run is not None:
                self._active.runs = (replayed_run,)
            self._visible_lsn = self._lsn
            self._wal: WalWriter | None = None
            resume = chain.resume
            if chain.gap is not None:
                self._start_after_gap(str(chain.gap))
                resume = False
            stale = self.wal_dir / segment_name(self._lsn + 1)
            if not resume and stale.exists():
                stale.unlink()  # an empty segment (previous release, or a header never written) to start anew
            self._wal = self._open_wal(self._lsn + 1, resume)
            if resume:
                self._record_wal_head(list_segments(self.wal_dir)[-1][0])
        else:
            self._record_identity(manifest)
            # Writes are not logged from now on: WAL_HEAD no longer describes them (a WAL directory cleared
            # while the WAL is off must not stop the next start with WAL on).
            files.drop_head(self.data_dir)
            self._wal = None
        self._visible_lsn = self._lsn
        self._remove_stale_files(manifest)
        log.info("opened %s at LSN %d: %d records in the checkpoint, %d WAL frames replayed in %.2fs",
                 self.data_dir, self._lsn, len(base.keys), replayed, time.perf_counter() - started)
        if cfg.database.expected_size * RUN_RECORD_BYTES > cfg.memory_limit_bytes:
            log.warning("[database] expected_size = %d records needs about %d MiB, more than the memory limit "
                        "of %d MiB", cfg.database.expected_size,
                        cfg.database.expected_size * RUN_RECORD_BYTES >> 20, cfg.memory_limit_bytes >> 20)
        if to_verify is not None:
            self._verify_thread = threading.Thread(target=self._verify_in_background, args=(to_verify,),
                                                   name="omendb-verify", daemon=True)
            self._verify_thread.start()
        if len(self._active) >= cfg.index.retrain_threshold:
            self._start_merge()

    def _record_identity(self, manifest: Manifest | None) -> None:
        """Make the MANIFEST carry this database's identity and WAL location before any segment carries them
        (a new database gets its MANIFEST now, not at its first checkpoint)."""
        wal_dir = str(os.path.abspath(self.wal_dir))
        if manifest is not None and manifest.database_id == self.database_id and manifest.wal_dir == wal_dir \
                and manifest.format_version == MANIFEST_VERSION \
                and manifest.identity_from_upgrade == self.identity_from_upgrade:
            return
        if manifest is None:
            manifest = Manifest(database=self.config.database.name, checkpoint_lsn=0, term=self.term,
                                base_file=None, records=0, created_at=time.time(),
                                model_type=self.config.index.model_type, max_error=self.config.index.max_error,
                                index_meta={}, term_history=[list(entry) for entry in self.term_history])
        write_manifest(self.data_dir, dataclasses.replace(manifest, database_id=self.database_id, wal_dir=wal_dir,
                                                          format_version=MANIFEST_VERSION,
                                                          identity_from_upgrade=self.identity_from_upgrade))

    def _open_wal(self, next_lsn: int, resume: bool) -> WalWriter:
        cfg = self.config
        return WalWriter(
            self.wal_dir, next_lsn, max_file_bytes=cfg.wal.max_file_size_mb * 1024 * 1024,
            rotation_seconds=cfg.wal.rotation_interval_hours * 3600,
            sync_interval_s=None if cfg.wal.sync_on_write else cfg.storage.sync_interval_ms / 1000,
            database_id=self.database_id, term=lambda: self.term, on_new_segment=self._record_wal_head,
            resume=resume)

    def _record_wal_head(self, first_lsn: int) -> None:
        """Called once each new WAL segment is durable: from now on recovery requires it (see wal_chain).
        A failure after WAL_HEAD was replaced (its directory's fsync) is marked ``segment_recorded``: the
        writer must then keep the new segment, which the head names."""
        try:
            files.write_head(self.data_dir, self.database_id, first_lsn)
        except BaseException as exc:
            with contextlib.suppress(Exception):
                if read_head(self.data_dir) == (self.database_id, first_lsn):
                    exc.segment_recorded = True  # type: ignore[attr-defined]
            raise

    def _start_after_gap(self, gap: str) -> None:
        """[wal] accept_gap: keep what the WAL proves, checkpoint it, set the rest of the WAL aside and go on in
        a new term, so LSNs after the gap are never handed out twice under one term."""
        aside = files.gap_dir(self.wal_dir)
        log.error("[wal] accept_gap = true: starting although %s. Writes after LSN %d that were acknowledged are "
                  "LOST; the WAL segments are moved to %s; the database continues on a new term. Turn "
                  "accept_gap off again.", gap, self._lsn, aside)
        newest_term = max([self.term, *(_segment_term(path) for _, path in list_segments(self.wal_dir))])
        self._start_term(newest_term + 1, self._lsn + 1)
        self._merge(self._freeze())  # the replayed frames go into a checkpoint before their segments go
        aside.mkdir()
        for _, path in list_segments(self.wal_dir):
            os.replace(path, aside / path.name)
        fsync_dir(self.wal_dir)
        files.drop_head(self.data_dir)

    def _verify_in_background(self, mapped: BaseFile) -> None:
        """Check every block of the mapped checkpoint while the database serves. A bad block fails the
        database (health, writes and reads raise CorruptionError): the data must come from a backup."""
        started = time.perf_counter()
        try:
            if mapped.verify(should_stop=lambda: self._closed):
                self.checkpoint_verified = True
                self.checkpoint_verify_seconds = time.perf_counter() - started
                log.info("checkpoint %s verified in the background: %d records in %.2fs", mapped.path.name,
                         len(mapped.keys), time.perf_counter() - started)
        except CorruptionError as exc:
            log.error("checkpoint verification failed, the database stops serving: %s", exc.message)
            self._failed = exc

    def _remove_stale_files(self, manifest: Manifest | None) -> None:
        current = manifest.base_file if manifest else None
        for path in self.data_dir.iterdir():
            if files.is_leftover(path.name, current):
                path.unlink()

    # ---- writes --------------------------------------------------------------------------------------

    def put_many(self, keys: Any, values: Any) -> int:
        """Upsert a batch atomically and durably; returns its LSN."""
        k = as_keys(keys)
        return self._write(k, as_values(values, len(k)))

    def delete_many(self, keys: Any) -> int:
        """Delete keys (absent keys are ignored) atomically and durably; returns the batch's LSN."""
        return self._write(as_keys(keys), None)

    def put(self, key: int, value: float) -> int:
        return self.put_many([key], [value])

    def _write(self, keys: np.ndarray, values: np.ndarray | None, replicated: Frame | None = None) -> int:
        self._check_open()
        if replicated is None and self.read_only is not None:
            raise ReadOnly(self.read_only)
        if replicated is None and self.isolated is not None:
            raise Isolated(self.isolated)
        if len(keys) == 0 and replicated is None:
            return self._lsn
        with self._write_lock:
            self._check_open()
            if values is not None:
                self._check_memory(len(keys))
            lsn = self._lsn + 1
            term, commit_us = self.term, time.time_ns() // 1000
            if replicated is not None:
                if replicated.term < self.term:
                    raise Fenced(f"frame {replicated.lsn} comes from term {replicated.term}, older than this "
                                 f"database's term {self.term}: its primary has been replaced")
                if replicated.lsn != lsn:
                    raise InvalidInput(f"replicated frame has LSN {replicated.lsn} but this database expects {lsn}; "
                                       f"frames must be applied in order without gaps")
                if replicated.term > self.term:
                    self._start_term(replicated.term, lsn)
                term, commit_us = replicated.term, replicated.commit_us
            ticket = 0
            if self._wal is not None:
                encoded = encode_frame(lsn, term, commit_us, keys, values)
                ticket = self._wal.append(encoded, lsn)
                self.frame_ring.add(lsn, encoded)
            self._lsn = lsn
            self._pending.append((lsn, keys, values, commit_us))
        if self._wal is not None and self.config.wal.sync_on_write:
            try:
                self._wal.sync(ticket)
            except WalWriteError as exc:
                self._failed = exc
                raise
        self._apply_through(lsn)
        if self.sync_replicas and replicated is None:
            self.replicas.wait(lsn, self.sync_replicas, self.sync_timeout_s)
        return lsn

    def _check_open(self) -> None:
        if self._closed:
            raise DatabaseClosed("the database is closed")
        if self._failed is not None:
            raise self._failed

    def _check_memory(self, incoming: int) -> None:
        per_record = MEM_ENTRY_BYTES if incoming < RUN_MIN else RUN_RECORD_BYTES
        projected = self.memory_usage_bytes() + incoming * per_record
        limit = self.config.memory_limit_bytes
        if projected > limit:
            raise MemoryLimitExceeded(
                f"writing {incoming} records would bring memory to {projected >> 20} MiB, over the limit of "
                f"{limit >> 20} MiB ([database] max_memory_mb / [limits] memory_limit_mb); nothing was applied. "
                f"Delete records, run POST /admin/rebuild-index to compact, or raise the limit")

    def _apply_through(self, lsn: int) -> None:
        """Make every durable batch up to `lsn` visible, in LSN order (whoever comes first applies all)."""
        with self._apply_lock:
            applied = False
            while self._pending and self._pending[0][0] <= lsn:
                batch_lsn, keys, values, commit_us = self._pending.popleft()
                self._apply(batch_lsn, keys, values)
                self.last_commit_us = commit_us
                applied = True
        if applied:
            with self._lsn_changed:
                self._lsn_changed.notify_all()
        if len(self._active) >= self.config.index.retrain_threshold:
            self._start_merge()

    def _apply(self, lsn: int, keys: np.ndarray, values: np.ndarray | None) -> None:
        """Make one durable batch visible. Called with the apply lock held, so only this thread changes the
        delta's runs; expensive run merges happen before taking the state lock that readers wait on."""
        delta = self._active
        if len(keys) >= RUN_MIN:
            runs = delta.runs
            if delta.mem:  # the dict must stay newer than every run
                runs = _push_run(runs, delta.mem_run())
            runs = _push_run(runs, run_from_batch(keys, values, lsn))
            with self._state_lock:
                delta.runs, delta.mem, delta._mem_run = runs, {}, None
                self._visible_lsn = lsn
            return
        items = zip(keys.tolist(), values.tolist() if values is not None else [None] * len(keys), strict=True)
        with self._state_lock:
            mem = delta.mem
            for key, value in items:
                mem[key] = (value, lsn)
            delta._mem_run = None
            self._visible_lsn = lsn
        if len(mem) >= MEM_LIMIT:
            runs = _push_run(delta.runs, delta.mem_run())
            with self._state_lock:
                delta.runs, delta.mem, delta._mem_run = runs, {}, None

    # ---- reads ---------------------------------------------------------------------------------------

    def _snapshot(self) -> tuple[View, list[Run], int]:
        """A consistent view: the base, the delta layers newest first, and the LSN they reflect."""
        with self._state_lock:
            view = self._view
            layers = self._active.layers()
            lsn = self._visible_lsn
        if view.frozen is not None:
            layers += view.frozen.layers()
        return view, [r for r in layers if len(r)], lsn

    def get(self, key: Any) -> float | None:
        # The hot path of single-key reads: plain ints skip validation helpers, and with no delta the lookup
        # goes straight to the compiled kernel.
        k = key if type(key) is int and INT64_MIN <= key <= INT64_MAX else as_key(key)
        if self._closed or self._failed is not None:
            self._check_open()
        with self._state_lock:
            view = self._view
            delta = self._active
            entry = delta.mem.get(k)
            runs = delta.runs
        if entry is not None:
            return entry[0]
        if runs or view.frozen is not None:
            layers = [*reversed(runs)]
            if view.frozen is not None:
                layers += view.frozen.layers()
            for run in layers:
                i = int(run.keys.searchsorted(k))
                if i < len(run.keys) and run.keys[i] == k:
                    return float(run.values[i]) if run.live[i] else None
        base = view.base
        index = base.index
        pos = base.point_lookup(index.nodes, base.keys, k)
        return float(base.values[pos]) if pos >= 0 else None

    def get_many(self, keys: Any) -> tuple[np.ndarray, np.ndarray]:
        """(values, found) for each key; values are 0.0 where not found."""
        q = as_keys(keys)
        self._check_open()
        view, layers, _ = self._snapshot()
        values = np.zeros(len(q), dtype=np.float64)
        found = np.zeros(len(q), dtype=bool)
        todo = np.arange(len(q))
        for run in layers:
            if not len(todo):
                break
            sub = q[todo]
            i = np.minimum(run.keys.searchsorted(sub), len(run) - 1)
            hit = run.keys[i] == sub
            hit_idx, hit_pos = todo[hit], i[hit]
            found[hit_idx] = run.live[hit_pos]
            values[hit_idx] = np.where(run.live[hit_pos], run.values[hit_pos], 0.0)
            todo = todo[~hit]
        if len(todo):
            base = view.base
            pos = rmi.lookup_many(base.index, base.keys, q[todo], self._compiled)
            ok = pos >= 0
            found[todo[ok]] = True
            values[todo[ok]] = base.values[pos[ok]]
        return values, found

    def range(self, start: Any, end: Any = None, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Records with start <= key < end (end None = no upper bound), ascending, at most `limit`."""
        lo = as_key(start)
        hi = None if end is None else as_key(end)
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
            raise InvalidInput(f"limit must be a non-negative integer, got {limit!r}")
        self._check_open()
        view, layers, _ = self._snapshot()
        if hi is not None and hi <= lo or limit == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float64)
        delta = combine([slice_range(r, lo, hi) for r in reversed(layers)])
        base = view.base
        b_lo = int(base.keys.searchsorted(lo))
        b_hi = len(base.keys) if hi is None else int(base.keys.searchsorted(hi))
        if limit is not None and b_hi - b_lo > limit + len(delta):
            # At most len(delta) of these base records can be deleted or replaced by the delta, so this many
            # are enough; delta entries beyond the last base key taken must wait for the next page.
            b_hi = b_lo + limit + len(delta)
            cut = int(delta.keys.searchsorted(base.keys[b_hi - 1], side="right"))
            delta = Run(delta.keys[:cut], delta.values[:cut], delta.lsns[:cut], delta.live[:cut])
        keys, values, _ = apply_to_base(base.keys[b_lo:b_hi], base.values[b_lo:b_hi], base.lsns[b_lo:b_hi],
                                        delta)
        if limit is not None:
            keys, values = keys[:limit], values[:limit]
        return keys, values

    def count(self) -> int:
        """Live records."""
        self._check_open()
        view, layers, lsn = self._snapshot()
        cached = self._count_cache
        if cached is not None and cached[0] == lsn:
            return cached[1]
        n = len(view.base.keys)
        if layers:
            delta = combine(list(reversed(layers)))
            pos = np.minimum(view.base.keys.searchsorted(delta.keys), max(n - 1, 0))
            in_base = view.base.keys[pos] == delta.keys if n else np.zeros(len(delta), bool)
            n += int(np.count_nonzero(delta.live & ~in_base)) - int(np.count_nonzero(~delta.live & in_base))
        self._count_cache = (lsn, n)
        return n

    def lsn(self) -> int:
        """LSN of the newest write visible to readers."""
        return self._visible_lsn

    # ---- merges, checkpoints, admin ------------------------------------------------------------------

    def _start_merge(self) -> None:
        """Freeze the delta and merge it into a new base in the background (if no merge is running)."""
        if not self._merge_lock.acquire(blocking=False):
            return
        try:
            frozen = self._freeze()
        except BaseException:
            self._merge_lock.release()
            raise
        self._merge_thread = threading.Thread(target=self._merge_in_background, args=(frozen,),
                                              name="omendb-merge", daemon=True)
        self._merge_thread.start()

    def _freeze(self) -> Delta | None:
        """Under the state lock: hand the active delta to the merge and start a fresh one. The delta of a
        merge that failed (a full data volume, say) is still in the view, and nowhere else but the WAL: it
        goes into this merge too, under the newer writes, never dropped."""
        with self._apply_lock, self._state_lock:
            frozen = self._active
            left = self._view.frozen
            if left is not None and len(left):
                if len(frozen):
                    carried = Delta()
                    carried.runs = tuple(r for r in (*left.runs, left.mem_run(), *frozen.runs) if len(r))
                    carried.mem = frozen.mem
                    frozen = carried
                else:
                    frozen = left
            if not len(frozen):
                return None
            self._active = Delta()
            self._view = View(self._view.base, frozen, self._visible_lsn)
            return frozen

    def _merge_in_background(self, frozen: Delta | None) -> None:
        try:
            self._merge(frozen)
        except StorageFull as exc:  # the new base serves from memory; the WAL still holds every write
            log.error("background checkpoint failed: %s", exc.message)
        except Exception as exc:  # a failed merge leaves the delta in place; reads stay correct
            log.exception("background merge failed; the delta stays in memory and the WAL keeps every write")
            if isinstance(exc, OSError):
                self._failed = OmenDBError(f"checkpoint failed: {exc}")
        finally:
            self._merge_lock.release()

    def _merge(self, frozen: Delta | None, rebuild: bool = False) -> None:
        """Merge `frozen` (may be None: retrain only) into a new base, swap it in, write the checkpoint.

        The new base is streamed chunk by chunk into its checkpoint file and then memory-mapped, so a merge
        holds the old base, the delta and one chunk, never two full copies of the base (the mapped file's
        pages are page cache the kernel can write back and drop). `rebuild` needs nothing more: every merge
        writes fresh, compact arrays."""
        started = time.perf_counter()
        cfg = self.config
        view = self._view
        base = view.base
        log.debug("merge: %d delta records into a base of %d records (rebuild: %s)",
                  len(frozen) if frozen else 0, len(base.keys), rebuild)
        lsn = view.frozen_lsn if frozen is not None else base.lsn
        runs = [*frozen.runs, frozen.mem_run()] if frozen is not None else []
        bounds = chunk_bounds(base.keys, runs)
        count = merged_count_runs(base.keys, runs, bounds)
        self._merge_extra_bytes = 8 * count  # the new keys, mapped while the model trains
        log.debug("checkpoint: writing %s (LSN %d, %d records)", base_name(lsn), lsn, count)
        try:
            writer = BaseWriter(self.data_dir / base_name(lsn), count, lsn, cfg.storage.batch_size)
            try:
                # The old base's pages this merge has streamed past leave the process's resident set (they
                # stay in the page cache; a reader that still needs them faults them back), so the peak is
                # not the whole old base beside the new base's keys while the model trains.
                release = functools.partial(_release_columns, (base.keys, base.values, base.lsns))
                for keys, values, lsns in merge_chunks(base.keys, base.values, base.lsns, runs, bounds, release):
                    writer.write(keys, values, lsns)
                del runs, release
                index = rmi.train(writer.keys(), cfg.index.model_type, cfg.index.max_error)
                written = writer.finish(index)
            except BaseException:
                writer.abort()  # no .tmp left behind, on a full volume least of all
                raise
        except OSError as exc:
            self._merge_extra_bytes = 0
            if (full := self._checkpoint_full(exc)) is None:
                raise
            raise full from exc
        except BaseException:
            self._merge_extra_bytes = 0
            raise
        new_base = Base(written.keys, written.values, written.lsns, index, lsn)
        with self._state_lock:
            self._view = View(new_base, None, new_base.lsn)
        del view, base  # the old base's mapping goes once readers let go of it
        self._merge_extra_bytes = 0
        self.checkpoint_verified = True  # written and checksummed here
        elapsed = time.perf_counter() - started
        self.retrains_total += 1
        self.retrain_seconds_total += elapsed
        self.last_retrain_at, self.last_retrain_seconds = time.time(), elapsed
        log.info("merged %d delta records into a base of %d, retrained the %s index (%d leaves, max error "
                 "%d) and wrote the checkpoint in %.2fs", len(frozen) if frozen else 0, count, index.model_type,
                 index.leaves, index.observed_max_error, elapsed)
        self._write_manifest(new_base)

    def _write_manifest(self, base: Base) -> None:
        cfg = self.config
        started = time.perf_counter()
        name = base_name(base.lsn)
        index = base.index
        try:
            try:
                write_manifest(self.data_dir, Manifest(
                    database=cfg.database.name, checkpoint_lsn=base.lsn, term=self.term, base_file=name,
                    records=len(base.keys), created_at=time.time(), model_type=index.model_type,
                    max_error=index.max_error, term_history=[list(entry) for entry in self.term_history],
                    database_id=self.database_id, wal_dir=str(os.path.abspath(self.wal_dir)),
                    identity_from_upgrade=self.identity_from_upgrade,
                    index_meta={"observed_max_error": index.observed_max_error,
                                "observed_mean_error": index.observed_mean_error, "depth": index.depth,
                                "train_seconds": index.train_seconds}))
            except BaseException:
                if base.lsn != self._checkpoint_lsn:
                    self._drop_unnamed_base(name)
                raise
        except OSError as exc:
            if (full := self._checkpoint_full(exc)) is None:
                raise
            raise full from exc
        log.debug("checkpoint: LSN %d written in %.3fs (MANIFEST)", base.lsn, time.perf_counter() - started)
        old = self._checkpoint_lsn
        self._checkpoint_lsn = base.lsn
        if old != base.lsn:
            with contextlib.suppress(FileNotFoundError):
                (self.data_dir / base_name(old)).unlink()
        self._release_wal()

    def _checkpoint_full(self, exc: OSError) -> StorageFull | None:
        """A failed checkpoint write on a full volume as StorageFull (507); None for any other error."""
        if not is_storage_full(exc):
            return None
        return StorageFull(f"could not write a checkpoint in {self.data_dir}: {exc.strerror}; free space on the "
                           f"data volume or expand it, then retry (POST /admin/checkpoint). The database keeps "
                           f"serving from the previous checkpoint and the WAL: nothing is lost")

    def _drop_unnamed_base(self, name: str) -> None:
        """After a failed checkpoint, delete its new base file (space on a full volume) unless the MANIFEST
        names it after all: the rename may have happened with only the directory fsync failing."""
        try:
            manifest = read_manifest(self.data_dir)
        except Exception:  # noqa: BLE001 - cannot tell which base is current: keep the file
            return
        if manifest is None or manifest.base_file != name:
            with contextlib.suppress(OSError):
                (self.data_dir / name).unlink()

    def _release_wal(self) -> None:
        """Drop WAL segments covered by the checkpoint and, once backups track the WAL, archived by them, and
        shipped by the WAL archiver when it runs."""
        if self._wal is None:
            return
        backups, shipped = self.archived_lsn(), self._archive_hold
        waits_for = [lsn for lsn in (backups, shipped) if lsn is not None]
        archived = min(waits_for) if waits_for else None
        through = self._checkpoint_lsn if archived is None else min(self._checkpoint_lsn, archived)
        log.debug("WAL: releasing segments through LSN %d (checkpoint LSN %d, archived LSN %s, shipped LSN %s)",
                  through, self._checkpoint_lsn, backups, shipped)
        # Replicas that were streaming recently still need the WAL after their position: keep it (within
        # max_retained_mb), so a replica that was briefly away resumes instead of re-seeding from a snapshot.
        replica_floor = self.replicas.floor(REPLICA_WAL_RETENTION_S)
        if replica_floor is not None and replica_floor < through:
            self._wal.remove_through(replica_floor)
            if self._wal.size_bytes() > self.config.wal.max_retained_mb * 1024 * 1024:
                log.warning("WAL kept for replicas exceeded [wal] max_retained_mb = %d: released segments "
                            "through LSN %d; a replica behind LSN %d will re-seed from a snapshot",
                            self.config.wal.max_retained_mb, through, through)
            else:
                through = replica_floor
        self._wal.remove_through(through)
        if archived is not None and archived < self._checkpoint_lsn:
            bound = self.config.wal.max_retained_mb * 1024 * 1024
            if self._wal.size_bytes() > bound:
                self._wal.remove_through(self._checkpoint_lsn)
                if backups is not None and backups < self._checkpoint_lsn:
                    self._released_through = self._checkpoint_lsn
                    log.warning("WAL retained for backups exceeded [wal] max_retained_mb = %d: released segments "
                                "through LSN %d that no backup has archived; the next backup must be a full "
                                "backup", self.config.wal.max_retained_mb, self._checkpoint_lsn)
                if shipped is not None and shipped < self._checkpoint_lsn:
                    log.warning("WAL waiting for the WAL archive exceeded [wal] max_retained_mb = %d: released "
                                "segments through LSN %d that were not shipped to %s; the archive has a gap "
                                "until the next full backup (check omendb_wal_archive_failures_total)",
                                self.config.wal.max_retained_mb, self._checkpoint_lsn, self.config.wal_archive.url)

    def set_archive_hold(self, lsn: int | None) -> None:
        """The WAL archiver shipped everything through `lsn` (None: nothing is archived from here)."""
        if lsn == self._archive_hold:
            return
        self._archive_hold = lsn
        if not self._closed:
            self._release_wal()

    def restored_in_current_term(self) -> bool:
        """Whether `backup_tool restore` made this database and no promotion changed its term since (the
        restore records the term it continued from; the database runs in the next one)."""
        try:
            info = json.loads((self.data_dir / files.RESTORED_FROM).read_text())
            return int(info["term"]) + 1 == self.term
        except (OSError, ValueError, KeyError, TypeError):
            return False

    def durable_lsn(self) -> int:
        """Sync the WAL and return the newest LSN now durable (also with [wal] sync_on_write = false)."""
        lsn = self._visible_lsn
        if self._wal is not None:
            self._wal.sync_all()
        return lsn

    def encoded_frames_after(self, after_lsn: int, through_lsn: int, max_bytes: int) -> bytes:
        """Frames after `after_lsn` up to `through_lsn` (about `max_bytes`, at least one) as the WAL holds
        them: from memory when recent, else from the segments. They start after after_lsn + 1 when the WAL no
        longer holds that frame, and are empty when it holds none of the range."""
        recent = self.frame_ring.after(after_lsn, through_lsn, max_bytes)
        if recent is not None:
            return recent[0]
        for _ in range(20):
            parts: list[bytes] = []
            size = 0
            try:
                for frame in read_frames(self.wal_dir, after_lsn=after_lsn):
                    if frame.lsn > through_lsn or (parts and size >= max_bytes):
                        break
                    parts.append(encode_frame(frame.lsn, frame.term, frame.commit_us, frame.keys, frame.values))
                    size += len(parts[-1])
            except FileNotFoundError:
                time.sleep(0.02)  # a checkpoint released a segment while it was read
                continue
            return b"".join(parts)
        raise CorruptionError(f"WAL segments in {self.wal_dir} kept disappearing while being read")

    def archived_lsn(self) -> int | None:
        """LSN up to which backups have archived the WAL (None until the first backup)."""
        return files.read_archived(self.wal_dir)

    def mark_archived(self, lsn: int) -> None:
        """Record that backups hold the WAL through `lsn` (called by the backup tool)."""
        files.write_archived(self.wal_dir, lsn)
        self._release_wal()

    @property
    def wal_released_unarchived(self) -> bool:
        """WAL was released before a backup archived it, and no backup has archived past that point since:
        the next backup must be a full backup. Clears itself once a backup (online or offline) catches up."""
        if self._released_through is None:
            return False
        archived = self.archived_lsn()
        return archived is None or archived < self._released_through

    def _wait_for_merge(self) -> None:
        thread = self._merge_thread
        if thread is not None:
            thread.join()

    def checkpoint(self) -> int:
        """Merge the delta into the base and write a checkpoint now; returns the checkpoint LSN."""
        self._check_open()
        with self._merge_lock:
            frozen = self._freeze()
            if frozen is not None or self._checkpoint_lsn != self._view.base.lsn or \
                    not (self.data_dir / MANIFEST).exists():
                self._merge(frozen)
        return self._checkpoint_lsn

    def retrain_index(self) -> dict[str, Any]:
        """Merge the delta and retrain the model now; returns index_stats()."""
        self._check_open()
        with self._merge_lock:
            self._merge(self._freeze())
        return self.index_stats()

    def rebuild_index(self) -> dict[str, Any]:
        """Rebuild the base and model from scratch into fresh compact arrays, releasing freed memory."""
        self._check_open()
        before = self.memory_usage_bytes()
        with self._merge_lock:
            self._merge(self._freeze(), rebuild=True)
        gc.collect()
        stats = self.index_stats()
        stats["memory_before_bytes"], stats["memory_after_bytes"] = before, self.memory_usage_bytes()
        return stats

    def index_stats(self) -> dict[str, Any]:
        base = self._view.base
        index = base.index
        n = len(base.keys)
        # efficiency: share of a binary search's comparisons the model saves on an average lookup:
        # 1 - log2(average search window) / log2(records). 1.0 = exact predictions, 0 = no better than
        # binary search over the whole base.
        window = 2 * index.observed_mean_error + 1
        efficiency = 1.0 - math.log2(window + 1) / math.log2(n + 1) if n > 1 else 1.0
        return {
            "model_type": index.model_type, "keys": n, "leaves": index.leaves, "depth": index.depth,
            "max_error": index.max_error, "observed_max_error": index.observed_max_error,
            "observed_mean_error": round(index.observed_mean_error, 3), "model_bytes": index.model_bytes,
            "delta_size": len(self._active) + (len(self._view.frozen) if self._view.frozen else 0),
            "last_retrain_at": self.last_retrain_at, "last_retrain_seconds": self.last_retrain_seconds,
            "retrains_total": self.retrains_total, "efficiency": round(max(0.0, min(1.0, efficiency)), 4),
        }

    # ---- replication ---------------------------------------------------------------------------------

    def set_read_only(self, reason: str | None) -> None:
        """Refuse (reason given) or accept (None) writes from clients; replicated frames are always applied."""
        self.read_only = reason

    def apply_frames(self, frames: Iterable[Frame]) -> int:
        """Apply WAL frames streamed from the primary, each durably logged here with its own LSN, term and
        commit time. They must continue this database's log without gaps; a frame from an older term is
        refused (Fenced). Returns the LSN reached."""
        for frame in frames:
            self._write(frame.keys, frame.values, replicated=frame)
        return self._lsn

    def promote(self) -> int:
        """Start a new term at the next LSN (a replica becoming the primary); recorded durably before any write
        of the new term, so an old primary's later writes can always be told apart. Returns the new term."""
        with self._write_lock:
            self._check_open()
            self._start_term(self.term + 1, self._lsn + 1)
        self.read_only = None
        return self.term

    @property
    def can_adopt_identity(self) -> bool:
        """An empty database, or one whose identity was only given on upgrade, may take another in place."""
        return (self._lsn == 0 and self._checkpoint_lsn == 0) or self.identity_from_upgrade

    def adopt_identity(self, database_id: str) -> None:
        """Take the primary's identity (a replica is a copy of its primary; the caller checked that this log is
        a prefix of the primary's). Only when can_adopt_identity; otherwise a replica re-seeds from the
        primary's snapshot, which brings the identity along. For the replica's follower thread: no other
        writer may be running."""
        with self._merge_lock, self._write_lock:
            self._check_open()
            if not self.can_adopt_identity:
                raise OmenDBError(f"database {self.database_id} holds writes (LSN {self._lsn}); it cannot take "
                                  f"the identity {database_id} without re-seeding")
            old, empty = self.database_id, self._lsn == 0 and self._checkpoint_lsn == 0
            if self._wal is not None:
                self._wal.close()
                if empty:
                    for _, path in list_segments(self.wal_dir):
                        path.unlink()  # no frames: LSN 0
                    fsync_dir(self.wal_dir)
            manifest = read_manifest(self.data_dir)
            assert manifest is not None  # written at open
            # The MANIFEST first, still accepting the old identity: a crash while segments are relabelled
            # leaves a WAL that recovery accepts and finishes relabelling.
            self.database_id, self.identity_from_upgrade = database_id, False
            write_manifest(self.data_dir, dataclasses.replace(manifest, database_id=database_id,
                                                              previous_database_id=old, identity_from_upgrade=False))
            self._relabel_wal(old)
            if self._wal is not None:
                self._wal = self._open_wal(self._lsn + 1, resume=not empty)
        log.info("took the primary's identity %s (was %s)", database_id, old)

    def _relabel_wal(self, old: str) -> None:
        """Give every segment (and WAL_HEAD) of identity `old` this database's identity, then drop `old` from
        the MANIFEST."""
        for _, path in list_segments(self.wal_dir):
            if read_segment_header(path).database_id == old:
                relabel_segment(path, self.database_id)
        head = read_head(self.data_dir)
        if head is not None:
            self._record_wal_head(head[1])
        manifest = read_manifest(self.data_dir)
        assert manifest is not None
        write_manifest(self.data_dir, dataclasses.replace(manifest, previous_database_id=None))

    def _start_term(self, term: int, first_lsn: int) -> None:
        """Record a new term in the history and the manifest (called with the write lock held)."""
        self.term = term
        self.term_history.append((term, first_lsn))
        manifest = read_manifest(self.data_dir)
        if manifest is not None:
            manifest = dataclasses.replace(manifest, term=term,
                                           term_history=[list(entry) for entry in self.term_history])
        else:
            manifest = Manifest(database=self.config.database.name, checkpoint_lsn=0, term=term, base_file=None,
                                records=0, created_at=time.time(), model_type=self.config.index.model_type,
                                max_error=self.config.index.max_error, index_meta={},
                                term_history=[list(entry) for entry in self.term_history],
                                database_id=self.database_id, wal_dir=str(os.path.abspath(self.wal_dir)))
        write_manifest(self.data_dir, manifest)
        log.warning("term %d starts at LSN %d", term, first_lsn)

    def wait_for_lsn(self, after: int, timeout_s: float) -> int:
        """Block until a batch newer than `after` is visible (or the timeout passes); returns the visible LSN.
        Lets a WAL stream long-poll instead of spinning."""
        deadline = time.monotonic() + timeout_s
        with self._lsn_changed:
            while self._visible_lsn <= after and not self._closed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._lsn_changed.wait(remaining)
        return self._visible_lsn

    # ---- introspection -------------------------------------------------------------------------------

    def memory_usage_bytes(self) -> int:
        view = self._view
        total = view.base.nbytes + self._active.nbytes + self._merge_extra_bytes
        if view.frozen is not None:
            total += view.frozen.nbytes
        return total

    def stats(self) -> dict[str, Any]:
        return {
            "database_id": self.database_id, "records": self.count(), "lsn": self.lsn(),
            "checkpoint_lsn": self._checkpoint_lsn,
            "term": self.term, "term_history": self.term_history, "last_commit_us": self.last_commit_us,
            "memory_usage_bytes": self.memory_usage_bytes(),
            "memory_limit_bytes": self.config.memory_limit_bytes,
            "wal_size_bytes": self._wal.size_bytes() if self._wal else 0,
            "wal_storage_full": bool(self._wal and self._wal.full),
            "index_size_bytes": self._view.base.index.model_bytes,
            "delta_size": self.index_stats()["delta_size"], "retrains_total": self.retrains_total,
            "retrain_seconds_total": self.retrain_seconds_total,
            "archived_lsn": self.archived_lsn(), "wal_released_unarchived": self.wal_released_unarchived,
            "checkpoint_verified": self.checkpoint_verified,
        }

    def check_health(self) -> None:
        """Raise if the engine cannot accept writes: a failed fsync/checkpoint or an unwritable directory."""
        self._check_open()
        if self._wal is not None and self._wal.sync_error is not None:
            raise self._wal.sync_error
        for directory in (self.data_dir, self.wal_dir):
            if not os.access(directory, os.W_OK):
                raise OmenDBError(f"directory {directory} is not writable")

    def wal_full_reason(self) -> str | None:
        """Why the WAL refuses writes for lack of space (bytes or inodes), or None. Not a liveness failure
        (a restart frees nothing): the server reports it through readiness. Probes for freed space, so it
        clears by itself."""
        return self._wal.full_reason() if self._wal is not None else None

    # ---- closing -------------------------------------------------------------------------------------

    def close(self, checkpoint: bool = True) -> None:
        """Sync the WAL, write a checkpoint (so the next open replays nothing) and release the directory."""
        if self._closed:
            return
        try:
            self._wait_for_merge()
            if checkpoint and self._failed is None:
                try:
                    self.checkpoint()
                except StorageFull as exc:
                    log.error("no checkpoint at close (%s); the WAL holds every write and the next open "
                              "replays it", exc.message)
        finally:
            self._closed = True
            if self._verify_thread is not None:
                self._verify_thread.join()
            with self._lsn_changed:
                self._lsn_changed.notify_all()
            if self._wal is not None:
                self._wal.close()
            os.close(self._lock_fd)
            if self._wal_lock_fd >= 0:
                os.close(self._wal_lock_fd)

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
