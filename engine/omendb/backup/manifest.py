"""The backup manifest (``manifest.json``): what a backup holds and how to check it.

Pure code: building, serializing and validating manifests. The manifest carries its own sha256 (over its
canonical JSON without that field), so a change to any byte of any file of a backup, the manifest
included, is detected. That catches damage, not forgery (anyone can recompute a sha256): a keyed backup's
manifest also carries an HMAC-SHA256 (``mac``) made with the backup key (keys.py), checked by
``authenticate``.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import omendb
from omendb.backup import FORMAT_VERSION, READS_FORMATS
from omendb.backup.errors import Corrupt
from omendb.backup.keys import KEY_FILE_ENV, BackupKey, NotAuthentic

MANIFEST_FILE = "manifest.json"
FULL, INCREMENTAL = "full", "incremental"
# The source's checkpoint (base) file at start_lsn: as is when its blocks are already zstandard-compressed
# ([storage] enable_compression, the default), else compressed as a whole.
SNAPSHOT_FILE = "snapshot.odb"
SNAPSHOT_ZST = "snapshot.odb.zst"
# A format-2 checkpoint with its key and LSN columns packed (columns.py; codec "odb-columns"), since backup
# format 2.
SNAPSHOT_COLS = "snapshot.odb.cols"
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
    # Keyed backups only (absent from an unkeyed manifest, so manifests written before keys still verify):
    key_id: str | None = None  # fingerprint of the backup key (keys.BackupKey.key_id)
    parent_mac: str | None = None  # the parent's mac: the child's mac covers it, binding the chain
    mac: str | None = None  # HMAC-SHA256 over signed_bytes()
    manifest_sha256: str = field(default="")

    @property
    def created(self) -> datetime:
        return datetime.fromtimestamp(self.created_at_epoch, UTC)

    def file(self, name: str) -> FileEntry | None:
        return next((f for f in self.files if f.name == name), None)

    @property
    def snapshot(self) -> FileEntry | None:
        return self.file(SNAPSHOT_FILE) or self.file(SNAPSHOT_ZST) or self.file(SNAPSHOT_COLS)

    @property
    def keyed(self) -> bool:
        return self.mac is not None

    def _body(self) -> dict[str, Any]:
        body = asdict(self)
        for name in _KEY_FIELDS:
            if body[name] is None:
                del body[name]
        return body

    def canonical(self) -> bytes:
        """What manifest_sha256 covers: every field but itself (the mac included)."""
        body = self._body()
        body.pop("manifest_sha256")
        return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()

    def signed_bytes(self) -> bytes:
        """What the mac covers: every field but the mac and manifest_sha256 (key_id and parent_mac
        included), so every file's sha256, the parent's id and the parent's mac are authenticated."""
        body = self._body()
        body.pop("manifest_sha256")
        body.pop("mac", None)
        return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()

    def sealed(self, key: BackupKey | None = None) -> BackupManifest:
        """With its manifest_sha256; with a key, also signed (key_id and mac)."""
        from dataclasses import replace

        m = self
        if key is not None:
            m = replace(m, key_id=key.key_id, mac=None)
            m = replace(m, mac=key.mac(m.signed_bytes()))
        return replace(m, manifest_sha256=hashlib.sha256(m.canonical()).hexdigest())

    def to_json(self) -> bytes:
        return (json.dumps(self._body(), indent=2, sort_keys=True) + "\n").encode()


_KEY_FIELDS = ("key_id", "parent_mac", "mac")
UNKEYED_WARNING = ("backup {id} is unkeyed: its checksums match but its authenticity is not checked (anyone "
                   "who can write to the backup directory could have forged it); take keyed backups by "
                   f"setting {KEY_FILE_ENV} or --key-file")


def authenticate(manifest: BackupManifest, key: BackupKey | None, allow_unkeyed: bool = False) -> str | None:
    """Check a manifest's mac against the configured key (docs/backup.md, "Keys"). Returns a warning for
    an accepted unkeyed backup; raises NotAuthentic for everything refused, saying what to do."""
    m = manifest
    if not m.keyed:
        if key is None or allow_unkeyed:
            return UNKEYED_WARNING.format(id=m.id)
        # Stripping key_id and mac from a forged manifest must not turn it into an acceptable backup.
        raise NotAuthentic(f"backup {m.id} is unkeyed but a backup key is configured ({key.origin}): it may be "
                           "a forgery with its signature stripped. If it was taken before backups were keyed "
                           "and you trust it, pass --allow-unkeyed; otherwise restore a keyed backup")
    if key is None:
        raise NotAuthentic(f"backup {m.id} is keyed (key id {m.key_id}) and no backup key is configured, so "
                           f"its authenticity cannot be checked; pass --key-file PATH or set {KEY_FILE_ENV} "
                           "to the key it was made with")
    if m.key_id != key.key_id:
        raise NotAuthentic(f"backup {m.id} was made with key id {m.key_id}, the configured key ({key.origin}) "
                           f"has key id {key.key_id}: use the key it was made with (or the backup was "
                           "tampered with)")
    if not key.verifies(m.signed_bytes(), m.mac or ""):
        raise NotAuthentic(f"backup {m.id}: the manifest's signature (mac) does not match its content: the "
                           "backup was modified after it was made (forged or tampered with); do not restore "
                           "it — restore another backup (backup_tool list) and take a new full backup")
    return None


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
        if version not in READS_FORMATS:
            raise Corrupt(f"{where}: backup format version {version!r} is not supported by this backup_tool "
                          f"({omendb.__version__} reads versions {', '.join(map(str, READS_FORMATS))}); use the "
                          f"backup_tool that wrote it")
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
