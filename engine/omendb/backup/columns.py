"""A format-2 checkpoint stored with its key and LSN columns packed (``snapshot.odb.cols``), and unpacked
back into the same checkpoint byte for byte.

The values are random doubles and do not compress, but the keys are sorted (their differences are small)
and the LSNs take a few distinct small values: stored as is, those two columns are two thirds of a backup's
bytes for little information. So the stored file holds the checkpoint's byte ranges in order ("sections"):
the header, the values, the model and the checksum table copied as they are (inside the kernel,
copy_file_range), and the keys and the LSNs packed a chunk of records at a time: the keys as differences
from the previous key, both split into their 8 byte planes (all low bytes, then all second bytes...), the
planes that are all zero dropped and the rest compressed with zstandard (level 1). Chunks bound memory:
a restore never holds more than one chunk of a column.

Layout of the stored file, written strictly in order (so its sha256 is computed as it is written):
the sections' bytes, then a table of sections (``SECTION`` each: kind, offset and length in the checkpoint,
offset and length in this file) and a footer (``FOOTER``: the table's offset, the number of sections, the
checkpoint's size, the magic). A packed section is a sequence of chunks, each ``CHUNK`` (records, mask of
the planes kept, stored bytes) followed by one zstandard frame holding the kept planes one after the other.

An unpacked checkpoint is checked like any other: every block checksum (verbatim.verify_blocks), so a
restore proves that what it wrote is the checkpoint that was backed up.
"""

from __future__ import annotations

import errno
import hashlib
import mmap
import os
import struct
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import zstandard

from omendb.backup.errors import Corrupt
from omendb.checkpoint import BASE_HEADER, BASE_LAYOUT, BASE_MAGIC_2
from omendb.files import start_writeback

CODEC = "odb-columns"  # FileEntry.codec of a packed checkpoint
MAGIC = b"OMCOLS01"
FOOTER = struct.Struct("<QIQ8s")  # table offset, sections, checkpoint size, magic
SECTION = struct.Struct("<BQQQQ")  # kind, checkpoint offset, checkpoint bytes, stored offset, stored bytes
CHUNK = struct.Struct("<IBQ")  # records, planes kept (bit i: byte i of each value), stored bytes
RAW, PLANES, DELTA_PLANES = 0, 1, 2  # as is; int64 byte planes; differences from the previous, as planes
CHUNK_RECORDS = 1 << 20  # records per packed chunk: 8 MiB of a column
RAW_STEP = 256 << 20  # bytes per copy_file_range call while packing
UNPACK_STEP = 32 << 20  # while unpacking: each step's write-back to disk is started as soon as it is copied
LEVEL = 1  # zstandard level: the planes kept are mostly random bytes or runs; level 1 is as small and faster
Progress = Callable[[int], None]
_NO_KERNEL_COPY = (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EBADF)


def checkpoint_sections(head: bytes, size: int) -> list[tuple[int, int, int]] | None:
    """(kind, offset, length) covering a format-2 checkpoint of `size` bytes whose first bytes are `head`,
    or None if it is not one (it is then stored as is)."""
    if len(head) < BASE_HEADER.size + BASE_LAYOUT.size:
        return None
    magic, version, _flags, count, _bs, _lsn = BASE_HEADER.unpack_from(head, 0)
    if magic != BASE_MAGIC_2 or version != 2:
        return None
    keys_off, _values_off, lsns_off, *_ = BASE_LAYOUT.unpack_from(head, BASE_HEADER.size)
    column = 8 * count
    if not 0 < keys_off <= keys_off + column <= lsns_off <= lsns_off + column <= size:
        return None
    sections = [(RAW, 0, keys_off), (DELTA_PLANES, keys_off, column),
                (RAW, keys_off + column, lsns_off - keys_off - column),  # padding, values, padding
                (PLANES, lsns_off, column), (RAW, lsns_off + column, size - lsns_off - column)]
    return [s for s in sections if s[2] > 0]


# ---- packing -------------------------------------------------------------------------------------------


