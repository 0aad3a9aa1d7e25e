"""Errors raised by OmenDB. Each carries a stable machine-readable ``code`` (the HTTP API puts it in
``{"error": {"code": ..., "message": ...}}``) and a message that says what is wrong and what to do."""

from __future__ import annotations

import errno


class OmenDBError(Exception):
    code = "internal"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(OmenDBError, ValueError):
    """The caller passed something the database cannot store; nothing was changed."""

    code = "invalid_input"


class ConfigError(OmenDBError, ValueError):
    """A configuration file or value is wrong; the message names the key."""

    code = "invalid_config"


class MemoryLimitExceeded(OmenDBError):
    """Applying the write would take the database over its memory limit; nothing was applied."""

    code = "memory_limit_exceeded"


class CorruptionError(OmenDBError):
    """A file on disk failed its checksum or is malformed somewhere other than a torn WAL tail."""

    code = "corruption"


class DatabaseClosed(OmenDBError):
    code = "closed"


class DatabaseLocked(OmenDBError):
    """Another process holds the data directory."""

    code = "locked"


class ReadOnly(OmenDBError):
    """This instance does not accept writes (a replica, or a database being restored)."""

    code = "read_only"


class Isolated(OmenDBError):
    """A primary that has lost both its replicas and the Kubernetes API for [replication]
    fence_after_seconds refuses writes: another pod may be promoted in its place (server/fencing.py)."""

    code = "isolated"


class StorageFull(OmenDBError):
    """A volume is out of space (bytes or inodes). Nothing of the write was applied; writes resume by
    themselves once space is freed."""

    code = "insufficient_storage"


def is_storage_full(exc: OSError) -> bool:
    """True for the errors a full volume (bytes or inodes) or an exhausted quota returns."""
    return exc.errno in (errno.ENOSPC, errno.EDQUOT)
