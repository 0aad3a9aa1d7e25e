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

import hashlib
import os
import zlib
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from omendb.backup.errors import Corrupt
from omendb.backup.manifest import FileEntry
from omendb.backup.payload import RECORD
from omendb.checkpoint import BaseFile
from omendb.runs import EMPTY_RUN, Run, chunk_bounds, latest_per_key, merge_chunks
from omendb.wal import Frame

COPY_CHUNK = 8 << 20  # bytes per read/write: large enough that hashing releases the GIL and syscalls are few
COPY_BUFFERS = 4  # chunks in flight between the copy and the hashing thread (bounds memory: 32 MiB)
DIGEST_PIECE = 1 << 20  # records merged and hashed at a time by stream_digest


def copy_hashed(read_into: Callable[[memoryview], int], path: Path,
                progress: Callable[[int], None] | None = None) -> tuple[int, str]:
    """Copy everything `read_into` yields into a new file at `path` (created, fsynced); returns (size, sha256
    hex). `read_into(buffer)` fills a buffer and returns the byte count (0 at the end), like readinto."""
    sha = hashlib.sha256()
    buffers = [bytearray(COPY_CHUNK) for _ in range(COPY_BUFFERS)]
    pending: list[Future[None] | None] = [None] * COPY_BUFFERS
    size = 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
    try:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="omendb-sha256") as hasher:
            i = 0
            while True:
                slot = i % COPY_BUFFERS
                if pending[slot] is not None:
                    pending[slot].result()  # type: ignore[union-attr]  # the hasher is done with this buffer
                view = memoryview(buffers[slot])
                n = read_into(view)
                if n == 0:
                    break
                chunk = view[:n]
                pending[slot] = hasher.submit(sha.update, chunk)  # one worker: chunks are hashed in order
                done = 0
                while done < n:
                    done += os.write(fd, chunk[done:])
                size += n
                if progress is not None:
                    progress(n)
                i += 1
            for future in pending:
                if future is not None:
                    future.result()
        os.fsync(fd)
    finally:
        os.close(fd)
    return size, sha.hexdigest()


def file_reader(path: Path) -> tuple[Callable[[memoryview], int], Callable[[], None]]:
    """A readinto over the file at `path`, and the function that closes it."""
    f = open(path, "rb", buffering=0)  # noqa: SIM115 - closed by the returned function
    return f.readinto, f.close


def copy_checked(src: Path, dst: Path, entry: FileEntry, progress: Callable[[int], None] | None = None) -> None:
    """Copy a stored payload file, checking its size and sha256 against its manifest entry as it passes (a
    mismatch raises Corrupt and removes the copy)."""
    try:
        read_into, close = file_reader(src)
    except FileNotFoundError:
        raise Corrupt(f"{src} is missing (the manifest lists it); this backup is damaged") from None
    try:
        size, sha = copy_hashed(read_into, dst, progress)
    except BaseException:
        dst.unlink(missing_ok=True)
        raise
    finally:
        close()
    if size != entry.size or sha != entry.sha256:
        dst.unlink(missing_ok=True)
        raise Corrupt(f"{src}: size or sha256 mismatch (the file was modified or damaged); this backup is "
                      "damaged")


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
    """The combined effect of WAL frames (in LSN order): the latest entry per key, deletes included."""
    keys_l, values_l, lsns_l, live_l = [], [], [], []
    for frame in frames:
        n = len(frame.keys)
        keys_l.append(frame.keys)
        values_l.append(frame.values if frame.values is not None else np.zeros(n))
        lsns_l.append(np.full(n, frame.lsn, dtype=np.int64))
        live_l.append(np.full(n, frame.values is not None))
    if not keys_l:
        return EMPTY_RUN
    return latest_per_key(np.concatenate(keys_l), np.concatenate(values_l), np.concatenate(lsns_l),
                          np.concatenate(live_l))


def merged_pieces(keys: np.ndarray, values: np.ndarray, lsns: np.ndarray, delta: Run
                  ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(keys, values) of the base with `delta` applied, in ascending pieces (see runs.merge_chunks)."""
    if len(delta) == 0:
        for start in range(0, len(keys), DIGEST_PIECE):
            yield keys[start:start + DIGEST_PIECE], values[start:start + DIGEST_PIECE]
        return
    bounds = chunk_bounds(keys, [delta], DIGEST_PIECE)
    for k, v, _ in merge_chunks(keys, values, lsns, [delta], bounds):
        yield k, v


def stream_digest(keys: np.ndarray, values: np.ndarray, lsns: np.ndarray, delta: Run) -> tuple[int, str]:
    """(records, payload.state_digest) of the base with `delta` applied, computed a piece at a time: the
    merge and packing run in this thread while another hashes the previous piece."""
    sha = hashlib.sha256()
    records = 0
    pending: Future[None] | None = None
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="omendb-digest") as hasher:
        for k, v in merged_pieces(keys, values, lsns, delta):
            rec = np.empty(len(k), dtype=RECORD)
            rec["key"] = k
            rec["value"] = v
            records += len(k)
            if pending is not None:
                pending.result()
            pending = hasher.submit(sha.update, rec.view(np.uint8).data)
        if pending is not None:
            pending.result()
    return records, sha.hexdigest()
