"""NAME-backup-key: the key that makes an OmenDB's backups tamper-evident (docs/backup.md, "Keys").

A random 32-byte key (64 hex characters, usable as ``OMENDB_BACKUP_KEY`` as is), generated once and kept
for the life of the Secret: the builder reuses the existing key, so a reconcile never changes it (that
would make every existing backup fail its authentication). backup_tool signs every backup with it and
refuses forged ones. Every backup_tool Job mounts it as a file (never an environment variable, never on
the backup volume) at KEY_FILE and finds it through OMENDB_BACKUP_KEY_FILE.

The Secret lives as long as the backups it signs: like the backup volume NAME-backups, it is owned by
(and deleted with) the OmenDB only when spec.backup.volume.deleteOnDelete is set, so a new OmenDB can
bootstrap from the backups of a deleted one.
"""

from __future__ import annotations

import secrets as pysecrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from omendb_operator import labels as L
from omendb_operator.spec import OmenDBSpec
from omendb_operator.specs.secrets import encode_data

KEY = "key"
KEY_MOUNT = "/etc/omendb/backup-key"
KEY_FILE = f"{KEY_MOUNT}/{KEY}"
KEY_FILE_ENV = "OMENDB_BACKUP_KEY_FILE"  # as omendb.backup.keys reads it
MIN_KEY_CHARS = 32  # omendb.backup.keys.MIN_KEY_BYTES


def generate_key() -> str:
    return pysecrets.token_hex(32)


@dataclass(frozen=True)
class BackupKeyResult:
    manifest: dict[str, Any]
    generated: bool  # a new key was made (an event says so)


def build_backup_key_secret(owner: dict[str, Any], spec: OmenDBSpec, existing: dict[str, str],
                            make_key: Callable[[], str] = generate_key) -> BackupKeyResult:
    """``existing``: the live Secret's data as text (secrets.decode_secret_data), empty when absent."""
    names = L.Names(owner["metadata"]["name"])
    key = existing.get(KEY, "")
    generated = len(key.strip()) < MIN_KEY_CHARS
    if generated:
        key = make_key()
    manifest = {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": L.metadata(owner, names.backup_key, "backup-key", owned=spec.backup.volume.delete_on_delete),
        "data": encode_data({KEY: key}),
    }
    return BackupKeyResult(manifest, generated)


def key_volume(secret_name: str, optional: bool = False
               ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(volume, volumeMount, env var) giving a backup_tool container the key of ``secret_name`` as a file.
    ``optional`` for another OmenDB's key (bootstrap): when it is missing the pod still starts and
    backup_tool fails saying which key file it could not read, instead of a pod stuck in creation."""
    secret: dict[str, Any] = {"secretName": secret_name, "items": [{"key": KEY, "path": KEY}],
                              "defaultMode": 0o440}
    if optional:
        secret["optional"] = True
    volume = {"name": "backup-key", "secret": secret}
    mount = {"name": "backup-key", "mountPath": KEY_MOUNT, "readOnly": True}
    return volume, mount, {"name": KEY_FILE_ENV, "value": KEY_FILE}
