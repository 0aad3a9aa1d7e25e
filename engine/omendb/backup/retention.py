"""Which backups ``cleanup --retention-days N`` removes. Pure code.

A backup is kept when it is younger than the retention, when it is the newest backup of its database
(there is always something to restore from, even if backups stopped for longer than the retention), or
when a kept backup depends on it (its chain of parents). Everything else is removed, newest first, so an
interrupted cleanup never leaves an incremental whose parent is gone.
"""

from __future__ import annotations

from dataclasses import dataclass

from omendb.backup.manifest import BackupManifest


@dataclass(frozen=True)
class Plan:
    remove: list[BackupManifest]  # in the order to delete them (descendants first)
    keep: list[tuple[BackupManifest, str]]  # with the reason


def plan(backups: list[BackupManifest], retention_days: float, now: float) -> Plan:
    by_id = {m.id: m for m in backups}
    cutoff = now - retention_days * 86400
    reasons: dict[str, str] = {}
    newest: dict[str, BackupManifest] = {}
    for m in backups:
        if m.database not in newest or (m.created_at_epoch, m.end_lsn) > (newest[m.database].created_at_epoch,
                                                                           newest[m.database].end_lsn):
            newest[m.database] = m
    for m in backups:
        if m.created_at_epoch >= cutoff:
            reasons[m.id] = f"younger than {retention_days:g} days"
        elif newest[m.database].id == m.id:
            reasons[m.id] = f"newest backup of database {m.database!r}"
    for kept_id in list(reasons):
        child = by_id[kept_id]
        while child.parent is not None and child.parent in by_id:
            parent = by_id[child.parent]
            if parent.id not in reasons:
                reasons[parent.id] = f"{kept_id} depends on it"
            child = parent
    remove = [m for m in backups if m.id not in reasons]
    remove.sort(key=lambda m: (m.created_at_epoch, m.end_lsn), reverse=True)
    keep = [(m, reasons[m.id]) for m in backups if m.id in reasons]
    return Plan(remove, keep)
