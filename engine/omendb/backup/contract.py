"""The contract between the operator and ``backup_tool``: the requests the operator's Jobs run and the
results backup_tool hands back.

Both sides import this module (it needs only the standard library and omendb.files, so the slim operator
image, which has no numpy or numba, can), so an
option renamed in ``backup_tool``'s parser or a result field renamed in its ``--result-file`` JSON breaks a
test (tests/backup/test_contract.py round-trips every request through the real parser) instead of a Job
in a cluster.

Requests are frozen dataclasses whose ``argv()`` is the container command. Results are one JSON object per
run, written to ``--result-file`` (the operator passes /dev/termination-log: the kubelet keeps it in the
pod's status, where the operator reads it). Since result version 1 the object carries ``"version"`` and
``"kind"``; a result without them was written by a backup_tool from before (an old engine image still
running Jobs during an upgrade) and is read by its keys. A version this module does not know is reported,
never guessed at.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from typing import Any

# The name of the directory the restore Jobs move a volume's previous contents into (restore_job.py);
# defined by the restore code, which never touches it.
from omendb.files import SET_ASIDE as SET_ASIDE

PROGRAM = "backup_tool"
RESTORE_JOB = ("python", "-m", "omendb.backup.restore_job")  # the restore Jobs' program (restore_job.py)
RESULT_VERSION = 1
FULL, INCREMENTAL = "full", "incremental"
COMMAND_OF_TYPE = {FULL: "full-backup", INCREMENTAL: "incremental-backup"}
RESTORE_ACTIONS = ("restore", "set-aside", "put-back", "discard")


# ---- requests -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BackupRequest:
    """A full or incremental backup, online from ``source`` (a server URL) or offline from ``data_dir``.

    The operator's CronJobs, OmenDBBackup Jobs and pre-upgrade backups (an OmenDBBackup of type full) all
    take their backups online from the primary Service."""

    type: str  # FULL or INCREMENTAL
    database: str
    backup_dir: str
    source: str | None = None
    data_dir: str | None = None
    result_file: str | None = None

    def __post_init__(self) -> None:
        if self.type not in COMMAND_OF_TYPE:
            raise ValueError(f"backup type {self.type!r} is not one of {', '.join(COMMAND_OF_TYPE)}")

    def argv(self) -> list[str]:
        out = [PROGRAM]
        if self.source is not None:
            out += ["--source", self.source]
        if self.data_dir is not None:
            out += ["--data-dir", self.data_dir]
        out += ["--backup-dir", self.backup_dir]
        if self.result_file is not None:
            out += ["--result-file", self.result_file]
        return [*out, COMMAND_OF_TYPE[self.type], "--database", self.database]


@dataclass(frozen=True)
class RestoreRequest:
    """``backup_tool restore`` of a backup (an id or ``latest``), optionally to an LSN or a time."""

    data_dir: str
    backup_dir: str
    backup_id: str = "latest"
    wal_dir: str | None = None
    lsn: int | None = None  # wins over time, as in OmenDBRestore spec.pointInTime
    time: str | None = None
    allow_unkeyed: bool = False
    force: bool = False
    result_file: str | None = None
    lock_timeout: float | None = None

    def target_argv(self) -> list[str]:
        """What to restore: --backup-id, the point in time, --allow-unkeyed."""
        out = ["--backup-id", self.backup_id or "latest"]
        if self.lsn is not None:
            out += ["--to-lsn", str(self.lsn)]
        elif self.time:
            out += ["--to-time", self.time]
        if self.allow_unkeyed:
            out.append("--allow-unkeyed")
        return out

    def argv(self) -> list[str]:
        out = [PROGRAM, "--data-dir", self.data_dir]
        if self.wal_dir is not None:
            out += ["--wal-dir", self.wal_dir]
        out += ["--backup-dir", self.backup_dir]
        if self.result_file is not None:
            out += ["--result-file", self.result_file]
        if self.lock_timeout is not None:
            out += ["--lock-timeout", _number(self.lock_timeout)]
        return [*out, "restore", *self.target_argv(), *(["--force"] if self.force else [])]


@dataclass(frozen=True)
class CleanupRequest:
    """``backup_tool cleanup``: delete the backups older than the retention (a chain stays whole)."""

    backup_dir: str
    retention_days: float
    source: str | None = None  # ignored by cleanup; the CronJobs pass it like every backup_tool Job
    result_file: str | None = None

    def argv(self) -> list[str]:
        out = [PROGRAM]
        if self.source is not None:
            out += ["--source", self.source]
        out += ["--backup-dir", self.backup_dir]
        if self.result_file is not None:
            out += ["--result-file", self.result_file]
        return [*out, "cleanup", "--retention-days", _number(self.retention_days)]


@dataclass(frozen=True)
class RestoreJobRequest:
    """One step of the operator's restore Jobs on a pod's data and WAL volumes (restore_job.py):
    ``set-aside``, ``restore`` (set aside, then run ``restore``), ``put-back`` or ``discard``."""

    action: str
    data_dir: str
    wal_dir: str
    restore: RestoreRequest | None = None  # for action "restore" only

    def __post_init__(self) -> None:
        if self.action not in RESTORE_ACTIONS:
            raise ValueError(f"unknown restore action {self.action!r}; one of {', '.join(RESTORE_ACTIONS)}")
        if (self.action == "restore") != (self.restore is not None):
            raise ValueError("a restore Job of action 'restore' (and only that one) runs a RestoreRequest")

    def argv(self) -> list[str]:
        out = [*RESTORE_JOB, self.action, "--data-dir", self.data_dir, "--wal-dir", self.wal_dir]
        return out + ["--", *self.restore.argv()] if self.restore is not None else out


Request = BackupRequest | RestoreRequest | CleanupRequest


def _number(value: float) -> str:
    """7 -> "7", 0.5 -> "0.5" (as the operator always wrote them)."""
    return str(int(value)) if float(value).is_integer() else str(value)


def request_from_args(args: argparse.Namespace) -> Request:
    """The request a parsed backup_tool command line carries (the inverse of ``argv()``, for the test
    that every request survives backup_tool's real parser unchanged)."""
    if args.command in ("full-backup", "incremental-backup"):
        kind = FULL if args.command == "full-backup" else INCREMENTAL
        return BackupRequest(kind, args.database, args.backup_dir, args.source, args.data_dir, args.result_file)
    if args.command == "restore":
        return RestoreRequest(args.data_dir, args.backup_dir, args.backup_id, args.wal_dir, args.to_lsn,
                              args.to_time, args.allow_unkeyed, args.force, args.result_file,
                              args.lock_timeout or None)
    if args.command == "cleanup":
        return CleanupRequest(args.backup_dir, args.retention_days, args.source, args.result_file)
    raise ValueError(f"backup_tool {args.command} is not part of the operator's contract")


# ---- results --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BackupResult:
    """Only the id is required when reading: the rest is for messages and status (None/0/"" if absent)."""

    backup_id: str
    type: str = ""
    database: str = ""
    size_bytes: int = 0
    start_lsn: int | None = None
    end_lsn: int | None = None
    records: int | None = None
    created_at: str = ""
    notice: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"version": RESULT_VERSION, "kind": "backup", "backupId": self.backup_id, "type": self.type,
                "database": self.database, "sizeBytes": self.size_bytes, "startLSN": self.start_lsn,
                "endLSN": self.end_lsn, "records": self.records, "createdAt": self.created_at,
                "notice": self.notice}


