"""Checkpoints: the base array and its learned index on disk, described by a manifest.

``base-<lsn>.odb`` holds every record as of checkpoint LSN ``lsn``. Format 2 (written since) is columnar
and uncompressed so that it can be memory-mapped: opening a database maps the file instead of decoding it,
and the pages are shared with the page cache. Layout (offsets page-aligned): a header (the format-1 fields,
then the layout), the keys, the values and the LSNs as flat little-endian arrays, the index model, a table
of crc32s (one per column per block of ``[storage] batch_size`` records, plus one of the model), and an end
marker. The checksums are checked by ``BaseFile.verify`` (the database runs it in the background after
opening, see ``Database``). Format 1 (blocks of keys delta-encoded, values and LSNs, zstandard-compressed
when ``enable_compression``, a crc32 each) is still read. The ``MANIFEST`` (``files.Manifest``) names the
current base file and its LSN. File names, the MANIFEST and the atomic replace (temporary file, fsync, rename,
fsync of the directory) belong to ``omendb.files``, so a crash leaves either the old checkpoint or the new
one, never a mix.
"""

from __future__ import annotations

import mmap
import os
import struct
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zstandard

from omendb.errors import CorruptionError
from omendb.files import RESTORE_REMEDY, fsync_dir, removed_on_failure, tmp_path
from omendb.rmi_nodes import NODE_DTYPE, LearnedIndex

FORMAT_VERSION = 1  # of base files
BASE_MAGIC = b"OMBASE01"
BASE_END = b"OMBASEND"
BASE_HEADER = struct.Struct("<8sIIQQq")  # magic, version, flags, records, block size, lsn
BLOCK_HEADER = struct.Struct("<QQI")  # records (or index nodes), stored bytes, crc32 of stored bytes
FLAG_COMPRESSED = 1
BASE_MAGIC_2 = b"OMBASE02"
BASE_FORMAT_2 = 2
BASE_LAYOUT = struct.Struct("<QQQQQQQ")  # keys, values, LSNs, nodes offsets; node count; crc table offset, blocks
PAGE = 4096
_REMEDY = RESTORE_REMEDY


