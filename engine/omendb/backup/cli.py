"""``backup_tool``: the command line of the guide's backup, disaster-recovery and upgrade procedures.

    backup_tool --data-dir D --backup-dir B full-backup --database NAME
    backup_tool --data-dir D --backup-dir B incremental-backup --database NAME
    backup_tool --backup-dir B list [--database NAME] [--output json]
    backup_tool --data-dir D --backup-dir B restore --backup-id ID|latest [--to-lsn N | --to-time T] [--force]
                [--without-wal-archive]
    backup_tool [--data-dir D] --backup-dir B verify --backup-id ID|latest [--deep]
    backup_tool --backup-dir B cleanup --retention-days N [--dry-run]
    backup_tool --data-dir D rollback-restore

``--backup-dir`` is a directory or an object store URL, ``s3://bucket/prefix`` (credentials, endpoint, region
and CA from the AWS environment variables: omendb.objectstore, docs/backup.md).

``--source URL`` (with ``--credentials-file``, OMENDB_CREDENTIALS_FILE or OMENDB_USER/OMENDB_PASSWORD, and
``--ca-file`` or OMENDB_CA_FILE) backs up a running server instead of reading D. ``--key-file PATH`` (or
OMENDB_BACKUP_KEY_FILE, OMENDB_BACKUP_KEY) signs new backups and authenticates the ones read (keys.py). Exit
codes are in omendb.backup.errors and docs/backup.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from omendb import wal_archive
from omendb.backup.bucket import open_store
from omendb.backup.contract import BackupResult, CleanupResult, RestoreResult, Result, result_line
from omendb.backup.create import take_backup
from omendb.backup.errors import EXIT_CORRUPT, EXIT_NOT_FOUND, EXIT_OK, EXIT_STORE, BackupError, NotFound, Usage
from omendb.backup.keys import KEY_ENV, KEY_FILE_ENV, load_key
from omendb.backup.layout import resolve
from omendb.backup.manifest import FULL, INCREMENTAL, BackupManifest, format_us, parse_time
from omendb.backup.restore import Target, restore, rollback
from omendb.backup.retention import plan
from omendb.backup.source import LocalSource, RemoteSource, load_credentials
from omendb.backup.store import BackupStore
from omendb.backup.verify import Report, verify_backup, verify_data_dir
from omendb.objectstore import ObjectStoreError

CREDENTIALS_FILE_ENV = "OMENDB_CREDENTIALS_FILE"

log = logging.getLogger("omendb.backup")


class Progress:
    """Bytes processed: a progress bar on a terminal, a log line every few seconds otherwise."""

    def __init__(self, label: str, quiet: bool) -> None:
        self.label, self.quiet, self.total = label, quiet, 0
        self.started = self.last = time.monotonic()
        self.bar: Any = None
        if not quiet and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(desc=label, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr)

    def __call__(self, n: int) -> None:
        self.total += n
        if self.bar is not None:
            self.bar.update(n)
        elif not self.quiet and time.monotonic() - self.last >= 5:
            self.last = time.monotonic()
            log.info("%s: %.1f MiB so far", self.label, self.total / 2**20)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _global_options(parser: argparse.ArgumentParser, suppress: bool) -> None:
    """Options accepted before the subcommand (as in the guide) and after it."""
    default: Any = argparse.SUPPRESS if suppress else None
    parser.add_argument("--data-dir", default=default,
                        help="the database: the directory holding data/ and wal/ (e.g. /var/lib/omendb) or "
                             "the data directory itself")
    parser.add_argument("--wal-dir", default=default, help="the WAL directory when [wal] dir is set")
    parser.add_argument("--backup-dir", default=default, help="where backups are kept")
    parser.add_argument("--source", default=default, metavar="URL",
                        help="back up a running server online (https://host:3000) instead of reading "
                             "--data-dir")
    parser.add_argument("--credentials-file", default=default,
                        help="for --source: 'user:password' or JSON {\"username\": ..., \"password\": ...} "
                             f"(default: the file named by {CREDENTIALS_FILE_ENV}, else OMENDB_USER / "
                             "OMENDB_PASSWORD)")
    parser.add_argument("--ca-file", default=default,
                        help="for --source over TLS: CA certificate (PEM) (default: OMENDB_CA_FILE)")
    parser.add_argument("--key-file", default=default, metavar="PATH",
                        help=f"the backup key (HMAC-SHA256, at least 32 bytes): signs new backups, "
                             f"authenticates the ones read (default: the file named by {KEY_FILE_ENV}, else "
                             f"{KEY_ENV}). Keep it off the backup volume")
    parser.add_argument("--lock-timeout", type=float, default=argparse.SUPPRESS if suppress else 0.0,
                        help="seconds to wait for another backup_tool run on the backup directory (default "
                             "0)")
    parser.add_argument("--compression-level", type=int, default=argparse.SUPPRESS if suppress else 3,
                        choices=range(1, 23), metavar="1-22", help="zstandard level (default 3)")
    parser.add_argument("--result-file", default=default, metavar="PATH",
                        help="also write the result of a backup, restore or cleanup as one JSON object to "
                             "PATH (e.g. /dev/termination-log, where the operator reads it; docs/backup.md)")
    parser.add_argument("--quiet", "-q", action="store_true",
                        default=argparse.SUPPRESS if suppress else False,
                        help="only errors and the result")


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="backup_tool", description="OmenDB backups: full and incremental, "
                                  "point-in-time restore, verify, retention; offline or online (--source).")
    _global_options(top, suppress=False)
    common = argparse.ArgumentParser(add_help=False)
    _global_options(common, suppress=True)
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    for name, text in (("full-backup", "take a full backup"),
                       ("incremental-backup", "back up the changes since the latest backup (full when there "
                                              "is no usable parent)")):
        p = sub.add_parser(name, parents=[common], help=text, description=text)
        p.add_argument("--database", required=True, help="name the backups are filed under")

    p = sub.add_parser("list", parents=[common], help="list backups, newest first (id first, no header)")
    p.add_argument("--database", help="only this database's backups")
    p.add_argument("--output", choices=("text", "json"), default="text")

    p = sub.add_parser("restore", parents=[common], help="restore a backup (optionally to an LSN or time)")
    p.add_argument("--backup-id", required=True, help="a backup id, or 'latest'")
    p.add_argument("--database", help="with 'latest': the newest backup of this database")
    target = p.add_mutually_exclusive_group()
    target.add_argument("--to-lsn", type=int, help="restore the state right after this LSN")
    target.add_argument("--to-time", help="restore the state as of this time (ISO 8601, UTC if no offset)")
    p.add_argument("--force", action="store_true", help="replace a data directory that holds a database")
    p.add_argument("--without-wal-archive", action="store_true",
                   help="stop at the end of the backup chain even if the WAL archive beside the backups "
                        "continues it (by default the restore replays the archived WAL up to the target)")
    p.add_argument("--allow-unkeyed", action="store_true",
                   help="with a backup key configured, still accept backups made without one (e.g. taken "
                        "before backups were keyed); they are restored with a warning")

    p = sub.add_parser("verify", parents=[common], help="check a backup's checksums and chain")
    p.add_argument("--backup-id", required=True, help="a backup id, or 'latest'")
    p.add_argument("--database", help="with 'latest': the newest backup of this database")
    p.add_argument("--deep", action="store_true", help="also restore into a temporary directory and compare")
    p.add_argument("--allow-unkeyed", action="store_true",
                   help="with a backup key configured, still accept backups made without one (with a warning)")

    p = sub.add_parser("cleanup", parents=[common], help="delete backups older than the retention")
    p.add_argument("--retention-days", type=float, required=True)
    p.add_argument("--dry-run", action="store_true", help="say what would be removed, remove nothing")

    sub.add_parser("rollback-restore", parents=[common],
                   help="put back the data an interrupted restore moved aside")
    return top


def _need(args: argparse.Namespace, *names: str) -> None:
    for name in names:
        if not getattr(args, name, None):
            raise Usage(f"{args.command} needs --{name.replace('_', '-')}")


def _store(args: argparse.Namespace, work_dir: str | None = None) -> BackupStore:
    """The backup directory or object store URL, with the configured key and --allow-unkeyed where the
    command has it. `work_dir`: where an object store's backups are streamed down to (default $TMPDIR)."""
    return open_store(args.backup_dir, load_key(getattr(args, "key_file", None)),
                      bool(getattr(args, "allow_unkeyed", False)), work_dir)


