"""Reading backup_tool's results as the operator does: the current version, results without a version
(written by an older backup_tool image still running Jobs during an upgrade), and what cannot be read."""

from __future__ import annotations

import json

from omendb.backup.contract import (
    RESULT_VERSION,
    BackupResult,
    CleanupResult,
    RestoreResult,
    UnreadableResult,
    parse_result,
    result_line,
)

BACKUP = BackupResult("omendb-20261127T075900000Z-full", "full", "production", 12345, 0, 42, 100,
                      "2026-11-27T07:59:00.000000Z", "took a full backup: no usable parent")
RESTORE = RestoreResult("omendb-20261127T075900000Z-full", 40, 2, 77, 42, 100)
CLEANUP = CleanupResult(("a-full", "b-incremental"), ("c-full",), ("junk",), dry_run=False)


def test_results_round_trip_with_their_version():
    for result in (BACKUP, RESTORE, CLEANUP):
        line = result_line(result)
        assert line.endswith("\n") and "\n" not in line[:-1]  # one line: the termination message's last
        assert json.loads(line)["version"] == RESULT_VERSION == 1
        assert parse_result(line) == result
        # The kubelet keeps the message as written; with FallbackToLogsOnError a log may come before it.
        assert parse_result("backup_tool: some log line\n" + line) == result


def test_results_without_a_version_from_an_older_backup_tool_are_read():
    # Exactly what backup_tool wrote before results had a version.
    old_backup = {"backupId": BACKUP.backup_id, "type": "full", "database": "production", "sizeBytes": 12345,
                  "startLSN": 0, "endLSN": 42, "records": 100, "createdAt": "2026-11-27T07:59:00.000000Z",
                  "notice": "took a full backup: no usable parent"}
    assert parse_result(json.dumps(old_backup, sort_keys=True)) == BACKUP
    old_restore = {"backupId": RESTORE.backup_id, "lsn": 40, "term": 2, "records": 77, "backupEndLSN": 42,
                   "backupRecords": 100}
    assert parse_result(json.dumps(old_restore)) == RESTORE
    # Before backupEndLSN/backupRecords existed a restore reached the end of its backup.
    assert parse_result(json.dumps({"backupId": "x", "lsn": 9, "term": 1, "records": 3})) == RestoreResult(
        "x", 9, 1, 3, 9, 3)


def test_an_unknown_version_is_reported_not_guessed():
    future = {**RESTORE.to_json(), "version": 2}
    got = parse_result(json.dumps(future))
    assert isinstance(got, UnreadableResult)
    assert "version 2" in got.problem and "reads version 1" in got.problem and "operator" in got.problem


def test_what_is_not_a_result():
    assert parse_result(None) is None and parse_result("") is None
    assert parse_result("backup_tool: error: no backups in /var/backups/omendb") is None  # a log tail
    assert parse_result("[1]") is None  # no line starts with "{"
    for text, why in (("{not json", "not JSON"), ("{} trailing", "not JSON"),
                      ('{"version": 1, "kind": "backup"}', "backupId"),
                      ('{"version": 1, "kind": "rename"}', "unknown kind 'rename'"),
                      ('{"lsn": "nine", "backupId": "x", "records": 1}', "restore result")):
        got = parse_result(text)
        assert isinstance(got, UnreadableResult) and why in got.problem, (text, got)
