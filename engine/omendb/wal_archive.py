"""Continuous WAL archiving: the primary ships its WAL to the backup location, and restores replay it.

A backup taken once a day loses up to a day of writes with the cluster. With ``[wal_archive] url`` set, the
primary ships every write within ``interval_seconds`` to the same place its backups go, and ``backup_tool
restore`` continues the newest backup with the archived WAL: losing the whole cluster then costs seconds.

Layout, under the location (a directory, or ``s3://bucket/prefix``)::

    wal/<database id>/<first LSN>-<last LSN>-t<term>[-m<mac>].wal      (LSNs as 20 digits)

Each object is a *piece*: a WAL segment header (the database's identity, the first LSN, the term of the
first frame) followed by the frames first..last exactly as the engine wrote them (each with its crc32). A
piece is written once and never changed (created only if absent), and only holds frames already fsynced on
the primary, so it never has to be taken back. The name carries the range and the term of its last frame,
so a restore plans from one listing; with a backup key (``OMENDB_BACKUP_KEY_FILE``) it also carries an
HMAC of the content, and a restore with the key refuses pieces without a valid one.

Several primaries may have written the same LSNs after an asynchronous failover (the old primary shipped a
few writes the new one never received). A restore keeps, for each LSN, the frame of the highest term (the
newer primary's), and stops where the terms would go down or an LSN is missing: it never mixes histories
and never skips a write.

The local WAL is released only once shipped (``Database.set_archive_hold``), within ``[wal]
max_retained_mb`` like the WAL kept for backups; past that bound the WAL is released anyway with a warning,
and the archive has a gap the archiver reports (``omendb_wal_archive_gaps_total``) until the next full backup.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import os
import re
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from omendb.errors import CorruptionError
from omendb.files import fsync_dir
from omendb.objectstore import AlreadyExists, ObjectStore, ObjectStoreError, is_object_url
from omendb.wal import (
    SEGMENT_HEADER,
    Frame,
    decode_frames,
    frames_span,
    pack_segment_header,
    parse_segment_header,
)

log = logging.getLogger("omendb.wal_archive")

PREFIX = "wal"
PIECE = re.compile(r"^(?P<first>\d{20})-(?P<last>\d{20})-t(?P<term>\d+)(?:-m(?P<mac>[0-9a-f]{64}))?\.wal$")
_MAC_LABEL = b"omendb-wal-piece-v1\0"  # domain separation from the backup manifests' MAC


class ArchiveError(Exception):
    """The archive cannot be read or written; the message says what is wrong and how to fix it."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# ---- where the pieces live ------------------------------------------------------------------------------


class Location(Protocol):
    where: str  # for messages

    def names(self) -> list[str]: ...
    def read(self, name: str) -> bytes: ...
    def create(self, name: str, data: bytes) -> bool:
        """Write a new piece; False (and nothing changed) when one of that name exists already."""
    def delete(self, names: Iterable[str]) -> None: ...


class DirectoryLocation:
    """Pieces in ``<root>/wal/<database id>/`` of a directory (a backup volume)."""

    def __init__(self, root: Path, database_id: str) -> None:
        self.dir = root / PREFIX / database_id
        self.where = str(self.dir)

    def names(self) -> list[str]:
        try:
            return sorted(os.listdir(self.dir))
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise ArchiveError(f"cannot list {self.dir}: {exc.strerror}") from None

    def read(self, name: str) -> bytes:
        try:
            return (self.dir / name).read_bytes()
        except OSError as exc:
            raise ArchiveError(f"cannot read {self.dir / name}: {exc.strerror}") from None

    def create(self, name: str, data: bytes) -> bool:
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            tmp = self.dir / f".{name}.{os.getpid()}.tmp"
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, self.dir / name)  # atomic, and never replaces an existing piece
            except FileExistsError:
                return False
            finally:
                tmp.unlink()
            fsync_dir(self.dir)
            return True
        except OSError as exc:
            raise ArchiveError(f"cannot write {self.dir / name}: {exc.strerror}; check that the volume is "
                               "mounted, writable and not full") from None

    def delete(self, names: Iterable[str]) -> None:
        for name in names:
            with contextlib.suppress(FileNotFoundError):
                (self.dir / name).unlink()
        fsync_dir(self.dir)