def _existing_parent(path: Path) -> Path:
    parent = path.parent
    while not parent.is_dir():
        parent = parent.parent
    return parent


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f}{unit}" if unit == "B" else f"{size:.1f}{unit}"
        size /= 1024
    return f"{n}B"


def _list_row(m: BackupManifest) -> str:
    size = sum(f.size for f in m.files)
    return "\t".join([m.id, m.type, m.created_at, f"lsn={m.start_lsn}..{m.end_lsn}", f"records={m.records}",
                      f"size={_human(size)}", f"parent={m.parent or '-'}",
                      f"last_commit={format_us(m.last_commit_us)}", f"key={m.key_id or 'unkeyed'}"])


def _write_result(args: argparse.Namespace, result: Result) -> None:
    """The result as one JSON line in --result-file (for programs: the operator's Jobs put it in the
    container's termination message; its format is contract.py's). Written after the backup, restore or
    cleanup is committed."""
    path = getattr(args, "result_file", None)
    if path:
        with open(path, "w", encoding="utf-8") as f:
            f.write(result_line(result))


def _cmd_backup(args: argparse.Namespace) -> int:
    _need(args, "backup_dir")
    source: Any
    if args.source:
        # OMENDB_CA_FILE as omendb.client reads it: the operator's backup CronJobs set it to NAME-ca's ca.crt.
        ca_file = args.ca_file or os.environ.get("OMENDB_CA_FILE") or None
        # OMENDB_CREDENTIALS_FILE as omendb.client reads it: the operator's backup Jobs mount NAME-users'
        # `credentials` there, a file rather than environment variables holding the password.
        if args.credentials_file:
            credentials = load_credentials(args.credentials_file)
        else:
            credentials = load_credentials(os.environ.get(CREDENTIALS_FILE_ENV) or None, CREDENTIALS_FILE_ENV)
        source = RemoteSource(args.source, credentials, ca_file)
    else:
        _need(args, "data_dir")
        source = LocalSource(resolve(args.data_dir, args.wal_dir))
    kind = FULL if args.command == "full-backup" else INCREMENTAL
    progress = Progress(args.command, args.quiet)
    started = time.monotonic()
    store = _store(args)
    try:
        manifest = take_backup(store, source, args.database, kind,
                               lock_timeout=args.lock_timeout, progress=progress,
                               level=args.compression_level)
    finally:
        progress.close()
        store.close()
        if isinstance(source, RemoteSource):
            source.close()
    size = sum(f.size for f in manifest.files)
    _write_result(args, BackupResult(manifest.id, manifest.type, manifest.database, size, manifest.start_lsn,
                                     manifest.end_lsn, manifest.records, manifest.created_at, manifest.notice))
    print(f"{manifest.id}\t{manifest.type} backup of {manifest.database}: LSN {manifest.start_lsn}.."
          f"{manifest.end_lsn}, {manifest.records} records, {_human(size)} in "
          f"{time.monotonic() - started:.1f}s" + (f" ({manifest.notice})" if manifest.notice else ""))
    return EXIT_OK


