"""The backup key: an HMAC-SHA256 secret, kept off the backup volume, that makes backups tamper-evident.

Whoever can write to the backup directory can change a payload file and recompute every sha256 in its
manifest (and the manifest's own sha256): checksums catch damage, not forgery. A keyed backup's manifest
also carries ``key_id`` (a fingerprint of the key) and ``mac``, an HMAC-SHA256 over the manifest, which
lists the sha256 of every payload file; since every reader recomputes those sha256 from the bytes it
reads, the MAC over the manifest authenticates the content too. An incremental's manifest records its
parent's MAC (``parent_mac``), so a chain cannot be spliced from other (even genuine) backups.

The key is read from ``--key-file PATH``, else the file named by ``OMENDB_BACKUP_KEY_FILE``, else
``OMENDB_BACKUP_KEY`` (the key itself). A key is text or bytes of at least 32 bytes, used as is (a
trailing newline of a key file is dropped, so ``openssl rand -hex 32 > key`` and ``OMENDB_BACKUP_KEY=$(cat
key)`` are the same key). The rules for which backups are accepted with which key are in docs/backup.md.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Mapping
from dataclasses import dataclass

from omendb.backup.errors import Corrupt, Usage

KEY_FILE_ENV = "OMENDB_BACKUP_KEY_FILE"
KEY_ENV = "OMENDB_BACKUP_KEY"
MIN_KEY_BYTES = 32
_KEY_ID_LABEL = b"omendb-backup-key-id"
_MAC_LABEL = b"omendb-backup-manifest-v1\0"  # domain separation: this MAC is only ever a manifest's
_GENERATE = "generate one with `openssl rand -hex 32 > backup.key` and keep it off the backup volume"


class NotAuthentic(Corrupt):
    """A backup failed (or could not get) its authenticity check: exit code 3 like any failed check."""


@dataclass(frozen=True)
class BackupKey:
    secret: bytes
    origin: str  # where it was read from, for messages (never the key itself)

    @property
    def key_id(self) -> str:
        """A fingerprint that identifies the key without revealing it (16 hex digits)."""
        return hmac.new(self.secret, _KEY_ID_LABEL, hashlib.sha256).hexdigest()[:16]

    def mac(self, signed: bytes) -> str:
        return hmac.new(self.secret, _MAC_LABEL + signed, hashlib.sha256).hexdigest()

    def verifies(self, signed: bytes, mac: str) -> bool:
        return hmac.compare_digest(self.mac(signed), mac)


def _checked(secret: bytes, origin: str) -> BackupKey:
    if len(secret) < MIN_KEY_BYTES:
        raise Usage(f"the backup key from {origin} is {len(secret)} bytes; at least {MIN_KEY_BYTES} are "
                    f"needed — {_GENERATE}")
    return BackupKey(secret, origin)


def load_key(key_file: str | None, environ: Mapping[str, str] = os.environ) -> BackupKey | None:
    """The configured key (``--key-file``, ``OMENDB_BACKUP_KEY_FILE``, ``OMENDB_BACKUP_KEY``, in that
    order), or None when none is configured. A named file that cannot be read is an error, never "no key":
    a backup Job whose key is missing must not quietly write or accept unkeyed backups."""
    path = key_file or environ.get(KEY_FILE_ENV) or None
    if path:
        origin = "--key-file" if key_file else f"{KEY_FILE_ENV}={path}"
        try:
            with open(path, "rb") as f:
                raw = f.read(1 << 16)
        except OSError as exc:
            raise Usage(f"cannot read the backup key file {path} ({origin}): {exc.strerror}; point it at the "
                        f"key the backups were made with, or {_GENERATE}") from None
        return _checked(raw.removesuffix(b"\n").removesuffix(b"\r"), f"{origin} ({path})")
    text = environ.get(KEY_ENV)
    if text:
        return _checked(text.encode(), KEY_ENV)
    return None
