"""Failures of backup_tool, each with the exit code the CLI returns (documented in docs/backup.md)."""

from __future__ import annotations

EXIT_OK = 0
EXIT_ERROR = 1  # unexpected failure
EXIT_USAGE = 2  # bad command line (argparse)
EXIT_CORRUPT = 3  # a backup (or the data directory) failed a checksum or continuity check
EXIT_NOT_FOUND = 4  # no such backup / no backup at all
EXIT_BUSY = 5  # the backup directory or the data directory is locked by another process
EXIT_REFUSED = 6  # the request is unsafe or impossible as given (non-empty data dir without --force, ...)
EXIT_SOURCE = 7  # the server given with --source could not be used (unreachable, auth, TLS, protocol)
EXIT_STORE = 8  # the object store (--backup-dir s3://...) could not be used (credentials, bucket, TLS, endpoint)


class BackupError(Exception):
    exit_code = EXIT_ERROR

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Corrupt(BackupError):
    exit_code = EXIT_CORRUPT


class NotFound(BackupError):
    exit_code = EXIT_NOT_FOUND


class Busy(BackupError):
    exit_code = EXIT_BUSY


class Refused(BackupError):
    exit_code = EXIT_REFUSED


class SourceError(BackupError):
    exit_code = EXIT_SOURCE


class StoreUnavailable(BackupError):
    """The object store could not be used; the message says what is wrong and how to fix it."""

    exit_code = EXIT_STORE


class WalGone(BackupError):
    """The WAL after an LSN is no longer complete at the source (released before a backup archived it)."""


class Usage(BackupError):
    """A required option is missing or options conflict (as argparse errors)."""

    exit_code = EXIT_USAGE