def _cmd_list(args: argparse.Namespace) -> int:
    _need(args, "backup_dir")
    store = open_store(args.backup_dir)  # listing authenticates nothing: no key needed
    try:
        good, damaged = store.scan()
    finally:
        store.close()
    backups = [m for m in reversed(good) if args.database is None or m.database == args.database]
    for d in damaged:
        log.warning("not listed: %s", d.problem)
    if args.output == "json":
        print(json.dumps([asdict(m) for m in backups], indent=2))
    else:
        for m in backups:
            print(_list_row(m))
        for row in _archive_rows(args.backup_dir, backups):
            print(row)
    return EXIT_OK


def _archive_rows(location: str, backups: list[BackupManifest]) -> list[str]:
    """After the backups (so `list | head -n1` stays the newest backup): each database's WAL archive, with
    how far it continues the newest backup (the point a restore reaches now)."""
    store = open_store(location)
    rows = []
    try:
        newest: dict[str, BackupManifest] = {}
        for m in backups:  # newest first
            newest.setdefault(str(m.source.get("database_id") or ""), m)
        for database_id, m in newest.items():
            found = wal_archive.pieces(store.wal_archive(database_id)) if database_id else []
            if not found:
                continue
            first, last = min(p.first for p in found), max(p.last for p in found)
            rows.append("\t".join(["wal-archive", m.database, f"lsn={first}..{last}", f"pieces={len(found)}",
                                    f"after={m.id}", f"lsns_after_backup={max(0, last - m.end_lsn)}"]))
    except wal_archive.ArchiveError as exc:
        log.warning("the WAL archive could not be listed: %s", exc.message)
    finally:
        store.close()
    return rows


