"""Checkpoints: the base array and its learned index on disk, described by a manifest.

``base-<lsn>.odb`` holds every record as of checkpoint LSN ``lsn``: a header, blocks of ``[storage]
batch_size`` records (keys delta-encoded, values, LSNs; zstandard-compressed when ``enable_compression``),
each with its own crc32, the index model, and an end marker. ``MANIFEST`` (JSON) names the current base
file and its LSN, the database's identity (``database_id``, a uuid4 given at creation and carried by every WAL
segment), where its WAL lives, and a crc32 of its own canonical JSON (``checksum``). Both are written
atomically: temporary file, fsync, rename, fsync of the directory, so a crash leaves either the old checkpoint
or the new one, never a mix.
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zstandard

from omendb.errors import CorruptionError
from omendb.rmi import NODE_DTYPE, LearnedIndex
from omendb.wal import fsync_dir

MANIFEST = "MANIFEST"
FORMAT_VERSION = 1  # of base files
MANIFEST_VERSION = 2  # 2 adds database_id, wal_dir and checksum; version 1 (previous release) is upgraded
BASE_MAGIC = b"OMBASE01"
BASE_END = b"OMBASEND"
BASE_HEADER = struct.Struct("<8sIIQQq")  # magic, version, flags, records, block size, lsn
BLOCK_HEADER = struct.Struct("<QQI")  # records (or index nodes), stored bytes, crc32 of stored bytes
FLAG_COMPRESSED = 1
_REMEDY = "restore the data directory from a backup (backup_tool restore --backup-id latest --force)"


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


def base_name(lsn: int) -> str:
    return f"base-{lsn:020d}.odb"


@contextlib.contextmanager
def _removed_on_failure(tmp: Path) -> Iterator[None]:
    """A temporary file that a failure (a full volume, say) must not leave behind taking space."""
    try:
        yield
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, OSError) and exc.filename is None:  # a failed write or flush names no file
            exc.filename = str(tmp)
        raise


def atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with _removed_on_failure(tmp):
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    fsync_dir(path.parent)


def read_manifest(data_dir: Path) -> Manifest | None:
    path = data_dir / MANIFEST
    try:
        raw: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (ValueError, UnicodeDecodeError) as exc:
        raise CorruptionError(f"{path} is not valid JSON ({exc}); {_REMEDY}") from None
    version = raw.get("format_version") if isinstance(raw, dict) else None
    if version not in (1, MANIFEST_VERSION):
        raise CorruptionError(f"{path}: format version {version} is not supported (this OmenDB reads 1 and "
                              f"{MANIFEST_VERSION}); run the OmenDB version that wrote it")
    if version == MANIFEST_VERSION and raw.pop("checksum", None) != manifest_checksum(raw):
        raise CorruptionError(f"{path}: checksum mismatch (the file was damaged or edited by hand); {_REMEDY}, "
                              f"or put back a copy of this MANIFEST that passes its checksum")
    try:
        return Manifest(**raw)
    except TypeError as exc:
        raise CorruptionError(f"{path} is missing fields ({exc}); {_REMEDY}") from None


def write_manifest(data_dir: Path, manifest: Manifest) -> None:
    atomic_write(data_dir / MANIFEST, manifest.to_json().encode())


def write_base(path: Path, lsn: int, keys: np.ndarray, values: np.ndarray, lsns: np.ndarray,
               index: LearnedIndex, *, compress: bool, block_size: int) -> int:
    """Write a base file atomically; returns its size in bytes."""
    compressor = zstandard.ZstdCompressor(level=1) if compress else None
    tmp = path.with_name(path.name + ".tmp")
    with _removed_on_failure(tmp), open(tmp, "wb") as f:
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
    with _removed_on_failure(tmp):
        os.replace(tmp, path)
    fsync_dir(path.parent)
    return size


def _write_block(f, count: int, raw: bytes, compressor) -> None:
    stored = compressor.compress(raw) if compressor else raw
    f.write(BLOCK_HEADER.pack(count, len(stored), zlib.crc32(stored)))
    f.write(stored)


def read_base(path: Path) -> tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(lsn, keys, values, lsns, index nodes) of a base file, checking every block."""
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