class BucketLocation:
    """Pieces under ``wal/<database id>/`` of an object store prefix."""

    def __init__(self, objects: ObjectStore, database_id: str) -> None:
        self.objects = objects
        self.prefix = f"{PREFIX}/{database_id}/"
        self.where = f"{objects.url}/{self.prefix}"

    def names(self) -> list[str]:
        with _translated():
            return [o.key.removeprefix(self.prefix) for o in self.objects.list(self.prefix)]

    def read(self, name: str) -> bytes:
        with _translated():
            return self.objects.get(self.prefix + name)

    def create(self, name: str, data: bytes) -> bool:
        try:
            with _translated():
                self.objects.put_if_absent(self.prefix + name, data)
        except ArchiveError as exc:
            if isinstance(exc.__cause__, AlreadyExists):
                return False
            raise
        return True

    def delete(self, names: Iterable[str]) -> None:
        with _translated():
            self.objects.delete([self.prefix + n for n in names])


@contextlib.contextmanager
def _translated() -> Iterator[None]:
    try:
        yield
    except ObjectStoreError as exc:
        raise ArchiveError(exc.message) from exc


def open_location(url: str, database_id: str, env: Mapping[str, str] | None = None) -> Location:
    """The archive of one database at `url` (s3://bucket/prefix or a directory)."""
    if is_object_url(url):
        try:
            objects = ObjectStore.from_url(url) if env is None else ObjectStore.from_url(url, env)
        except ObjectStoreError as exc:
            raise ArchiveError(exc.message) from None
        return BucketLocation(objects, database_id)
    return DirectoryLocation(Path(url), database_id)


# ---- pieces ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Piece:
    first: int
    last: int
    term: int
    name: str
    mac: str | None


def parse_name(name: str) -> Piece | None:
    m = PIECE.match(name)
    if m is None:
        return None
    return Piece(int(m["first"]), int(m["last"]), int(m["term"]), name, m["mac"])


def piece_mac(secret: bytes, data: bytes) -> str:
    return hmac.new(secret, _MAC_LABEL + hashlib.sha256(data).digest(), hashlib.sha256).hexdigest()


def build_piece(database_id: str, frames: bytes, first: int, last: int, first_term: int, last_term: int,
                secret: bytes | None) -> tuple[str, bytes]:
    """(name, content) of the piece holding the encoded frames first..last."""
    data = pack_segment_header(database_id, first, first_term) + frames
    name = f"{first:020d}-{last:020d}-t{last_term}"
    if secret is not None:
        name += f"-m{piece_mac(secret, data)}"
    return name + ".wal", data


def pieces(location: Location) -> list[Piece]:
    """The location's pieces, by first LSN (other names are ignored: temporary files of an interrupted write)."""
    found = [p for p in (parse_name(n) for n in location.names()) if p is not None]
    return sorted(found, key=lambda p: (p.first, p.last, p.term))


def read_piece(location: Location, piece: Piece, database_id: str, secret: bytes | None) -> list[Frame]:
    """The frames of one piece, every check passed (CorruptionError naming the piece otherwise)."""
    where = f"{location.where}{'' if location.where.endswith('/') else '/'}{piece.name}"
    data = location.read(piece.name)
    if secret is not None:
        if piece.mac is None:
            raise CorruptionError(f"{where} carries no MAC but a backup key is configured: it was not written "
                                  "by a server holding this key")
        if not hmac.compare_digest(piece_mac(secret, data), piece.mac):
            raise CorruptionError(f"{where}: MAC mismatch (written with another key, or modified)")
    header = parse_segment_header(data, Path(where))
    if header.database_id != database_id or header.first_lsn != piece.first:
        raise CorruptionError(f"{where} belongs to database {header.database_id} at LSN {header.first_lsn}, "
                              f"not to {database_id} at LSN {piece.first}")
    frames, offset, problem = decode_frames(memoryview(data)[SEGMENT_HEADER.size:], where)
    if problem is not None:
        raise CorruptionError(f"{where} at offset {offset + SEGMENT_HEADER.size}: WAL frame {problem}")
    lsns = [f.lsn for f in frames]
    if lsns != list(range(piece.first, piece.last + 1)) or frames[-1].term != piece.term:
        raise CorruptionError(f"{where}: its frames do not match its name (LSN {lsns[:1]}..{lsns[-1:]})")
    return frames


@dataclass
class Replay:
    """Archived frames that continue a restore point, and why they end where they do."""

    frames: list[Frame] = field(default_factory=list)
    stop: str = ""  # empty: the end of the archive (or the target) was reached

    @property
    def last_lsn(self) -> int | None:
        return self.frames[-1].lsn if self.frames else None