def _cmd_restore(args: argparse.Namespace) -> int:
    _need(args, "backup_dir", "data_dir")
    if args.source:
        raise Usage("restore writes a data directory; --source is only for taking backups")
    target = Target(args.to_lsn, parse_time(args.to_time) if args.to_time else None)
    layout = resolve(args.data_dir, args.wal_dir)
    # From an object store, the backup is streamed down beside the data directory: onto the volume it is
    # restored to, which has room for it, rather than into a small $TMPDIR.
    store = _store(args, str(_existing_parent(layout.data_dir)))
    progress = Progress("restore", args.quiet)
    hint = "backup_tool " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    try:
        with store.locked(False, args.lock_timeout):
            result = restore(store, layout, args.backup_id, args.database, target, args.force, progress, hint,
                             use_wal_archive=not args.without_wal_archive)
    finally:
        progress.close()
        store.close()
    if result.recovered:
        log.warning("%s", result.recovered)
    _write_result(args, RestoreResult(result.backup_id, result.lsn, result.term, result.records,
                                      result.backup_end_lsn, result.backup_records, result.archived_lsn,
                                      result.archive_stop))
    archived = ""
    if result.archived_lsn is not None:
        archived = f" and the WAL archive ({result.lsn - result.backup_end_lsn} archived writes after its end)"
    print(f"restored backup {result.backup_id}{archived} to LSN {result.lsn} (term {result.term}, "
          f"{result.records} records) into {layout.data_dir} (WAL {layout.wal_dir}); start the server to serve it")
    return EXIT_OK


def _cmd_verify(args: argparse.Namespace) -> int:
    _need(args, "backup_dir")
    report = Report()
    if args.data_dir:
        layout = resolve(args.data_dir, args.wal_dir)
        if layout.holds_database():
            verify_data_dir(layout, report)
    store = _store(args)
    missing = None
    try:
        with store.locked(False, args.lock_timeout):
            try:
                verify_backup(store, args.backup_id, args.database, args.deep, report)
            except NotFound as exc:
                missing = exc
    finally:
        store.close()
    for line in report.lines:
        print(line)
    if report.problems:
        print(f"verify failed: {len(report.problems)} problem(s); restore from another backup "
              f"(backup_tool list) and take a new full backup", file=sys.stderr)
        return EXIT_CORRUPT
    if missing is not None:
        print(f"backup_tool: {missing.message}", file=sys.stderr)
        return EXIT_NOT_FOUND
    return EXIT_OK


