"""The backup manifest (``manifest.json``): what a backup holds and how to check it.

Pure code: building, serializing and validating manifests. The manifest carries its own sha256 (over its
canonical JSON without that field), so a change to any byte of any file of a backup, the manifest
included, is detected.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import omendb
from omendb.backup import FORMAT_VERSION
from omendb.backup.errors import Corrupt

MANIFEST_FILE = "manifest.json"
FULL, INCREMENTAL = "full", "incremental"
# The source's checkpoint (base) file at start_lsn: as is when its blocks are already zstandard-compressed
# ([storage] enable_compression, the default), else compressed as a whole.
SNAPSHOT_FILE = "snapshot.odb"
SNAPSHOT_ZST = "snapshot.odb.zst"
WAL_FILE = "wal.frames.zst"  # WAL frames start_lsn+1 .. end_lsn, as the engine encodes them, zstd-compressed
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


@dataclass(frozen=True)
class FileEntry:
    name: str
    size: int  # bytes on disk
    sha256: str
    raw_size: int  # bytes after decompression
    codec: str = "zstd"


@dataclass(frozen=True)
class BackupManifest:
    id: str
    type: str  # "full" | "incremental"
    parent: str | None  # the backup an incremental continues (None for a full backup)
    database: str  # the name backups are filed under (--database)
    start_lsn: int  # full: LSN of the snapshot; incremental: the parent's end_lsn
    end_lsn: int  # every write up to this LSN is in the backup (with its chain)
    start_term: int  # term of the state at start_lsn
    term: int  # highest term seen (replication fencing continues from it after a restore)
    created_at: str  # ISO 8601 UTC
    created_at_epoch: float
    # Commit time (µs since the epoch) of the first and last WAL frame held; None without frames.
    first_commit_us: int | None
    last_commit_us: int | None
    # No restore target before this time is possible from this backup's chain: the commit time of its
    # earliest state is unknown beyond "no later than this" (the checkpoint's creation, or the first frame).
    earliest_restore_us: int
    records: int  # live records at end_lsn
    content_sha256: str  # digest of the state at end_lsn (see payload.state_digest)
    files: list[FileEntry]
    source: dict[str, Any]  # how it was taken: offline data directory or online server
    engine_database: str  # [database] name of the engine backed up
    index: dict[str, Any]  # model_type and max_error of the source, reused by restore
    notice: str | None = None  # e.g. why an incremental became a full backup
    tool_version: str = omendb.__version__
    format_version: int = FORMAT_VERSION
    manifest_sha256: str = field(default="")

    @property
    def created(self) -> datetime:
        return datetime.fromtimestamp(self.created_at_epoch, UTC)

    def file(self, name: str) -> FileEntry | None:
        return next((f for f in self.files if f.name == name), None)

    @property
    def snapshot(self) -> FileEntry | None:
        return self.file(SNAPSHOT_FILE) or self.file(SNAPSHOT_ZST)

    def canonical(self) -> bytes:
        body = asdict(self)
        body.pop("manifest_sha256")
        return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()

    def sealed(self) -> BackupManifest:
        from dataclasses import replace

        return replace(self, manifest_sha256=hashlib.sha256(self.canonical()).hexdigest())

    def to_json(self) -> bytes:
        return (json.dumps(asdict(self), indent=2, sort_keys=True) + "\n").encode()


def check_database_name(name: str) -> str:
    if not _NAME.match(name):
        raise ValueError(f"database name {name!r} must be 1-100 letters, digits, '_', '.' or '-', starting "
                         f"with a letter or digit")
    return name


def new_id(database: str, kind: str, when: datetime) -> str:
    """Sortable, unique per millisecond (the backup directory lock serializes runs), readable."""
    stamp = when.strftime("%Y%m%dT%H%M%S") + f"{when.microsecond // 1000:03d}Z"
    return f"{database}-{stamp}-{'full' if kind == FULL else 'incr'}"


def parse(raw: bytes, where: str) -> BackupManifest:
    try:
        body = json.loads(raw)
        if not isinstance(body, dict):
            raise ValueError("not a JSON object")
        version = body.get("format_version")
        if version != FORMAT_VERSION:
            raise Corrupt(f"{where}: backup format version {version!r} is not supported by this backup_tool "
                          f"({omendb.__version__} reads version {FORMAT_VERSION}); use the backup_tool that "
                          f"wrote it")
        body["files"] = [FileEntry(**f) for f in body["files"]]
        manifest = BackupManifest(**body)
    except Corrupt:
        raise
    except (ValueError, TypeError, KeyError, UnicodeDecodeError) as exc:
        raise Corrupt(f"{where} is damaged ({exc}); this backup cannot be used — verify the others with "
                      f"`backup_tool verify` and delete this one") from None
    if manifest.sealed().manifest_sha256 != manifest.manifest_sha256:
        raise Corrupt(f"{where}: checksum mismatch (the manifest was modified or damaged); this backup "
                      "cannot be trusted — delete it and take a new full backup")
    return manifest


def parse_time(text: str) -> int:
    """A restore target time (ISO 8601, naive = UTC, or seconds since the epoch) in µs since the epoch."""
    try:
        return int(round(float(text) * 1_000_000))
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"--to-time {text!r} is not a time: use ISO 8601 such as 2026-11-27T04:40:00Z "
                         f"(UTC unless an offset is given) or seconds since the epoch") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(round(when.timestamp() * 1_000_000))


def format_us(us: int | None) -> str:
    if us is None:
        return "-"
    return datetime.fromtimestamp(us / 1_000_000, UTC).isoformat(timespec="milliseconds").replace("+00:00",
                                                                                                  "Z")