def replay_after(location: Location, database_id: str, after_lsn: int, after_term: int, secret: bytes | None,
                 *, until_lsn: int | None = None, until_us: int | None = None) -> Replay:
    """The archived frames after `after_lsn` (whose frame has term `after_term`), up to the target.

    For each LSN the frame of the highest term wins; the replay stops at a missing LSN, where the terms would
    go down (a history another primary replaced), at a damaged piece, or at the target."""
    best: dict[int, Frame] = {}
    damaged: dict[int, str] = {}  # first LSN of a damaged piece -> why
    for piece in pieces(location):
        if piece.last <= after_lsn or (until_lsn is not None and piece.first > until_lsn):
            continue
        try:
            frames = read_piece(location, piece, database_id, secret)
        except (CorruptionError, ArchiveError) as exc:
            damaged[piece.first] = str(exc)
            continue
        for frame in frames:
            if frame.lsn > after_lsn and (frame.lsn not in best or frame.term > best[frame.lsn].term):
                best[frame.lsn] = frame
    out = Replay()
    lsn, term = after_lsn + 1, after_term
    while True:
        if until_lsn is not None and lsn > until_lsn:
            break
        found = best.get(lsn)
        if found is None:
            bad = [why for first, why in damaged.items() if first <= lsn]
            if bad:
                out.stop = f"archived WAL after LSN {lsn - 1} is unusable: {bad[-1]}"
            elif any(other > lsn for other in best):
                out.stop = f"the archive has no WAL for LSN {lsn} (a gap: WAL released before it was shipped)"
            break
        if found.term < term:
            out.stop = (f"archived WAL at LSN {lsn} has term {found.term}, older than term {term} before it: "
                        "the rest belongs to a history another primary replaced")
            break
        if until_us is not None and found.commit_us > until_us:
            break
        out.frames.append(found)
        lsn, term = lsn + 1, found.term
    return out


def prune_through(location: Location, lsn: int) -> list[str]:
    """Delete the pieces holding only LSNs <= `lsn` (no restore can use them: the oldest backup kept starts
    after them). Returns their names."""
    doomed = [p.name for p in pieces(location) if p.last <= lsn]
    if doomed:
        location.delete(doomed)
    return doomed


# ---- shipping -------------------------------------------------------------------------------------------


class Source(Protocol):
    """What the archiver needs from the running server (server/archiving.py)."""

    def database(self) -> ArchivedDatabase | None:
        """The open database (None while it opens or after it closed)."""

    def is_primary(self) -> bool:
        """Whether this server is the writable primary (only the primary ships)."""


class ArchivedDatabase(Protocol):
    database_id: str
    term: int

    def durable_lsn(self) -> int: ...
    def restored_in_current_term(self) -> bool: ...
    def encoded_frames_after(self, after_lsn: int, through_lsn: int, max_bytes: int) -> bytes:
        """Encoded frames after `after_lsn` up to `through_lsn` (about `max_bytes`); they start later than
        after_lsn + 1 when the volume no longer holds it (a gap), and are empty when it holds none."""
    def set_archive_hold(self, lsn: int | None) -> None: ...


NOTHING_SHIPPED = -1  # a new archive: it starts with the oldest frame the volume holds (not a gap)


@dataclass
class ArchiveStatus:
    """What the metrics and /v1/stats show."""

    shipped_lsn: int | None = None  # the last LSN in the archive from this primary (None: not established)
    pieces: int = 0
    bytes: int = 0
    failures: int = 0
    gaps: int = 0
    last_success: float | None = None  # time.time() of the last tick that left nothing behind
    last_error: str = ""
    behind_since: float | None = None  # time.time() since when durable WAL waits to be shipped
    active: bool = False  # this server is the primary and ships


