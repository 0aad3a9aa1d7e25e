"""Format-2 checkpoints copied byte for byte: backups store the engine's checkpoint file as is, and restores
put it back as is, with the WAL after it as a WAL segment the engine replays when it opens.

A format-2 checkpoint is uncompressed columnar data (the values are random doubles, which do not compress),
so recompressing it costs the whole backup's time and gains little, and decoding it into memory to write it
again costs a restore its time and its memory. Instead:

- bytes are copied in large chunks while another thread computes their sha256 (hashlib releases the GIL
  for large buffers, so copy and hash run on two cores);
- the copy's block checksums are checked (zlib releases the GIL too) and the record count and content
  digest at the backup's end are computed by streaming the memory-mapped checkpoint merged with the WAL
  tail, a piece at a time, never the whole state in memory.
"""

from __future__ import annotations

import errno
import hashlib
import os
import zlib
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO, TypeVar

import numpy as np

from omendb.backup.errors import Corrupt
from omendb.backup.manifest import FileEntry
from omendb.backup.payload import RECORD
from omendb.checkpoint import BaseFile
from omendb.runs import EMPTY_RUN, Run, apply_to_base, chunk_bounds, delta_pieces, replay
from omendb.wal import Frame

COPY_CHUNK = 8 << 20  # bytes per read/write: large enough that hashing releases the GIL and syscalls are few
COPY_BUFFERS = 4  # chunks in flight between the copy and the hashing thread (bounds memory: 32 MiB)
DIGEST_PIECE = 1 << 20  # records merged and hashed at a time by stream_digest
T = TypeVar("T")
_NO_KERNEL_COPY = (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EBADF)


def copy_file(src: Path | BinaryIO, dst: Path, progress: Callable[[int], None] | None = None) -> int:
    """Copy `src` (a path, or a file open for reading at its start) into a new file `dst` inside the kernel
    (copy_file_range: no pass through this process, and a reflink where the filesystem shares extents);
    returns the size. Not yet durable: see BackgroundSync. Falls back to reading and writing where the
    kernel cannot copy between the two files."""
    if isinstance(src, Path):
        with open(src, "rb", buffering=0) as f:
            return copy_file(f, dst, progress)
    fd_in = src.fileno()
    size = os.fstat(fd_in).st_size
    fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
    try:
        done = 0
        try:
            while done < size:
                n = os.copy_file_range(fd_in, fd, min(size - done, 1 << 30), done, done)
                if n == 0:
                    break
                done += n
                if progress is not None:
                    progress(n)
        except OSError as exc:
            if exc.errno not in _NO_KERNEL_COPY or done:
                raise
            buffer = memoryview(bytearray(COPY_CHUNK))
            while n := os.preadv(fd_in, [buffer], done):
                written = 0
                while written < n:
                    written += os.write(fd, buffer[written:n])
                done += n
                if progress is not None:
                    progress(n)
    finally:
        os.close(fd)
    return done


class BackgroundSync:
    """fsync of a file on another thread (it releases the GIL), so the disk writes it back while this
    process checks what it copied; `wait()` returns once it is durable, raising what fsync raised."""

    def __init__(self, path: Path) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="omendb-fsync")
        self._future = self._pool.submit(self._sync, path)

    @staticmethod
    def _sync(path: Path) -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def wait(self) -> None:
        try:
            self._future.result()
        finally:
            self._pool.shutdown()


def sha256_file(path: Path) -> tuple[int, str]:
    """(size, sha256 hex) of a file, read in large chunks (hashlib releases the GIL meanwhile)."""
    sha = hashlib.sha256()
    size = 0
    buffer = memoryview(bytearray(COPY_CHUNK))
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buffer):
            sha.update(buffer[:n])
            size += n
    return size, sha.hexdigest()


