"""Where an OmenDB's backups live: the NAME-backups volume, or an S3-compatible bucket (spec.backup.objectStore).

Both are a ``--backup-dir`` for backup_tool plus what a pod needs to reach it: the volume and its mount, or
the AWS settings as environment variables and the credentials and CA bundle as files (never a secret in an
environment variable). backup_tool reads the AWS conventions: AWS_ENDPOINT_URL, AWS_REGION,
AWS_SHARED_CREDENTIALS_FILE (+ AWS_PROFILE) and AWS_CA_BUNDLE (docs/backup.md, "Object storage").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omendb_operator import labels as L
from omendb_operator.spec import ObjectStoreSpec, OmenDBSpec
from omendb_operator.specs.backup_key import key_volume

BACKUP_DIR = "/var/backups/omendb"
OBJECT_STORE_CREDENTIALS_MOUNT = "/etc/omendb/objectstore"
OBJECT_STORE_CREDENTIALS_FILE = f"{OBJECT_STORE_CREDENTIALS_MOUNT}/credentials"
OBJECT_STORE_CA_MOUNT = "/etc/omendb/objectstore-ca"
OBJECT_STORE_CA_FILE = f"{OBJECT_STORE_CA_MOUNT}/ca.crt"


@dataclass(frozen=True)
class BackupLocation:
    backup_dir: str  # backup_tool --backup-dir: a path in the pod, or s3://bucket/prefix
    env: list[dict[str, Any]] = field(default_factory=list)
    volumes: list[dict[str, Any]] = field(default_factory=list)
    mounts: list[dict[str, Any]] = field(default_factory=list)


def object_store_url(store: ObjectStoreSpec, namespace: str, name: str) -> str:
    """s3://bucket/path; the path defaults to NAMESPACE/NAME, so OmenDBs can share a bucket."""
    path = f"{namespace}/{name}" if store.path is None else store.path
    return f"s3://{store.bucket}/{path}" if path else f"s3://{store.bucket}"


def object_store_access(store: ObjectStoreSpec, volume_prefix: str = "objectstore") -> BackupLocation:
    """The AWS settings of ``store`` as env, and its credentials and CA as read-only files (no backup_dir)."""
    env: list[dict[str, Any]] = []
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    if store.endpoint_url:
        env.append({"name": "AWS_ENDPOINT_URL", "value": store.endpoint_url})
    if store.region:
        env.append({"name": "AWS_REGION", "value": store.region})
    if store.credentials:
        env.append({"name": "AWS_SHARED_CREDENTIALS_FILE", "value": OBJECT_STORE_CREDENTIALS_FILE})
        volumes.append({"name": f"{volume_prefix}-credentials", "secret": {
            "secretName": store.credentials.name, "defaultMode": 0o440,
            "items": [{"key": store.credentials.key, "path": "credentials"}]}})
        mounts.append({"name": f"{volume_prefix}-credentials", "mountPath": OBJECT_STORE_CREDENTIALS_MOUNT,
                       "readOnly": True})
    if store.profile:
        env.append({"name": "AWS_PROFILE", "value": store.profile})
    if store.ca:
        env.append({"name": "AWS_CA_BUNDLE", "value": OBJECT_STORE_CA_FILE})
        volumes.append({"name": f"{volume_prefix}-ca", "secret": {
            "secretName": store.ca.name, "defaultMode": 0o440, "items": [{"key": store.ca.key, "path": "ca.crt"}]}})
        mounts.append({"name": f"{volume_prefix}-ca", "mountPath": OBJECT_STORE_CA_MOUNT, "readOnly": True})
    return BackupLocation("", env, volumes, mounts)


def wal_archive_url(spec: OmenDBSpec, namespace: str, name: str) -> str:
    """Where the primary ships its WAL ([wal_archive] url): beside the backups in the bucket, so backup_tool
    restore finds it (wal/<database id>/ under the same prefix); "" without an object store or archiveWal."""
    store = spec.backup.object_store
    if store is None or not store.archive_wal:
        return ""
    return object_store_url(store, namespace, name)


def wal_archive_access(spec: OmenDBSpec, name: str) -> BackupLocation:
    """What the database pods need to ship the WAL: the AWS settings and files, and the backup key that signs
    every piece (the one backup_tool restores with); empty without archiving."""
    store = spec.backup.object_store
    if store is None or not store.archive_wal:
        return BackupLocation("")
    access = object_store_access(store)
    key_vol, key_mount, key_env = key_volume(L.Names(name).backup_key)
    return BackupLocation("", [*access.env, key_env], [*access.volumes, key_vol], [*access.mounts, key_mount])


def volume_location(claim: str) -> BackupLocation:
    return BackupLocation(BACKUP_DIR, [], [{"name": "backups", "persistentVolumeClaim": {"claimName": claim}}],
                          [{"name": "backups", "mountPath": BACKUP_DIR}])


def object_store_location(store: ObjectStoreSpec, namespace: str, name: str) -> BackupLocation:
    access = object_store_access(store)
    return BackupLocation(object_store_url(store, namespace, name), access.env, access.volumes, access.mounts)


def backup_location(spec: OmenDBSpec, namespace: str, name: str) -> BackupLocation:
    """Where OmenDB ``namespace/name`` writes its backups (CronJobs, OmenDBBackup, pre-upgrade backups)."""
    store = spec.backup.object_store
    if store is None:
        return volume_location(L.Names(name).backup_volume)
    return object_store_location(store, namespace, name)