class Archiver:
    """Ships the primary's WAL every `interval` seconds from a background thread."""

    def __init__(self, url: str, interval: float, max_piece_bytes: int, source: Source,
                 secret: bytes | None = None, env: Mapping[str, str] | None = None) -> None:
        self.url, self.interval, self.max_piece_bytes = url, interval, max_piece_bytes
        self.source, self.secret, self.env = source, secret, env
        self.status = ArchiveStatus()
        self.started = time.time()
        self._location: Location | None = None
        self._location_id = ""
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def lag_seconds(self, visible_lsn: int | None, now: float) -> float:
        """How long durable writes have waited to be shipped: 0 when the archive holds everything (or this
        server does not ship); while shipping fails, the time since the archive was last caught up."""
        s = self.status
        if not self.source.is_primary():
            return 0.0
        behind = visible_lsn is not None and (s.shipped_lsn is None or visible_lsn > s.shipped_lsn)
        if not (behind or s.last_error):
            return 0.0
        return max(0.0, now - (s.behind_since or s.last_success or self.started))

    def describe(self, visible_lsn: int | None) -> dict[str, object]:
        """For /v1/stats (the operator's ContinuousArchiving condition reads it)."""
        s = self.status
        return {"url": self.url, "active": s.active, "shipped_lsn": s.shipped_lsn,
                "lag_seconds": round(self.lag_seconds(visible_lsn, time.time()), 3), "failing": bool(s.last_error),
                "error": s.last_error, "gaps": s.gaps}

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="omendb-wal-archive", daemon=True)
        self._thread.start()

    def stop(self, final: bool = True) -> None:
        """Stop the thread; with `final`, ship what is left first (a clean shutdown loses nothing)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
        if final:
            self.tick()

    def wake(self) -> None:
        """Ship now rather than at the next interval (a promotion: the new primary's WAL is unshipped)."""
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.tick()
            self._wake.wait(self.interval)
            self._wake.clear()

    def tick(self) -> None:
        """Ship everything durable; never raises (failures are counted, logged and retried next tick)."""
        db = self.source.database()
        if db is None:
            return
        if not self.source.is_primary():
            if self.status.active:
                log.info("WAL archiving paused: this server is no longer the primary")
            self.status.active, self.status.shipped_lsn, self.status.behind_since = False, None, None
            db.set_archive_hold(None)  # the primary ships; a replica keeps only what replication needs
            return
        try:
            self._ship(db)
        except Exception as exc:  # noqa: BLE001 - the thread must outlive any failure, and say so loudly
            message = exc.message if isinstance(exc, ArchiveError) else f"{type(exc).__name__}: {exc}"
            self.status.failures += 1
            if message != self.status.last_error:
                log.error("WAL archiving to %s failed: %s (retrying every %gs; the WAL stays on the volume "
                          "until it is shipped)", self.url, message, self.interval)
            self.status.last_error = message
        else:
            if self.status.last_error:
                log.warning("WAL archiving to %s works again", self.url)
            self.status.last_error = ""
            self.status.last_success = time.time()

    def _ship(self, db: ArchivedDatabase) -> None:
        if self._location is None or self._location_id != db.database_id:
            self._location = open_location(self.url, db.database_id, self.env)
            self._location_id = db.database_id
            self.status.shipped_lsn = None
        location = self._location
        durable = db.durable_lsn()
        if self.status.shipped_lsn is None:
            self.status.shipped_lsn = self._establish(location, db, durable)
            self.status.active = True
            db.set_archive_hold(self.status.shipped_lsn)
        while self.status.shipped_lsn < durable:
            if self.status.behind_since is None:
                self.status.behind_since = time.time()
            after = self.status.shipped_lsn
            frames = db.encoded_frames_after(after, durable, self.max_piece_bytes)
            if frames:
                first, last, first_term, last_term = frames_span(frames)
            else:  # the volume holds none of it any more (a checkpoint covers it)
                first, last = durable + 1, durable
            if first > after + 1 and after != NOTHING_SHIPPED:
                self.status.gaps += 1
                log.error("WAL archive gap: LSN %d..%d were released from the volume before they were shipped "
                          "(past [wal] max_retained_mb); a restore from the archive stops at LSN %d until the "
                          "next full backup", after + 1, first - 1, after)
            if not frames:
                self.status.shipped_lsn = durable
                db.set_archive_hold(durable)
                break
            name, data = build_piece(db.database_id, frames, first, last, first_term, last_term, self.secret)
            if not location.create(name, data):
                log.info("WAL piece %s is in the archive already (shipped before a restart)", name)
            self.status.pieces += 1
            self.status.bytes += len(data)
            self.status.shipped_lsn = last
            db.set_archive_hold(last)
        self.status.behind_since = None

    def _establish(self, location: Location, db: ArchivedDatabase, durable: int) -> int:
        """Where shipping resumes: after the newest piece this database's history already has.

        Refuses (ships nothing) when another writer's history continues beyond our WAL where ours would
        replace it or be replaced: WAL of our term or a newer one (another primary is ahead of us), or any
        WAL at all after a restore (the cluster restored from still runs, or the restore went back in time).
        Only an older term's WAL beyond ours is expected: an old primary shipped writes its successor never
        received, and the replay follows the successor's newer term."""
        found = pieces(location)
        restored = db.restored_in_current_term()
        ahead = [p for p in found if p.last > durable and (p.term >= db.term or restored)]
        if ahead:
            p = ahead[-1]
            why = ("this database was restored from a backup, and WAL after the restore point is already there"
                   if restored else "another server of the same or a newer term wrote it")
            raise ArchiveError(
                f"{location.where} holds WAL up to LSN {p.last} (term {p.term}) beyond this database (LSN "
                f"{durable}, term {db.term}): {why}, so another cluster writes this archive. Give this one its "
                "own location (spec.backup.objectStore.path, or [wal_archive] url); nothing was shipped")
        mine = [p.last for p in found if p.last <= durable]
        return max(mine) if mine else NOTHING_SHIPPED
