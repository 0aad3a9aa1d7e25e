"""Objects the plugin creates, built from what it read (pure functions, no client)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from omendb_operator import labels as L

RESTORE_KIND = "OmenDBRestore"
BACKUP_KIND = "OmenDBBackup"
# Kubernetes names are at most 63 characters when they end up in labels (Jobs label their pods).
MAX_NAME = 63


def _resource_name(name: str, what: str, now: dt.datetime) -> str:
    suffix = f"-{what}-{now.strftime('%Y%m%d%H%M%S')}"
    return name[: MAX_NAME - len(suffix)] + suffix


def restore_resource(name: str, namespace: str, backup_id: str, now: dt.datetime, to_lsn: int | None = None,
                     to_time: str | None = None) -> dict[str, Any]:
    """An OmenDBRestore of OmenDB ``name`` from ``backup_id`` (``latest`` for the newest), optionally to an
    LSN or a time (point in time)."""
    if not backup_id.strip():
        raise ValueError("--backup-id is empty: give a backup id (`kubectl get omendbbackup`) or 'latest'")
    if to_lsn is not None and to_time:
        raise ValueError("--to-lsn and --to-time exclude each other: give one point in time")
    spec: dict[str, Any] = {"cluster": {"name": name}, "backupId": backup_id}
    if to_lsn is not None:
        spec["pointInTime"] = {"lsn": to_lsn}
    elif to_time:
        spec["pointInTime"] = {"time": to_time}
    return {
        "apiVersion": L.API_VERSION,
        "kind": RESTORE_KIND,
        "metadata": {"name": _resource_name(name, "restore", now), "namespace": namespace,
                     "labels": L.selector_labels(name)},
        "spec": spec,
    }


def backup_resource(name: str, namespace: str, kind: str, now: dt.datetime) -> dict[str, Any]:
    """An OmenDBBackup (``full`` or ``incremental``) of OmenDB ``name``."""
    return {
        "apiVersion": L.API_VERSION,
        "kind": BACKUP_KIND,
        "metadata": {"name": _resource_name(name, "backup", now), "namespace": namespace,
                     "labels": L.selector_labels(name)},
        "spec": {"cluster": {"name": name}, "type": kind},
    }