class _Out:
    """The stored file being written in order: position and sha256 of everything written."""

    def __init__(self, fd: int) -> None:
        self.fd, self.pos, self.sha = fd, 0, hashlib.sha256()

    def write(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        done = 0
        while done < len(view):
            done += os.pwrite(self.fd, view[done:], self.pos + done)
        self.sha.update(view)
        self.pos += len(view)

    def copy_from(self, fd_in: int, source: mmap.mmap, offset: int, length: int) -> None:
        """`length` bytes of the source at `offset`, copied inside the kernel and hashed from the mapping."""
        end = offset + length
        while offset < end:
            step = min(RAW_STEP, end - offset)
            done = 0
            try:
                while done < step:
                    n = os.copy_file_range(fd_in, self.fd, step - done, offset + done, self.pos + done)
                    if n == 0:
                        raise Corrupt(f"the checkpoint ended {end - offset - done} bytes early while being copied")
                    done += n
            except OSError as exc:
                if done or exc.errno not in _NO_KERNEL_COPY:
                    raise
                piece = memoryview(source)[offset:offset + step]  # no kernel copy between these two files
                while done < step:
                    done += os.pwrite(self.fd, piece[done:], self.pos + done)
            self.sha.update(memoryview(source)[offset:offset + step])
            self.pos += step
            offset += step


def _planes(values: np.ndarray) -> tuple[int, bytes]:
    """(mask, planes kept) of uint64 values: byte plane i is kept when some value has a nonzero byte i."""
    as_bytes = values.view(np.uint8).reshape(-1, 8)
    used = np.bitwise_or.reduce(values) if len(values) else np.uint64(0)
    mask = 0
    parts = []
    for i in range(8):
        if (int(used) >> (8 * i)) & 0xFF:
            mask |= 1 << i
            parts.append(np.ascontiguousarray(as_bytes[:, i]))
    return mask, b"".join(p.tobytes() for p in parts)


@contextmanager
def _new_file(dst: Path, flags: int) -> Iterator[int]:
    """The descriptor of a new file `dst`; an error while it is written removes the half-written file."""
    fd = os.open(dst, flags | os.O_CREAT | os.O_EXCL, 0o640)
    try:
        yield fd
    except BaseException:
        dst.unlink(missing_ok=True)
        raise
    finally:
        os.close(fd)


def pack(fd_in: int, dst: Path, progress: Progress | None = None) -> tuple[int, str, int] | None:
    """Write the checkpoint open at `fd_in` packed into a new file `dst`; returns (stored size, sha256 of the
    stored file, checkpoint size), or None (nothing written) when it is not a format-2 checkpoint. Not yet
    durable: fsync `dst` before publishing it."""
    size = os.fstat(fd_in).st_size
    sections = checkpoint_sections(os.pread(fd_in, BASE_HEADER.size + BASE_LAYOUT.size, 0), size)
    if sections is None:
        return None
    source = mmap.mmap(fd_in, size, prot=mmap.PROT_READ)
    # The mapping closes when the last array viewing it is gone (closing it here would fail while one is).
    with _new_file(dst, os.O_WRONLY) as fd:
        out = _Out(fd)
        cctx = zstandard.ZstdCompressor(level=LEVEL)
        table = []
        for kind, offset, length in sections:
            start = out.pos
            if kind == RAW:
                out.copy_from(fd_in, source, offset, length)
            else:
                column = np.frombuffer(source, dtype=np.uint64, count=length // 8, offset=offset)
                previous = np.uint64(0)
                buffer = np.empty(min(len(column), CHUNK_RECORDS), np.uint64)  # reused: no page faults per chunk
                for first in range(0, len(column), CHUNK_RECORDS):
                    chunk = column[first:first + CHUNK_RECORDS]
                    if kind == DELTA_PLANES:  # wrapping uint64 arithmetic: exact for any int64 keys
                        values = buffer[:len(chunk)]
                        np.subtract(chunk[:1], previous, out=values[:1])
                        np.subtract(chunk[1:], chunk[:-1], out=values[1:])
                        previous = chunk[-1]
                    else:
                        values = chunk
                    mask, kept = _planes(values)
                    frame = cctx.compress(kept)
                    out.write(CHUNK.pack(len(chunk), mask, len(frame)))
                    out.write(frame)
            if progress is not None:
                progress(length)
            table.append(SECTION.pack(kind, offset, length, start, out.pos - start))
        table_offset = out.pos
        out.write(b"".join(table) + FOOTER.pack(table_offset, len(table), size, MAGIC))
        return out.pos, out.sha.hexdigest(), size


# ---- unpacking -----------------------------------------------------------------------------------------


def _read_table(fd: int, where: Path) -> tuple[int, list[tuple[int, int, int, int, int]]]:
    size = os.fstat(fd).st_size
    if size < FOOTER.size:
        raise Corrupt(f"{where} is truncated (no footer); this backup is damaged")
    table_offset, count, checkpoint_size, magic = FOOTER.unpack(os.pread(fd, FOOTER.size, size - FOOTER.size))
    if magic != MAGIC or table_offset + count * SECTION.size + FOOTER.size != size:
        raise Corrupt(f"{where}: not a packed checkpoint (bad footer); this backup is damaged")
    raw = os.pread(fd, count * SECTION.size, table_offset)
    sections = [SECTION.unpack_from(raw, i * SECTION.size) for i in range(count)]
    expected = 0
    for kind, offset, length, stored, stored_length in sections:
        if kind not in (RAW, PLANES, DELTA_PLANES) or offset != expected or stored + stored_length > table_offset \
                or kind == RAW and stored_length != length or kind != RAW and length % 8:
            raise Corrupt(f"{where}: its table of sections is inconsistent; this backup is damaged")
        expected += length
    if expected != checkpoint_size:
        raise Corrupt(f"{where}: its sections cover {expected} bytes of a {checkpoint_size}-byte checkpoint; "
                      "this backup is damaged")
    return checkpoint_size, sections


def unpack(src: Path, dst: Path, progress: Progress | None = None) -> int:
    """Write the checkpoint packed in `src` into a new file `dst`, byte for byte; returns its size. Checks
    the structure and, as they are unpacked, the block checksums of the key and LSN columns (against the
    checkpoint's own table); the raw sections are copied as stored: the caller checks `src`'s sha256 against
    the manifest before trusting `dst`. Not yet durable: fsync `dst`. The two packed columns are unpacked on
    two threads (zstandard, numpy, zlib and the writes release the GIL), the raw sections copied inside the
    kernel meanwhile."""
    fd_in = os.open(src, os.O_RDONLY)
    try:
        size, sections = _read_table(fd_in, src)
        block_size, crcs, column_of = _checksums(fd_in, src, sections)
        with _new_file(dst, os.O_RDWR) as fd:
            os.ftruncate(fd, size)

            def one(section: tuple[int, int, int, int, int]) -> None:
                kind, offset, length, stored, stored_length = section
                if kind == RAW:
                    _copy_raw(fd_in, fd, src, offset, length, stored)
                else:
                    if offset not in column_of:
                        raise Corrupt(f"{src}: a packed section at offset {offset} is not a column of the "
                                      "checkpoint; this backup is damaged")
                    column = column_of[offset]
                    _unpack_column(fd_in, fd, src, kind, offset, length, stored, stored_length,
                                   (block_size, crcs[:, column], ("keys", "values", "LSNs")[column]))
                if progress is not None:
                    progress(length)

            packed_first = sorted(sections, key=lambda section: section[0] == RAW)
            with ThreadPoolExecutor(max_workers=2, thread_name_prefix="omendb-unpack") as pool:
                for future in [pool.submit(one, section) for section in packed_first]:
                    future.result()
        return size
    finally:
        os.close(fd_in)


def _checksums(fd_in: int, src: Path, sections: list[tuple[int, int, int, int, int]]
               ) -> tuple[int, np.ndarray, dict[int, int]]:
    """(block size, crc32 table (blocks, 3), column number by checkpoint offset) of the packed checkpoint,
    read from its header and checksum table (stored as is)."""
    def read(offset: int, length: int) -> bytes:
        for kind, at, size, stored, _ in sections:
            if kind == RAW and at <= offset and offset + length <= at + size:
                data = os.pread(fd_in, length, stored + offset - at)
                if len(data) == length:
                    return data
        raise Corrupt(f"{src}: the checkpoint's header or checksum table is not stored as is; this backup is "
                      "damaged")

    head = read(0, BASE_HEADER.size + BASE_LAYOUT.size)
    magic, version, _flags, count, block_size, _lsn = BASE_HEADER.unpack_from(head, 0)
    keys_off, values_off, lsns_off, _, _, crc_off, blocks = BASE_LAYOUT.unpack_from(head, BASE_HEADER.size)
    if magic != BASE_MAGIC_2 or version != 2 or block_size <= 0 or blocks != -(-count // block_size):
        raise Corrupt(f"{src}: the packed checkpoint's header is damaged; this backup is damaged")
    crcs = np.frombuffer(read(crc_off, 12 * blocks), "<u4").reshape(blocks, 3) if blocks else \
        np.zeros((0, 3), np.uint32)
    return block_size, crcs, {keys_off: 0, values_off: 1, lsns_off: 2}


def _copy_raw(fd_in: int, fd: int, src: Path, offset: int, length: int, stored: int) -> None:
    done = 0
    while done < length:
        step = min(UNPACK_STEP, length - done)
        moved = 0
        try:
            while moved < step:
                n = os.copy_file_range(fd_in, fd, step - moved, stored + done + moved, offset + done + moved)
                if n == 0:
                    raise Corrupt(f"{src} is truncated; this backup is damaged")
                moved += n
        except OSError as exc:
            if moved or exc.errno not in _NO_KERNEL_COPY:
                raise
            piece = os.pread(fd_in, step, stored + done)  # no kernel copy between these two files
            if len(piece) != step:
                raise Corrupt(f"{src} is truncated; this backup is damaged") from None
            view = memoryview(piece)
            while moved < step:
                moved += os.pwrite(fd, view[moved:], offset + done + moved)
        start_writeback(fd, offset + done, step)
        done += step


def _unpack_column(fd_in: int, fd: int, src: Path, kind: int, offset: int, length: int, stored: int,
                   stored_length: int, check: tuple[int, np.ndarray, str]) -> None:
    records, written, pos, end = length // 8, 0, stored, stored + stored_length
    block_size, expected, name = check
    crc = 0  # of the current block so far
    dctx = zstandard.ZstdDecompressor()
    previous = np.zeros(1, np.uint64)
    # Reused across chunks: fresh 8 MiB arrays per chunk would cost page faults on every one.
    planes_buffer = np.zeros((min(records, CHUNK_RECORDS), 8), np.uint8)
    values_buffer = np.empty(min(records, CHUNK_RECORDS), np.uint64)
    last_mask = 0xFF
    while written < records:
        if pos + CHUNK.size > end:
            raise Corrupt(f"{src}: a packed column ends early; this backup is damaged")
        count, mask, frame_length = CHUNK.unpack(os.pread(fd_in, CHUNK.size, pos))
        pos += CHUNK.size
        planes = bin(mask).count("1")
        if count == 0 or written + count > records or pos + frame_length > end:
            raise Corrupt(f"{src}: a packed column's chunk header is inconsistent; this backup is damaged")
        if count > len(values_buffer):  # chunks larger than this version writes
            planes_buffer = np.zeros((count, 8), np.uint8)
            values_buffer = np.empty(count, np.uint64)
        try:
            kept = dctx.decompress(os.pread(fd_in, frame_length, pos), max_output_size=count * planes)
        except zstandard.ZstdError as exc:
            raise Corrupt(f"{src}: a packed column is not valid zstandard ({exc}); this backup is damaged") from None
        if len(kept) != count * planes:
            raise Corrupt(f"{src}: a packed column's chunk holds {len(kept)} bytes, {count * planes} expected; "
                          "this backup is damaged")
        pos += frame_length
        out = planes_buffer[:count]
        source = np.frombuffer(kept, np.uint8)
        j = 0
        for i in range(8):
            if mask >> i & 1:
                out[:, i] = source[j * count:(j + 1) * count]
                j += 1
            elif last_mask >> i & 1:  # a plane the previous chunk filled: zero again
                planes_buffer[:, i] = 0
        last_mask = mask
        values = out.reshape(-1).view(np.uint64)
        if kind == DELTA_PLANES:
            values = np.cumsum(values, dtype=np.uint64, out=values_buffer[:count])
            values += previous
            previous[0] = values[-1]
        data = values.data.cast("B")
        at = 0
        while at < count:  # the block checksums, as the bytes pass (crc32 continues across chunks)
            block, within = divmod(written + at, block_size)
            take = min(block_size - within, count - at)
            crc = zlib.crc32(data[8 * at:8 * (at + take)], crc if within else 0)
            if (within + take == block_size or written + at + take == records) and \
                    (block >= len(expected) or crc != int(expected[block])):
                raise Corrupt(f"{src}: block {block} of the {name} unpacked fails its checksum; this backup is "
                              "damaged")
            at += take
        done = 0
        while done < len(data):
            done += os.pwrite(fd, data[done:], offset + 8 * written + done)
        start_writeback(fd, offset + 8 * written, len(data))
        written += count
    if pos != end:
        raise Corrupt(f"{src}: a packed column holds {end - pos} bytes more than its records; this backup is "
                      "damaged")
