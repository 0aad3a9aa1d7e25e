"""Backup payload: zstandard files checksummed while written, WAL frames as bytes, and database state.

The state of a database at an LSN is three sorted arrays (keys, values, the LSN that wrote each record).
A backup's snapshot is the source's checkpoint file; its WAL payload is the frames after it, byte for byte
as the engine encodes them (each frame keeps its own crc32).
"""

from __future__ import annotations

import hashlib
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

import numpy as np
import zstandard

from omendb import wal
from omendb.backup.errors import Corrupt
from omendb.backup.manifest import FileEntry
from omendb.errors import CorruptionError
from omendb.runs import apply_to_base, replay
from omendb.wal import Frame, encode_frame

CHUNK = 1 << 20
ZSTD_LEVEL = 3


class _HashingFile:
    """A write-only file that counts and hashes what goes to disk (the compressed bytes). With `threaded`,
    large immutable chunks are hashed by another thread while the next ones are read and written (hashlib
    releases the GIL for large buffers): a verbatim copy then runs at the speed of the slower of the two."""

    MAX_PENDING = 16  # chunks queued for hashing (bounds memory)

    def __init__(self, f: IO[bytes], threaded: bool = False) -> None:
        self.f, self.sha, self.size = f, hashlib.sha256(), 0
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="omendb-sha256") if threaded else None
        self._pending: deque[Future[None]] = deque()

    def write(self, data: Any) -> int:
        if self._pool is not None and isinstance(data, bytes) and len(data) >= 1 << 16:
            self._pending.append(self._pool.submit(self.sha.update, data))  # one worker: hashed in order
            if len(self._pending) > self.MAX_PENDING:
                self._pending.popleft().result()
        else:
            self._drain()
            self.sha.update(data)
        self.size += len(data)
        return self.f.write(data)

    def _drain(self) -> None:
        while self._pending:
            self._pending.popleft().result()

    def finish(self) -> str:
        """Wait for every queued chunk; the sha256 of everything written."""
        self._drain()
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
        return self.sha.hexdigest()

    def flush(self) -> None:
        self.f.flush()


class PayloadWriter:
    """Writes one compressed payload file; ``close()`` fsyncs it and returns its manifest entry."""

    def __init__(self, path: Path, level: int = ZSTD_LEVEL, compress: bool = True) -> None:
        self.path = path
        self._file = open(path, "xb")  # noqa: SIM115 - closed in close()
        self._hashing = _HashingFile(self._file, threaded=not compress)
        self.codec = "zstd" if compress else "none"
        self._zstd: Any = None
        if compress:
            self._zstd = zstandard.ZstdCompressor(level=level).stream_writer(cast(IO[bytes], self._hashing),
                                                                             closefd=False)
        self.raw_size = 0
        self.on_progress: Callable[[int], None] | None = None

    def write(self, data: bytes | memoryview) -> None:
        (self._zstd or self._hashing).write(data)
        self.raw_size += len(data)
        if self.on_progress is not None:
            self.on_progress(len(data))

    def close(self) -> FileEntry:
        if self._zstd is not None:
            self._zstd.flush(zstandard.FLUSH_FRAME)
            self._zstd.close()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        return FileEntry(self.path.name, self._hashing.size, self._hashing.finish(), self.raw_size, self.codec)


def check_file(path: Path, entry: FileEntry) -> None:
    """Size and sha256 of a stored payload file against its manifest entry."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise Corrupt(f"{path} is missing (the manifest lists it); this backup is damaged") from None
    if size != entry.size:
        raise Corrupt(f"{path} is {size} bytes, the manifest says {entry.size}; this backup is damaged")
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            sha.update(chunk)
    if sha.hexdigest() != entry.sha256:
        raise Corrupt(f"{path}: sha256 mismatch (the file was modified or damaged); this backup is damaged")


def read_checked(path: Path, entry: FileEntry) -> Iterator[bytes]:
    """Decompressed content of a payload file in chunks. The sha256 of the stored bytes is checked as they
    are read and a mismatch raises at the end, so callers must not commit anything before exhausting this."""
    sha = hashlib.sha256()
    size = 0
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        raise Corrupt(f"{path} is missing (the manifest lists it); this backup is damaged") from None
    with f:
        reader: Any = _HashingReader(f, sha)
        if entry.codec == "zstd":
            reader = zstandard.ZstdDecompressor().stream_reader(cast(IO[bytes], reader),
                                                                read_across_frames=True)
        elif entry.codec != "none":
            raise Corrupt(f"{path}: unknown codec {entry.codec!r} in the manifest; use a newer backup_tool")
        raw = 0
        try:
            while chunk := reader.read(CHUNK):
                raw += len(chunk)
                yield chunk
        except zstandard.ZstdError as exc:
            raise Corrupt(f"{path}: not a valid zstandard stream ({exc}); this backup is damaged") from None
        size = f.tell()
    if size != entry.size or sha.hexdigest() != entry.sha256 or raw != entry.raw_size:
        raise Corrupt(f"{path}: size or sha256 mismatch (the file was modified or damaged); this backup is "
                      f"damaged")


class _HashingReader:
    def __init__(self, f: IO[bytes], sha: Any) -> None:
        self.f, self.sha = f, sha

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        self.sha.update(data)
        return data


# ---- WAL frames ------------------------------------------------------------------------------------------


def frame_bytes(frame: Frame) -> bytes:
    return encode_frame(frame.lsn, frame.term, frame.commit_us, frame.keys, frame.values)


def decode_frames(data: bytes, where: str) -> list[Frame]:
    """Every frame of a buffer of concatenated frames; any damage (a backup has no torn tail) raises."""
    try:
        frames, offset, problem = wal.decode_frames(data, where)
    except CorruptionError as exc:
        raise Corrupt(str(exc)) from None
    if problem is not None:
        raise Corrupt(f"{where} at offset {offset}: WAL frame {problem}; this backup is damaged")
    return frames


def check_contiguous(frames: list[Frame], after_lsn: int, where: str) -> None:
    expected = after_lsn + 1
    for frame in frames:
        if frame.lsn != expected:
            raise Corrupt(f"{where}: WAL frame LSN {frame.lsn} where {expected} was expected; the backup "
                          "chain is broken")
        expected += 1


# ---- state -----------------------------------------------------------------------------------------------


@dataclass
class State:
    keys: np.ndarray  # int64, sorted, unique
    values: np.ndarray  # float64
    lsns: np.ndarray  # int64
    lsn: int
    term: int

    def apply(self, frames: Iterable[Frame]) -> None:
        """Apply frames (in LSN order, starting right after self.lsn); later writes win, deletes remove."""
        def seen(frame: Frame) -> None:
            self.lsn, self.term = frame.lsn, max(self.term, frame.term)
        delta = replay(frames, seen)  # the engine's recovery replays the same way
        if delta is not None:
            self.keys, self.values, self.lsns = apply_to_base(self.keys, self.values, self.lsns, delta)

    def digest(self) -> str:
        return state_digest(self.keys, self.values)


RECORD = np.dtype([("key", "<i8"), ("value", "<f8")])


def state_digest(keys: np.ndarray, values: np.ndarray) -> str:
    """sha256 over the live records in key order, 16 bytes each (key int64 LE, value float64 LE)."""
    sha = hashlib.sha256()
    step = 1 << 18
    for start in range(0, len(keys), step):
        rec = np.empty(min(step, len(keys) - start), dtype=RECORD)
        rec["key"] = keys[start:start + step]
        rec["value"] = values[start:start + step]
        sha.update(rec.tobytes())
    return sha.hexdigest()