@dataclass(frozen=True)
class RestoreResult:
    backup_id: str
    lsn: int  # the restored database's LSN
    term: int
    records: int
    backup_end_lsn: int  # where the restored backup ends (a restore without a target reaches it)
    backup_records: int
    archived_lsn: int | None = None  # the restore continued the backup with archived WAL up to here
    archive_stop: str = ""  # why the archived WAL ended before the end of the archive (a gap, damage)

    def to_json(self) -> dict[str, Any]:
        out = {"version": RESULT_VERSION, "kind": "restore", "backupId": self.backup_id, "lsn": self.lsn,
               "term": self.term, "records": self.records, "backupEndLSN": self.backup_end_lsn,
               "backupRecords": self.backup_records}
        if self.archived_lsn is not None:
            out.update(archivedLSN=self.archived_lsn, archiveStop=self.archive_stop)
        return out


@dataclass(frozen=True)
class CleanupResult:
    removed: tuple[str, ...]  # backup ids deleted (or, with --dry-run, that would be)
    kept: tuple[str, ...]
    skipped: tuple[str, ...]  # directories that are not usable backups, left alone
    dry_run: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"version": RESULT_VERSION, "kind": "cleanup", "removed": list(self.removed),
                "kept": list(self.kept), "skipped": list(self.skipped), "dryRun": self.dry_run}


