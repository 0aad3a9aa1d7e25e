"""The retention plan: expired backups go, newest first; nothing a kept backup depends on goes; the newest
backup of each database always stays."""

from __future__ import annotations

from omendb.backup.manifest import FULL, INCREMENTAL, BackupManifest
from omendb.backup.retention import plan

DAY = 86400.0
NOW = 1_800_000_000.0


def _m(backup_id: str, age_days: float, parent: str | None = None,
       database: str = "production") -> BackupManifest:
    return BackupManifest(
        id=backup_id, type=INCREMENTAL if parent else FULL, parent=parent, database=database, start_lsn=0,
        end_lsn=int(1000 - age_days), start_term=1, term=1, created_at="",
        created_at_epoch=NOW - age_days * DAY,
        first_commit_us=None, last_commit_us=None, earliest_restore_us=0, records=0, content_sha256="",
        files=[], source={}, engine_database="", index={})


def test_expired_chain_removed_newest_first_and_dependencies_kept():
    backups = [_m("f1", 40), _m("i1", 39, "f1"), _m("i2", 38, "i1"),  # old chain, all expired
               _m("f2", 33), _m("i3", 20, "f2"), _m("i4", 1, "i3")]  # f2 expired but needed by i3/i4
    result = plan(backups, 30, NOW)
    assert [m.id for m in result.remove] == ["i2", "i1", "f1"]
    reasons = {m.id: why for m, why in result.keep}
    assert reasons["f2"] == "i3 depends on it"
    assert reasons["i3"].startswith("younger than") and reasons["i4"].startswith("younger than")


def test_newest_backup_of_each_database_survives_any_retention():
    backups = [_m("f1", 90), _m("i1", 80, "f1"), _m("s1", 70, database="staging")]
    result = plan(backups, 30, NOW)
    assert result.remove == []
    reasons = {m.id: why for m, why in result.keep}
    assert reasons == {"i1": "newest backup of database 'production'", "f1": "i1 depends on it",
                       "s1": "newest backup of database 'staging'"}


def test_zero_retention_keeps_only_the_newest_chain():
    backups = [_m("f1", 3), _m("i1", 2, "f1"), _m("f2", 1), _m("i2", 0.5, "f2")]
    result = plan(backups, 0, NOW)
    assert [m.id for m in result.remove] == ["i1", "f1"]