def _prune_wal_archive(store: BackupStore, kept: list[BackupManifest], dry_run: bool) -> None:
    """Archived WAL older than the oldest full backup kept of its database can never be replayed: delete it."""
    oldest: dict[str, int] = {}
    for m in kept:
        database_id = m.source.get("database_id")
        if m.type == FULL and database_id:
            oldest[str(database_id)] = min(oldest.get(str(database_id), m.start_lsn), m.start_lsn)
    for database_id, start in sorted(oldest.items()):
        location = store.wal_archive(database_id)
        doomed = [p.name for p in wal_archive.pieces(location) if p.last <= start]
        if doomed and not dry_run:
            wal_archive.prune_through(location, start)
        if doomed:
            print(f"{'would remove' if dry_run else 'removed'}\t{location.where}\t{len(doomed)} archived WAL "
                  f"pieces through LSN {start}, before the oldest full backup kept")


def _cmd_cleanup(args: argparse.Namespace) -> int:
    _need(args, "backup_dir")
    if args.retention_days < 0:
        raise BackupError("--retention-days must be 0 or more")
    store = open_store(args.backup_dir)
    with store.locked(True, args.lock_timeout):
        if not args.dry_run:
            store.remove_leftovers()
        good, damaged = store.scan()
        decided = plan(good, args.retention_days, time.time())
        for m in decided.remove:
            if not args.dry_run:
                store.delete(m.id)
            print(f"{'would remove' if args.dry_run else 'removed'}\t{m.id}\t{m.type}\tcreated "
                  f"{m.created_at}")
        for m, why in decided.keep:
            print(f"kept\t{m.id}\t{m.type}\t{why}")
        for d in damaged:
            print(f"skipped\t{d.name}\tnot a usable backup, left for you to inspect: {d.problem}")
        if not damaged:  # a damaged backup might be the oldest: then keep every archived piece
            _prune_wal_archive(store, [m for m, _ in decided.keep], args.dry_run)
    _write_result(args, CleanupResult(tuple(m.id for m in decided.remove), tuple(m.id for m, _ in decided.keep),
                                      tuple(d.name for d in damaged), bool(args.dry_run)))
    return EXIT_OK


def _cmd_rollback(args: argparse.Namespace) -> int:
    _need(args, "data_dir")
    print(rollback(resolve(args.data_dir, args.wal_dir)))
    return EXIT_OK


COMMANDS = {"full-backup": _cmd_backup, "incremental-backup": _cmd_backup, "list": _cmd_list,
            "restore": _cmd_restore, "verify": _cmd_verify, "cleanup": _cmd_cleanup,
            "rollback-restore": _cmd_rollback}


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    # Our own handler on the current stderr (not basicConfig): main() may run inside another program.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("backup_tool: %(message)s"))
    logger = logging.getLogger("omendb.backup")
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING if args.quiet else logging.INFO)
    logger.propagate = False
    try:
        return COMMANDS[args.command](args)
    except BackupError as exc:
        print(f"backup_tool: error: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except ObjectStoreError as exc:  # --backup-dir s3://...: credentials, bucket, TLS, endpoint
        print(f"backup_tool: error: {exc.message}", file=sys.stderr)
        return EXIT_STORE
    except ValueError as exc:  # bad values the parser could not check (names, times)
        print(f"backup_tool: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # disk full, permissions, ...: nothing half-done was published or committed
        print(f"backup_tool: error: {exc}; nothing was changed — fix the cause and rerun", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("backup_tool: interrupted; nothing half-done is visible (rerun the command)", file=sys.stderr)
        return 130
    finally:
        logger.removeHandler(handler)


if __name__ == "__main__":
    sys.exit(main())