def _page_up(n: int) -> int:
    return -(-n // PAGE) * PAGE


@dataclass
class BaseFile:
    """A format-2 base file, memory-mapped: the arrays are read-only views of the file's pages (they keep
    the mapping alive; the file may be unlinked meanwhile). `verify()` checks every checksum."""

    path: Path
    lsn: int
    keys: np.ndarray
    values: np.ndarray
    lsns: np.ndarray
    nodes: np.ndarray
    block_size: int
    crcs: np.ndarray  # uint32 (blocks, 3): keys, values, LSNs

    @property
    def data_bytes(self) -> int:
        return 24 * len(self.keys)

    def verify(self, should_stop: Callable[[], bool] = lambda: False) -> bool:
        """Check every block's crc32 (zlib releases the GIL); raises CorruptionError naming the first bad
        block. Returns False if `should_stop` asked it to stop early."""
        columns = (("keys", self.keys), ("values", self.values), ("LSNs", self.lsns))
        bs = self.block_size
        for block in range(len(self.crcs)):
            if should_stop():
                return False
            for c, (name, column) in enumerate(columns):
                if zlib.crc32(column[block * bs:(block + 1) * bs].data) != int(self.crcs[block, c]):
                    raise CorruptionError(f"{self.path}: block {block} (records {block * bs} to "
                                          f"{min((block + 1) * bs, len(self.keys)) - 1}) of the {name} fails its "
                                          f"checksum; {_REMEDY}")
        return True


class _Column:
    """One column of a base file being written: pwrite at its offset, crc32 per block as the bytes pass."""

    def __init__(self, fd: int, offset: int, block_size: int, blocks: int) -> None:
        self.fd, self.offset, self.block_bytes = fd, offset, 8 * block_size
        self.crcs = np.zeros(blocks, np.uint32)
        self.written = 0

    def write(self, arr: np.ndarray) -> None:
        data = np.ascontiguousarray(arr).data.cast("B")
        pos = 0
        while pos < len(data):
            block, within = divmod(self.written, self.block_bytes)
            piece = data[pos:pos + self.block_bytes - within]
            self.crcs[block] = zlib.crc32(piece, int(self.crcs[block]))
            done = 0
            while done < len(piece):
                done += os.pwrite(self.fd, piece[done:], self.offset + self.written + done)
            self.written += len(piece)
            pos += len(piece)


class BaseWriter:
    """Writes a format-2 base file of `count` records in sorted chunks (so a merge streams its output
    instead of holding a second copy of the base), then the model; atomically renamed into place."""

    def __init__(self, path: Path, count: int, lsn: int, block_size: int) -> None:
        self.path, self.count, self.lsn, self.block_size = path, count, lsn, block_size
        self.tmp = tmp_path(path)
        self.fd = os.open(self.tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o640)
        self.blocks = -(-count // block_size)
        self.keys_off = PAGE
        self.values_off = self.keys_off + _page_up(8 * count)
        self.lsns_off = self.values_off + _page_up(8 * count)
        self.nodes_off = self.lsns_off + _page_up(8 * count)
        os.ftruncate(self.fd, self.nodes_off)
        self.columns = [_Column(self.fd, off, block_size, self.blocks)
                        for off in (self.keys_off, self.values_off, self.lsns_off)]
        self.written = 0

    def write(self, keys: np.ndarray, values: np.ndarray, lsns: np.ndarray) -> None:
        if self.written + len(keys) > self.count:
            raise ValueError(f"{self.path}: more records written than the {self.count} announced")
        for column, arr, dtype in zip(self.columns, (keys, values, lsns), (np.int64, np.float64, np.int64),
                                      strict=True):
            column.write(np.asarray(arr, dtype=dtype))
        self.written += len(keys)

    def keys(self) -> np.ndarray:
        """The keys written so far, memory-mapped (for training the model without another copy)."""
        return _map(self.fd, self.nodes_off, np.int64, self.keys_off, self.count)

    def finish(self, index: LearnedIndex) -> BaseFile:
        if self.written != self.count:
            raise ValueError(f"{self.path}: {self.written} records written, {self.count} announced")
        nodes = np.ascontiguousarray(index.nodes)
        crcs = np.stack([c.crcs for c in self.columns], axis=1) if self.blocks else np.zeros((0, 3), np.uint32)
        table = np.append(crcs.reshape(-1), np.uint32(zlib.crc32(nodes.tobytes()))).astype("<u4")
        crc_off = self.nodes_off + nodes.nbytes
        os.pwrite(self.fd, nodes.tobytes() + table.tobytes() + BASE_END, self.nodes_off)
        header = BASE_HEADER.pack(BASE_MAGIC_2, BASE_FORMAT_2, 0, self.count, self.block_size, self.lsn) + \
            BASE_LAYOUT.pack(self.keys_off, self.values_off, self.lsns_off, self.nodes_off, len(nodes), crc_off,
                             self.blocks)
        os.pwrite(self.fd, header, 0)
        os.fsync(self.fd)
        os.replace(self.tmp, self.path)
        fsync_dir(self.path.parent)
        try:
            return open_base(self.path, fd=self.fd)
        finally:
            self.close()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def abort(self) -> None:
        self.close()
        self.tmp.unlink(missing_ok=True)


def _mapping(arr: np.ndarray) -> mmap.mmap | None:
    """The file mapping `arr` is a view of (as `_map` makes them), None for any other memory."""
    owner: Any = arr
    while isinstance(owner, np.ndarray):
        owner = owner.base
    if isinstance(owner, memoryview):
        owner = owner.obj
    return owner if isinstance(owner, mmap.mmap) else None


def release_pages(column: np.ndarray, start: int, stop: int) -> None:
    """Unmap this process's pages of the whole pages inside column[start:stop] if the column is a mapped
    base file (MADV_DONTNEED): the data stays in the file and the page cache, and a later read of them
    faults them back in. A merge calls it on the old base as it streams past, so the old base does not
    stay resident beside the new one. Anything but a file mapping is left alone (on anonymous memory the
    same call would discard the data)."""
    mapped = _mapping(column)
    if mapped is None or stop <= start:
        return
    origin = np.frombuffer(mapped, np.uint8, count=1).ctypes.data
    lo = column.ctypes.data - origin + start * column.itemsize
    hi = lo + (stop - start) * column.itemsize
    lo, hi = _page_up(lo), hi // PAGE * PAGE
    if hi > lo:
        mapped.madvise(mmap.MADV_DONTNEED, lo, hi - lo)


def _map(fd: int, length: int, dtype: Any, offset: int, count: int) -> np.ndarray:
    if count == 0 or length == 0:
        return np.zeros(0, dtype)
    mapped = mmap.mmap(fd, length, prot=mmap.PROT_READ)
    return np.frombuffer(mapped, dtype=dtype, count=count, offset=offset)


def base_format(path: Path) -> int:
    """The format version of a base file (1 or 2)."""
    try:
        with open(path, "rb") as f:
            head = f.read(BASE_HEADER.size)
    except FileNotFoundError:
        raise CorruptionError(f"checkpoint file {path} named by the manifest is missing; {_REMEDY}") from None
    if len(head) < BASE_HEADER.size:
        raise CorruptionError(f"checkpoint file {path} is truncated; {_REMEDY}")
    magic, version = BASE_HEADER.unpack(head)[:2]
    if (magic, version) == (BASE_MAGIC, FORMAT_VERSION):
        return 1
    if (magic, version) == (BASE_MAGIC_2, BASE_FORMAT_2):
        return 2
    raise CorruptionError(f"{path} at offset 0: not a checkpoint file of format 1 or 2; {_REMEDY}")


def open_base(path: Path, fd: int | None = None) -> BaseFile:
    """Map a format-2 base file. Checks its header, layout, size, end marker and model checksum (cheap);
    the record blocks are checked by `BaseFile.verify`."""
    own = fd is None
    if fd is None:
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            raise CorruptionError(f"checkpoint file {path} named by the manifest is missing; {_REMEDY}") from None
    try:
        size = os.fstat(fd).st_size
        head = os.pread(fd, BASE_HEADER.size + BASE_LAYOUT.size, 0)
        if len(head) < BASE_HEADER.size + BASE_LAYOUT.size:
            raise CorruptionError(f"checkpoint file {path} is truncated; {_REMEDY}")
        magic, version, _flags, count, block_size, lsn = BASE_HEADER.unpack_from(head, 0)
        if magic != BASE_MAGIC_2 or version != BASE_FORMAT_2:
            raise CorruptionError(f"{path} at offset 0: not a checkpoint file of format 2; {_REMEDY}")
        keys_off, values_off, lsns_off, nodes_off, n_nodes, crc_off, blocks = BASE_LAYOUT.unpack_from(
            head, BASE_HEADER.size)
        column = _page_up(8 * count)
        expected = (PAGE, PAGE + column, PAGE + 2 * column, PAGE + 3 * column,
                    PAGE + 3 * column + n_nodes * NODE_DTYPE.itemsize, -(-count // block_size) if block_size else -1)
        if (keys_off, values_off, lsns_off, nodes_off, crc_off, blocks) != expected or \
                size != crc_off + (3 * blocks + 1) * 4 + len(BASE_END):
            raise CorruptionError(f"{path} at offset {BASE_HEADER.size}: the layout does not match the file "
                                  f"(size {size}); the file is truncated or damaged; {_REMEDY}")
        if os.pread(fd, len(BASE_END), size - len(BASE_END)) != BASE_END:
            raise CorruptionError(f"checkpoint file {path} is truncated; {_REMEDY}")
        tail = os.pread(fd, crc_off - nodes_off + (3 * blocks + 1) * 4, nodes_off)
        nodes = np.frombuffer(tail, dtype=NODE_DTYPE, count=n_nodes).copy()
        table = np.frombuffer(tail, dtype="<u4", offset=n_nodes * NODE_DTYPE.itemsize)
        if zlib.crc32(tail[:n_nodes * NODE_DTYPE.itemsize]) != int(table[-1]):
            raise CorruptionError(f"{path} at offset {nodes_off}: the index model fails its checksum; {_REMEDY}")
        crcs = table[:-1].reshape(blocks, 3).astype(np.uint32)
        length = nodes_off
        return BaseFile(path, lsn, _map(fd, length, np.int64, keys_off, count),
                        _map(fd, length, np.float64, values_off, count), _map(fd, length, np.int64, lsns_off, count),
                        nodes, block_size, crcs)
    finally:
        if own:
            os.close(fd)


MERGE_CHUNK = 1 << 20  # records per chunk a base file is written in


def write_base(path: Path, lsn: int, keys: np.ndarray, values: np.ndarray, lsns: np.ndarray,
               index: LearnedIndex, *, compress: bool = False, block_size: int = 100_000) -> int:
    """Write a format-2 base file atomically from in-memory arrays; returns its size in bytes. (`compress` is
    accepted for callers of format 1: format 2 is uncompressed so that it can be memory-mapped.)"""
    writer = BaseWriter(path, len(keys), lsn, block_size)
    try:
        for start in range(0, len(keys), MERGE_CHUNK):
            end = start + MERGE_CHUNK
            writer.write(keys[start:end], values[start:end], lsns[start:end])
        writer.finish(index)
    except BaseException:
        writer.abort()
        raise
    return path.stat().st_size


def write_base_v1(path: Path, lsn: int, keys: np.ndarray, values: np.ndarray, lsns: np.ndarray,
                  index: LearnedIndex, *, compress: bool, block_size: int) -> int:
    """Write a format-1 base file (blocks, optionally compressed); kept so tests can check that databases
    checkpointed by earlier versions still open. Returns its size in bytes."""
    compressor = zstandard.ZstdCompressor(level=1) if compress else None
    tmp = tmp_path(path)
    with removed_on_failure(tmp), open(tmp, "wb") as f:
        f.write(BASE_HEADER.pack(BASE_MAGIC, FORMAT_VERSION, FLAG_COMPRESSED if compress else 0, len(keys),
                                 block_size, lsn))
        for start in range(0, len(keys), block_size):
            k = keys[start:start + block_size]
            encoded = np.empty(len(k), dtype=np.uint64)
            encoded[0] = k[:1].view(np.uint64)[0]
            encoded[1:] = np.diff(k.view(np.uint64))  # sorted keys: small gaps compress well
            raw = b"".join((encoded.tobytes(), values[start:start + block_size].tobytes(),
                            lsns[start:start + block_size].tobytes()))
            _write_block(f, len(k), raw, compressor)
        _write_block(f, len(index.nodes), index.nodes.tobytes(), compressor)
        f.write(BASE_END)
        f.flush()
        os.fsync(f.fileno())
        size = f.tell()
    with removed_on_failure(tmp):
        os.replace(tmp, path)
    fsync_dir(path.parent)
    return size


def _write_block(f, count: int, raw: bytes, compressor) -> None:
    stored = compressor.compress(raw) if compressor else raw
    f.write(BLOCK_HEADER.pack(count, len(stored), zlib.crc32(stored)))
    f.write(stored)


def read_base(path: Path) -> tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(lsn, keys, values, lsns, index nodes) of a base file, checking every block. Format-2 arrays are
    read-only memory maps of the file."""
    if base_format(path) == 2:
        base = open_base(path)
        base.verify()
        return base.lsn, base.keys, base.values, base.lsns, base.nodes
    try:
        data = memoryview(path.read_bytes())
    except FileNotFoundError:
        raise CorruptionError(f"checkpoint file {path} named by the manifest is missing; {_REMEDY}") from None
    if len(data) < BASE_HEADER.size + len(BASE_END) or bytes(data[-len(BASE_END):]) != BASE_END:
        raise CorruptionError(f"checkpoint file {path} is truncated; {_REMEDY}")
    magic, version, flags, count, _block_size, lsn = BASE_HEADER.unpack_from(data, 0)
    if magic != BASE_MAGIC or version != FORMAT_VERSION:
        raise CorruptionError(f"{path} at offset 0: not a checkpoint file of format {FORMAT_VERSION}; {_REMEDY}")
    decompressor = zstandard.ZstdDecompressor() if flags & FLAG_COMPRESSED else None
    keys = np.empty(count, dtype=np.int64)
    values = np.empty(count, dtype=np.float64)
    lsns = np.empty(count, dtype=np.int64)
    # Find every block first, then check and decode them in parallel: zstd and crc32 release the GIL.
    blocks: list[tuple[int, int]] = []  # (header offset, first record)
    offset, filled = BASE_HEADER.size, 0
    while filled < count:
        if offset + BLOCK_HEADER.size > len(data):
            raise CorruptionError(f"{path} at offset {offset}: truncated block header; {_REMEDY}")
        n, stored_len, _ = BLOCK_HEADER.unpack_from(data, offset)
        blocks.append((offset, filled))
        offset += BLOCK_HEADER.size + stored_len
        filled += n

    def decode(block: tuple[int, int]) -> None:
        at, first = block
        n, raw, _ = _read_block(path, data, at, zstandard.ZstdDecompressor() if decompressor else None, 24)
        if first + n > count:
            raise CorruptionError(f"{path} at offset {at}: block overruns the record count; {_REMEDY}")
        encoded = np.frombuffer(raw, dtype=np.uint64, count=n)
        keys[first:first + n] = np.cumsum(encoded, dtype=np.uint64).view(np.int64)
        values[first:first + n] = np.frombuffer(raw, dtype=np.float64, count=n, offset=8 * n)
        lsns[first:first + n] = np.frombuffer(raw, dtype=np.int64, count=n, offset=16 * n)

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        list(pool.map(decode, blocks))
    n_nodes, raw, offset = _read_block(path, data, offset, decompressor, NODE_DTYPE.itemsize)
    nodes = np.frombuffer(raw, dtype=NODE_DTYPE, count=n_nodes).copy()
    if offset != len(data) - len(BASE_END):
        raise CorruptionError(f"{path} at offset {offset}: unexpected bytes before the end marker; {_REMEDY}")
    return lsn, keys, values, lsns, nodes


def _read_block(path: Path, data: memoryview, offset: int, decompressor, record_bytes: int
                ) -> tuple[int, bytes, int]:
    if offset + BLOCK_HEADER.size > len(data):
        raise CorruptionError(f"{path} at offset {offset}: truncated block header; {_REMEDY}")
    n, stored_len, crc = BLOCK_HEADER.unpack_from(data, offset)
    start = offset + BLOCK_HEADER.size
    stored = data[start:start + stored_len]
    if len(stored) != stored_len or zlib.crc32(stored) != crc:
        raise CorruptionError(f"{path} at offset {offset}: block checksum mismatch; {_REMEDY}")
    raw = decompressor.decompress(stored, max_output_size=n * record_bytes) if decompressor else bytes(stored)
    if len(raw) != n * record_bytes:
        raise CorruptionError(f"{path} at offset {offset}: block holds {len(raw)} bytes, expected "
                              f"{n * record_bytes}; {_REMEDY}")
    return n, raw, start + stored_len