def copy_checked(src: Path, dst: Path, entry: FileEntry, alongside: Callable[[], T],
                 progress: Callable[[int], None] | None = None) -> tuple[T, BackgroundSync]:
    """Put a stored snapshot file back as a checkpoint at `dst` and check the stored file's size and sha256
    against its manifest entry: a checkpoint stored as is is copied (and the copy hashed), a packed one
    (columns.CODEC) is unpacked while another thread hashes the stored file. `alongside()` (checks of the
    checkpoint written) runs on this thread meanwhile. A sha256 mismatch raises Corrupt (before whatever
    unpacking or `alongside` raised: a damaged file is the cause) and removes `dst`. Returns what `alongside`
    returned and the checkpoint's fsync, still running: wait for it before committing."""
    from omendb.backup import columns

    if not src.is_file():
        raise Corrupt(f"{src} is missing (the manifest lists it); this backup is damaged")
    failure: BaseException | None = None
    sync: BackgroundSync | None = None
    try:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="omendb-sha256") as pool:
            if entry.codec == columns.CODEC:
                hashed = pool.submit(sha256_file, src)
                try:
                    columns.unpack(src, dst, progress)
                except BaseException as exc:  # reported after the sha256 verdict
                    failure = exc
            else:
                copy_file(src, dst, progress)
                hashed = pool.submit(sha256_file, dst)
            if failure is None:
                sync = BackgroundSync(dst)
                try:
                    result = alongside()
                except BaseException as exc:  # reported after the sha256 verdict
                    failure = exc
            size, sha = hashed.result()
        if size != entry.size or sha != entry.sha256:
            raise Corrupt(f"{src}: size or sha256 mismatch (the file was modified or damaged); this backup is "
                          "damaged")
        if failure is not None:
            raise failure
    except BaseException:
        if sync is not None:
            sync.wait()
        dst.unlink(missing_ok=True)
        raise
    assert sync is not None
    return result, sync


def verify_blocks(base: BaseFile, workers: int | None = None) -> None:
    """Every block checksum of a mapped base file (BaseFile.verify's check), the blocks split across cores
    (zlib releases the GIL); raises Corrupt naming the first bad block found."""
    workers = workers or os.cpu_count() or 1
    blocks, bs = len(base.crcs), base.block_size
    step = max(1, -(-blocks // workers))
    columns = (("keys", base.keys), ("values", base.values), ("LSNs", base.lsns))

    def part(first: int) -> None:
        for block in range(first, min(first + step, blocks)):
            lo, hi = block * bs, (block + 1) * bs
            for c, (name, column) in enumerate(columns):
                if zlib.crc32(column[lo:hi].data) != int(base.crcs[block, c]):
                    raise Corrupt(f"{base.path}: block {block} (records {lo} to {min(hi, len(base.keys)) - 1}) "
                                  f"of the {name} fails its checksum; this checkpoint is damaged")

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="omendb-crc") as pool:
        for future in [pool.submit(part, first) for first in range(0, blocks, step)]:
            future.result()


def delta_of(frames: Iterable[Frame]) -> Run:
    """The combined effect of WAL frames (in LSN order): the latest entry per key, deletes included (the
    engine's own WAL replay, runs.replay)."""
    return replay(frames, lambda _frame: None) or EMPTY_RUN


def record_piece(keys: np.ndarray, values: np.ndarray, lsns: np.ndarray, delta: Run) -> np.ndarray:
    """The records (payload.RECORD) of a piece of the base with `delta` applied. When the delta only
    overwrites keys the piece holds (a WAL tail of updates, the common case), the values are patched in
    place after one packing pass; otherwise the engine's own merge (runs.apply_to_base) builds the piece."""
    if len(delta):
        pos = np.searchsorted(keys, delta.keys)
        clipped = np.minimum(pos, max(len(keys) - 1, 0))
        if len(keys) and bool(delta.live.all()) and bool((keys[clipped] == delta.keys).all()):
            rec = np.empty(len(keys), dtype=RECORD)
            rec["key"] = keys
            rec["value"] = values
            rec["value"][pos] = delta.values
            return rec
        keys, values, _ = apply_to_base(keys, values, lsns, delta)
    rec = np.empty(len(keys), dtype=RECORD)
    rec["key"] = keys
    rec["value"] = values
    return rec


def stream_digest(keys: np.ndarray, values: np.ndarray, lsns: np.ndarray, delta: Run) -> tuple[int, str]:
    """(records, payload.state_digest) of the base with `delta` applied, computed a piece at a time: the
    merge and packing run in this thread while another hashes the previous piece."""
    sha = hashlib.sha256()
    records = 0
    pending: Future[None] | None = None
    bounds = chunk_bounds(keys, [delta], DIGEST_PIECE)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="omendb-digest") as hasher:
        for part, piece in delta_pieces(keys, [delta], bounds):
            rec = record_piece(keys[part], values[part], lsns[part], piece)
            records += len(rec)
            if pending is not None:
                pending.result()
            pending = hasher.submit(sha.update, rec.view(np.uint8).data)
        if pending is not None:
            pending.result()
    return records, sha.hexdigest()