@dataclass(frozen=True)
class UnreadableResult:
    """A result that is there but cannot be used: what is wrong and what to do."""

    problem: str


Result = BackupResult | RestoreResult | CleanupResult


def result_line(result: Result) -> str:
    """The --result-file content: one JSON object on one line."""
    return json.dumps(result.to_json(), sort_keys=True) + "\n"


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)


def parse_result(message: str | None) -> Result | UnreadableResult | None:
    """The result in a termination message (its last line starting with ``{``), or None when there is none
    (a log tail, or the pod is gone). Results of version 1 and results without a version (an older
    backup_tool) are read; anything else is an UnreadableResult that says why."""
    line = next((ln.strip() for ln in reversed((message or "").strip().splitlines())
                 if ln.strip().startswith("{")), None)
    if line is None:
        return None
    try:
        body = json.loads(line)
    except ValueError as exc:
        return UnreadableResult(f"the result is not JSON ({exc}): {line[:200]}")
    if not isinstance(body, dict):
        return UnreadableResult(f"the result is not a JSON object: {line[:200]}")
    version = body.get("version")
    if version is not None and version != RESULT_VERSION:
        return UnreadableResult(f"backup_tool wrote a result of version {version!r}, but this operator reads "
                                f"version {RESULT_VERSION} (and results without a version); run an operator "
                                f"as new as the engine image")
    kind = body.get("kind") or ("restore" if "lsn" in body else "backup" if "backupId" in body else None)
    try:
        if kind == "backup":
            if not body.get("backupId"):
                raise KeyError("backupId")
            return BackupResult(str(body["backupId"]), str(body.get("type") or ""), str(body.get("database") or ""),
                                int(body.get("sizeBytes") or 0), _int_or_none(body.get("startLSN")),
                                _int_or_none(body.get("endLSN")), _int_or_none(body.get("records")),
                                str(body.get("createdAt") or ""), str(body["notice"]) if body.get("notice") else None)
        if kind == "restore":
            # backupEndLSN/backupRecords: results of older backup_tool runs may lack them (then the restore
            # reached the end of the backup, which is all the check can assume).
            lsn, records = int(body["lsn"]), int(body["records"])
            archived = body.get("archivedLSN")
            return RestoreResult(str(body["backupId"]), lsn, int(body.get("term") or 0), records,
                                 int(body.get("backupEndLSN", lsn)), int(body.get("backupRecords", records)),
                                 None if archived is None else int(archived), str(body.get("archiveStop", "")))
        if kind == "cleanup":
            return CleanupResult(tuple(map(str, body["removed"])), tuple(map(str, body["kept"])),
                                 tuple(map(str, body["skipped"])), bool(body.get("dryRun", False)))
    except (KeyError, TypeError, ValueError) as exc:
        return UnreadableResult(f"the {kind} result lacks or mistypes {exc} (is backup_tool from another "
                                f"release?): {line[:200]}")
    return UnreadableResult(f"the result is of an unknown kind {kind!r}: {line[:200]}")
