"""The write-ahead log: segment files of checksummed frames, one frame per committed batch.

Segment ``<first-lsn>.wal`` = a 56-byte header (magic, format version, the database's identity, the segment's
first LSN, the term it was started in, crc32 of the header) followed by frames; segments of the previous
release have a 16-byte header (magic, version 1) and are still read, once, on upgrade. A frame is a
36-byte header ``magic, payload length, LSN, term, commit time (µs), crc32`` and a payload ``op, count,
keys[count] (int64), values[count] (float64, puts only)``. The crc covers the header fields and the
payload. Segments rotate by size or age; a segment is fsynced before the next one is created, so only
the last segment can end in a torn frame.

Group commit: writers append under a short lock and then call ``sync(ticket)``; the first writer to take
the sync lock fsyncs everything appended so far, and the writers queued behind it find their bytes
already durable.
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from omendb.errors import CorruptionError, OmenDBError, StorageFull, is_storage_full
from omendb.files import SPACE_PROBE, fsync_dir, list_segments, segment_name
from omendb.loglevels import TRACE

log = logging.getLogger("omendb.wal")

SEGMENT_MAGIC = b"OMWALSEG"
SEGMENT_HEADER_V1 = struct.Struct("<8sII")  # previous release: magic, format version, reserved
SEGMENT_HEADER = struct.Struct("<8sII16sqqI4x")  # magic, version, reserved, database id, first LSN, term, crc32
SEGMENT_VERSION = 2
FRAME_MAGIC = b"OMF1"
FRAME_HEADER = struct.Struct("<4sIqqqI")  # magic, payload length, lsn, term, commit µs, crc32
PAYLOAD_HEADER = struct.Struct("<BxxxxxxxQ")  # op, count (8-byte aligned arrays follow)
OP_PUT = 1
OP_DELETE = 2


class WalWriteError(OmenDBError):
    code = "wal_write_failed"


class WalSyncFull(WalWriteError, StorageFull):
    """fsync of the WAL reported a full volume: permanent for the process like any failed fsync."""

    code = "insufficient_storage"




@dataclass(frozen=True)
class Frame:
    lsn: int
    term: int
    commit_us: int
    op: int
    keys: np.ndarray
    values: np.ndarray | None  # None for deletes

    @property
    def payload_bytes(self) -> int:
        return PAYLOAD_HEADER.size + self.keys.nbytes + (self.values.nbytes if self.values is not None else 0)


def encode_frame(lsn: int, term: int, commit_us: int, keys: np.ndarray, values: np.ndarray | None) -> bytes:
    op = OP_PUT if values is not None else OP_DELETE
    parts = [PAYLOAD_HEADER.pack(op, len(keys)), keys.tobytes()]
    if values is not None:
        parts.append(values.tobytes())
    payload = b"".join(parts)
    head = FRAME_HEADER.pack(FRAME_MAGIC, len(payload), lsn, term, commit_us, 0)[:-4]
    crc = zlib.crc32(payload, zlib.crc32(head))
    return head + struct.pack("<I", crc) + payload


@dataclass(frozen=True)
class SegmentHeader:
    """Who wrote a segment and where it starts: recovery refuses a segment of another database, or one
    whose first LSN does not continue the chain."""

    version: int
    database_id: str | None  # None: a previous-release (version 1) segment, which carries no identity
    first_lsn: int | None
    term: int | None

    @property
    def size(self) -> int:
        return SEGMENT_HEADER.size if self.version == SEGMENT_VERSION else SEGMENT_HEADER_V1.size


def pack_segment_header(database_id: str, first_lsn: int, term: int) -> bytes:
    ident = uuid.UUID(database_id).bytes
    head = SEGMENT_HEADER.pack(SEGMENT_MAGIC, SEGMENT_VERSION, 0, ident, first_lsn, term, 0)
    crc = zlib.crc32(head[:SEGMENT_HEADER.size - 8])
    return SEGMENT_HEADER.pack(SEGMENT_MAGIC, SEGMENT_VERSION, 0, ident, first_lsn, term, crc)


def parse_segment_header(data: bytes, path: Path) -> SegmentHeader:
    """The header at the start of `data` (a segment's bytes); CorruptionError naming the file if damaged."""
    if len(data) < SEGMENT_HEADER_V1.size:
        raise CorruptionError(f"WAL segment {path} is shorter than its header; {_REMEDY}")
    magic, version, _ = SEGMENT_HEADER_V1.unpack_from(data, 0)
    if magic != SEGMENT_MAGIC:
        raise CorruptionError(f"{path} at offset 0: not an OmenDB WAL segment (bad magic); {_REMEDY}")
    if version == 1:
        return SegmentHeader(1, None, None, None)
    if version != SEGMENT_VERSION:
        raise CorruptionError(f"{path}: WAL format version {version} is not supported by this OmenDB "
                              f"(supports 1 and {SEGMENT_VERSION}); run the OmenDB version that wrote it")
    if len(data) < SEGMENT_HEADER.size:
        raise CorruptionError(f"WAL segment {path} is shorter than its header; {_REMEDY}")
    _, _, _, ident, first_lsn, term, crc = SEGMENT_HEADER.unpack_from(data, 0)
    if zlib.crc32(bytes(data[:SEGMENT_HEADER.size - 8])) != crc:
        raise CorruptionError(f"{path} at offset 0: WAL segment header checksum mismatch; {_REMEDY}")
    return SegmentHeader(version, str(uuid.UUID(bytes=ident)), first_lsn, term)


def relabel_segment(path: Path, database_id: str) -> None:
    """Rewrite a segment's header (same size, same first LSN and term) with another identity, durably."""
    header = read_segment_header(path)
    assert header.first_lsn is not None and header.term is not None
    with open(path, "r+b") as f:
        f.write(pack_segment_header(database_id, header.first_lsn, header.term))
        f.flush()
        os.fsync(f.fileno())


def read_segment_header(path: Path) -> SegmentHeader:
    with open(path, "rb") as f:
        return parse_segment_header(f.read(SEGMENT_HEADER.size), path)


_REMEDY = ("restore from the latest backup (backup_tool restore --backup-id latest --force), or move the "
           "damaged segment and everything after it aside to start from the last good LSN, accepting the loss "
           "of the writes it holds")


def read_segment(path: Path, is_last: bool, report: bool = True) -> tuple[list[Frame], int | None]:
    """Frames of one segment, and the offset to truncate it to when its tail is torn (None if intact).

    A torn tail (a partial or checksum-failing final frame of the last segment, with nothing valid after it)
    is expected after a crash; any other damage raises CorruptionError naming the file and offset. `report`
    logs what a torn tail means (recovery); readers of a live WAL pass False: there a "torn" tail is usually
    a frame still being written."""
    data = path.read_bytes()
    if len(data) < SEGMENT_HEADER_V1.size and is_last:
        return [], 0  # created, but the crash came before its header reached the disk
    header = parse_segment_header(data, path)
    frames, offset, problem = decode_frames(data, str(path), header.size)
    if problem is None:
        return frames, None
    if is_last and _nothing_valid_after(data, offset):
        if not report:
            return frames, offset
        if problem == "checksum mismatch":
            # The frame is all there: it may have been fsynced and acknowledged, then damaged on disk. Only a
            # short frame is provably a write that never completed.
            last = frames[-1].lsn if frames else None
            log.error("WAL %s: the final frame at offset %d (after LSN %s) is complete but fails its checksum; "
                      "it is dropped. It may have been acknowledged to a client before it was damaged: if "
                      "that write matters, compare with a replica or the latest backup", path, offset, last)
        else:
            log.warning("WAL %s: truncating torn tail at offset %d (%s, %d bytes): a write that never "
                        "completed, so it was never acknowledged", path, offset, problem, len(data) - offset)
        return frames, offset
    raise CorruptionError(f"WAL segment {path} is corrupt at offset {offset} ({problem}); {_REMEDY}")


def decode_frames(data: bytes | memoryview, where: str, start: int = 0) -> tuple[list[Frame], int, str | None]:
    """Decode concatenated frames from `start` until the end or the first damaged/incomplete frame.

    Returns (frames, offset reached, problem or None). Callers decide what a problem means: a torn tail in
    the last WAL segment, damage in a backup, or simply the part of a network stream not received yet."""
    frames: list[Frame] = []
    offset = start
    view = memoryview(data)
    while offset < len(view):
        if len(view) - offset < FRAME_HEADER.size:
            return frames, offset, "incomplete frame header"
        magic, length, lsn, term, commit_us, crc = FRAME_HEADER.unpack_from(view, offset)
        end = offset + FRAME_HEADER.size + length
        if magic != FRAME_MAGIC:
            return frames, offset, "bad frame magic"
        if end > len(view):
            return frames, offset, "incomplete frame payload"
        payload = view[offset + FRAME_HEADER.size:end]
        if zlib.crc32(payload, zlib.crc32(view[offset:offset + FRAME_HEADER.size - 4])) != crc:
            return frames, offset, "checksum mismatch"
        frames.append(_decode_payload(where, offset, lsn, term, commit_us, bytes(payload)))
        offset = end
    return frames, offset, None


def frames_span(data: bytes | memoryview) -> tuple[int, int, int, int]:
    """(first LSN, last LSN, first term, last term) of concatenated, already checked frames."""
    view = memoryview(data)
    first: tuple[int, int] | None = None
    offset = 0
    while offset < len(view):
        _, length, lsn, term, _, _ = FRAME_HEADER.unpack_from(view, offset)
        first = first or (lsn, term)
        offset += FRAME_HEADER.size + length
    assert first is not None, "frames_span of no frames"
    return first[0], lsn, first[1], term


def _nothing_valid_after(data: bytes, offset: int) -> bool:
    """True when no intact frame starts after `offset`: damage there is a torn tail, not corruption."""
    search = offset + 1
    while True:
        found = data.find(FRAME_MAGIC, search)
        if found < 0 or len(data) - found < FRAME_HEADER.size:
            return True
        _, length, _, _, _, crc = FRAME_HEADER.unpack_from(data, found)
        end = found + FRAME_HEADER.size + length
        if end <= len(data):
            payload = data[found + FRAME_HEADER.size:end]
            if zlib.crc32(payload, zlib.crc32(data[found:found + FRAME_HEADER.size - 4])) == crc:
                return False
        search = found + 1


def _decode_payload(where: str, offset: int, lsn: int, term: int, commit_us: int, payload: bytes) -> Frame:
    op, count = PAYLOAD_HEADER.unpack_from(payload, 0)
    expected = PAYLOAD_HEADER.size + count * (16 if op == OP_PUT else 8)
    if op not in (OP_PUT, OP_DELETE) or expected != len(payload):
        raise CorruptionError(f"WAL {where} at offset {offset}: frame for LSN {lsn} has a valid checksum "
                              f"but an impossible payload (op {op}, {count} records); {_REMEDY}")
    keys = np.frombuffer(payload, dtype=np.int64, count=count, offset=PAYLOAD_HEADER.size)
    values = None
    if op == OP_PUT:
        values = np.frombuffer(payload, dtype=np.float64, count=count, offset=PAYLOAD_HEADER.size + 8 * count)
    return Frame(lsn, term, commit_us, op, keys, values)


def read_frames(wal_dir: Path, after_lsn: int, repair: bool = False) -> Iterator[Frame]:
    """Every frame with LSN > after_lsn, in order, checking that LSNs are contiguous. With repair=True a
    torn tail of the last segment is truncated on disk (recovery); otherwise it is just not returned."""
    segments = list_segments(wal_dir)
    expected: int | None = None
    for i, (_first_lsn, path) in enumerate(segments):
        is_last = i == len(segments) - 1
        if not is_last and segments[i + 1][0] <= after_lsn + 1:
            continue  # wholly before the point we replay from
        frames, truncate_at = read_segment(path, is_last, report=repair)
        if truncate_at is not None and repair:
            with open(path, "r+b") as f:
                f.truncate(truncate_at)
                f.flush()
                os.fsync(f.fileno())
        for frame in frames:
            # A gap among frames the checkpoint covers is harmless (a crash may lose a WAL tail that the
            # checkpoint already holds, and the log then continues in a new segment after the checkpoint).
            if expected is not None and frame.lsn != expected and frame.lsn > after_lsn + 1:
                raise CorruptionError(f"WAL segment {path}: LSN {frame.lsn} follows LSN {expected - 1}; "
                                      f"frames are missing; {_REMEDY}")
            expected = frame.lsn + 1
            if frame.lsn > after_lsn:
                yield frame


class WalWriter:
    """Appends frames to the newest segment, rotates segments and makes appended bytes durable."""

    def __init__(self, wal_dir: Path, next_lsn: int, *, max_file_bytes: int, rotation_seconds: float,
                 sync_interval_s: float | None, database_id: str, term: Callable[[], int] = lambda: 1,
                 on_new_segment: Callable[[int], None] | None = None, resume: bool = True) -> None:
        """`resume`: append to the newest segment (it ends right before `next_lsn`); otherwise start a new
        segment at `next_lsn`. `on_new_segment(first_lsn)` runs once each new segment is durable."""
        self.dir = wal_dir
        self.database_id, self._term, self._on_new_segment = database_id, term, on_new_segment
        self.max_file_bytes = max_file_bytes
        self.rotation_seconds = rotation_seconds
        self._append_lock = threading.Lock()
        self._sync_lock = threading.Lock()
        self._written = 0  # bytes appended since open, across segments: the group-commit ticket
        self._synced = 0
        self._fd = -1
        self._size = 0
        self._opened_at = 0.0
        self._closed = False
        self._sync_error: WalWriteError | None = None  # after a failed fsync, never trust a later one
        # (reason, bytes the failed append needed, the full directory) while out of space
        self._full: tuple[str, int, Path] | None = None
        self.dir.mkdir(parents=True, exist_ok=True)
        segments = list_segments(self.dir)
        if segments and resume:
            self._open_existing(*segments[-1])
        else:
            self._start_segment(next_lsn)
        self._syncer: threading.Thread | None = None
        if sync_interval_s is not None:
            self._stop = threading.Event()
            self._syncer = threading.Thread(target=self._sync_loop, args=(sync_interval_s,),
                                            name="omendb-wal-sync", daemon=True)
            self._syncer.start()

    def _open_existing(self, first_lsn: int, path: Path) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        self._size = os.fstat(self._fd).st_size
        if self._size < SEGMENT_HEADER.size:  # created but its header never made it to disk
            os.ftruncate(self._fd, 0)
            os.write(self._fd, self._segment_header(first_lsn))
            os.fsync(self._fd)
            self._size = SEGMENT_HEADER.size
        self._opened_at = time.monotonic()

    def _segment_header(self, first_lsn: int) -> bytes:
        return pack_segment_header(self.database_id, first_lsn, self._term())

    def _start_segment(self, first_lsn: int) -> None:
        path = self.dir / segment_name(first_lsn)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o640)
        try:
            os.write(fd, self._segment_header(first_lsn))
            os.fsync(fd)
            fsync_dir(self.dir)
            if self._on_new_segment is not None:
                self._on_new_segment(first_lsn)  # e.g. record the WAL's head, so a lost newest segment is noticed
        except BaseException as exc:
            if getattr(exc, "segment_recorded", False):
                # The head already names this segment (only a step after its record failed): it must stay,
                # and it is where the log goes on.
                self._fd, self._size, self._opened_at = fd, SEGMENT_HEADER.size, time.monotonic()
                raise
            # Out of space (or inodes) half-way: leave no segment behind that nothing names, so the retry
            # starts clean and recovery never meets an empty newest segment.
            os.close(fd)
            with contextlib.suppress(OSError):
                path.unlink()
            raise
        self._fd, self._size, self._opened_at = fd, SEGMENT_HEADER.size, time.monotonic()

    def append(self, frame: bytes, lsn: int) -> int:
        """Write a frame (not yet durable); returns the ticket to pass to sync()."""
        with self._append_lock:
            if self._closed:
                raise WalWriteError("the WAL is closed")
            if self._sync_error is not None:
                raise self._sync_error
            rotating = self._size > SEGMENT_HEADER.size and (
                self._size + len(frame) > self.max_file_bytes
                or time.monotonic() - self._opened_at > self.rotation_seconds)
            try:
                if rotating:
                    self._rotate(lsn)
                view = memoryview(frame)
                while view:
                    view = view[os.write(self._fd, view):]
            except OSError as exc:
                # Take back the partial frame so the log stays well-formed, then report. A failed rotation
                # left the old segment open: the next append simply tries the rotation again.
                with contextlib.suppress(OSError):
                    os.ftruncate(self._fd, self._size)
                needed = len(frame) + (SEGMENT_HEADER.size if rotating else 0)
                raise self._append_failed(exc, needed) from exc
            self._size += len(frame)
            self._written += len(frame)
            if self._full is not None:
                log.warning("the WAL in %s accepts writes again", self.dir)
                self._full = None
            return self._written

    def _append_failed(self, exc: OSError, needed: int) -> OmenDBError:
        if not is_storage_full(exc):
            return WalWriteError(f"could not write to the WAL in {self.dir}: {exc.strerror}; nothing was "
                                 f"applied")
        # Mostly the WAL's own volume; a rotation also records the WAL's head in the data directory.
        where = Path(exc.filename).parent if exc.filename and Path(exc.filename).parent != self.dir else self.dir
        reason = f"the WAL cannot be written: {exc.strerror} on the volume of {where}"
        if self._full is None:
            log.warning("%s; writes are refused (507) until space is freed", reason)
        self._full = (reason, needed, where)
        return StorageFull(f"{reason}; free space on it or expand the volume — writes resume by themselves "
                           f"once there is room. Nothing of this batch was applied")

    def full_reason(self) -> str | None:
        """Why appends fail for lack of space (bytes or inodes), or None. While full, probes whether space
        was freed by creating a scratch file as large as the failed append, so the answer clears by itself
        even when no write comes (a not-ready server gets no traffic to retry with)."""
        full = self._full
        if full is None:
            return None
        reason, needed, where = full
        probe = where / SPACE_PROBE  # scratch file: does a full WAL volume have room again?
        try:
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.posix_fallocate(fd, 0, needed)
            finally:
                os.close(fd)
        except OSError:
            return reason
        finally:
            with contextlib.suppress(OSError):
                probe.unlink()
        with self._append_lock:
            if self._full is full:
                self._full = None
        log.warning("the volume of %s has room again", where)
        return None

    @property
    def full(self) -> bool:
        """The last append failed for lack of space and no append or probe has succeeded since."""
        return self._full is not None

    @property
    def sync_error(self) -> WalWriteError | None:
        """The failed fsync that stopped this writer for good, or None."""
        return self._sync_error

    def _fsync_failed(self, exc: OSError) -> WalWriteError:
        # Linux may report a failed writeback once and then succeed on the next fsync with the data gone
        # (PostgreSQL's "fsyncgate"), so the failure is permanent for this process — a full volume
        # included: pages that could not be written back may already be dropped.
        if is_storage_full(exc):
            self._sync_error = WalSyncFull(
                f"fsync of the WAL in {self.dir} failed: {exc.strerror}; the database stops accepting writes "
                f"and must be restarted to recover from the WAL (whether this batch survives is unknown). "
                f"Free space on the WAL volume or expand it")
        else:
            self._sync_error = WalWriteError(f"fsync of the WAL in {self.dir} failed: {exc.strerror}; the "
                                             f"database stops accepting writes and must be restarted to "
                                             f"recover from the WAL")
        return self._sync_error

    def _rotate(self, next_lsn: int) -> None:
        log.debug("WAL: rotating to a new segment at LSN %d in %s", next_lsn, self.dir)
        try:
            os.fsync(self._fd)  # the old segment is complete and durable before the new one exists
        except OSError as exc:
            raise self._fsync_failed(exc) from exc
        old = self._fd
        # The new segment is created and prepared before the old descriptor is closed: if that fails (no
        # space, no inodes) the writer still holds a good segment and the next append retries.
        try:
            self._start_segment(next_lsn)
        finally:
            if self._fd != old:  # switched (also when only a step after the head's record failed)
                os.close(old)

    def sync(self, ticket: int) -> None:
        """Make every byte up to `ticket` durable, sharing one fsync among concurrent callers."""
        if self._synced >= ticket:
            return
        with self._sync_lock:
            if self._sync_error is not None:
                raise self._sync_error
            if self._synced >= ticket:
                return
            with self._append_lock:
                target = self._written
                fd = os.dup(self._fd)  # survives a concurrent rotation closing the original
            try:
                os.fsync(fd)
                log.log(TRACE, "WAL: fsync through byte %d (group commit)", target)
            except OSError as exc:
                raise self._fsync_failed(exc) from exc
            finally:
                os.close(fd)
            self._synced = target

    def sync_all(self) -> None:
        """Make every byte appended so far durable."""
        self.sync(self._written)

    def _sync_loop(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self.sync(self._written)
            except WalWriteError as exc:
                log.error("background WAL sync failed: %s", exc.message)
                return

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for _, p in list_segments(self.dir))

    def remove_through(self, lsn: int) -> list[Path]:
        """Delete segments whose frames all have LSN <= lsn (never the segment being written)."""
        removed = []
        with self._append_lock:
            segments = list_segments(self.dir)
            for (_first, path), (next_first, _) in zip(segments, segments[1:], strict=False):
                if next_first - 1 <= lsn:
                    path.unlink()
                    removed.append(path)
            if removed:
                fsync_dir(self.dir)
        return removed

    def close(self) -> None:
        if self._syncer is not None:
            self._stop.set()
            self._syncer.join()
        with self._append_lock:
            if not self._closed:
                self._closed = True
                os.fsync(self._fd)
                os.close(self._fd)
