"""The server's WAL archiver (omendb/wal_archive.py): started once the database is open, shipping only while
this server is the primary, stopped (after a last shipment) before the database closes; and its metrics."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from omendb.errors import ConfigError
from omendb.server.state import Phase, ServerState

if TYPE_CHECKING:
    from omendb.wal_archive import ArchivedDatabase, Archiver


class _ServerSource:
    def __init__(self, state: ServerState) -> None:
        self.state = state

    def database(self) -> ArchivedDatabase | None:
        if self.state.phase not in (Phase.READY, Phase.SHUTTING_DOWN):
            return None
        return self.state.db

    def is_primary(self) -> bool:
        # replication is set once the app is built; the metrics registry asks earlier (auto_describe).
        replication = self.state.replication
        return replication is not None and replication.role == "primary"


def build_archiver(state: ServerState) -> Archiver | None:
    """The archiver for [wal_archive] url (None when it is empty). The backup key, when one is configured
    (OMENDB_BACKUP_KEY_FILE / OMENDB_BACKUP_KEY, as for backup_tool), signs every piece."""
    cfg = state.config.wal_archive
    if not cfg.url:
        return None
    # Imported here: a server that archives nothing never loads the backup package or the S3 client.
    from omendb.backup.errors import Usage
    from omendb.backup.keys import load_key
    from omendb.wal_archive import Archiver

    try:
        key = load_key(None)
    except Usage as exc:
        raise ConfigError(f"[wal_archive]: {exc.message}") from None
    archiver = Archiver(cfg.url, cfg.interval_seconds, cfg.max_piece_mb << 20, _ServerSource(state),
                        key.secret if key is not None else None)
    state.metrics.registry.register(_ArchiveCollector(archiver, state))
    return archiver


class _ArchiveCollector(Collector):
    def __init__(self, archiver: Archiver, state: ServerState) -> None:
        self.archiver, self.state = archiver, state

    def collect(self) -> Iterable[Any]:
        s = self.archiver.status
        db = self.state.db
        lag = self.archiver.lag_seconds(db.lsn() if db is not None else None, time.time())
        failing = bool(s.last_error)
        yield GaugeMetricFamily("omendb_wal_archive_active", "1 while this server (the primary) ships its WAL to "
                                "[wal_archive] url.", value=int(s.active))
        yield GaugeMetricFamily("omendb_wal_archive_shipped_lsn", "Newest LSN in the WAL archive.",
                                value=s.shipped_lsn if s.shipped_lsn is not None and s.shipped_lsn >= 0 else 0)
        yield GaugeMetricFamily("omendb_wal_archive_lag_seconds", "How long durable writes have waited to be "
                                "shipped (0 when the archive is caught up); grows while archiving fails.",
                                value=round(lag, 3))
        yield GaugeMetricFamily("omendb_wal_archive_failing", "1 while the last attempt to ship failed.",
                                value=int(failing))
        yield GaugeMetricFamily("omendb_wal_archive_last_success_timestamp_seconds", "When the archive was "
                                "last caught up (Unix time; 0: never).", value=s.last_success or 0)
        for name, doc, value in (
                ("omendb_wal_archive_pieces", "WAL pieces shipped.", s.pieces),
                ("omendb_wal_archive_bytes", "Bytes of WAL shipped.", s.bytes),
                ("omendb_wal_archive_failures", "Attempts to ship that failed (retried every interval).",
                 s.failures),
                ("omendb_wal_archive_gaps", "WAL released from the volume before it was shipped ([wal] "
                 "max_retained_mb): the archive cannot replay past the gap until the next full backup.",
                 s.gaps)):
            yield CounterMetricFamily(name, doc, value=value)
