"""Where a backup's data comes from: a data directory on disk (offline) or a running server (online).

Both give the same three things: a snapshot (the bytes of a checkpoint file, consistent at its LSN), the
WAL frames after an LSN (``WalGone`` when they are no longer all retained), and a way to tell the engine
that backups now hold the WAL up to an LSN so it may release it.

Offline needs no lock on the data directory: checkpoint files are immutable once renamed into place (a
newer checkpoint unlinks an older one, which an open descriptor survives) and the WAL is append-only, so
the current checkpoint plus the complete WAL frames after it are a consistent state.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from omendb.backup.errors import BackupError, Corrupt, SourceError, WalGone
from omendb.backup.layout import Layout
from omendb.backup.payload import decode_frames
from omendb.checkpoint import write_base
from omendb.errors import CorruptionError
from omendb.files import MANIFEST, RESTORED_FROM, list_segments, read_manifest, write_archived
from omendb.wal import Frame, read_frames
from omendb.wal_chain import check_source

RESTORE_POISON = b"RESTORE IN PROGRESS"
CHUNK = 1 << 20
Sink = Callable[[bytes], None]


@dataclass(frozen=True)
class SourceInfo:
    engine_database: str
    lsn: int  # newest LSN the source holds (offline: checkpoint or last complete WAL frame)
    term: int
    model_type: str
    max_error: int
    restored_from: dict[str, Any] | None
    database_id: str | None = None  # the engine's identity (None: a previous-release source)


@dataclass(frozen=True)
class Snapshot:
    lsn: int
    term: int
    created_us: int  # when the checkpoint was written: its LSN committed no later than this
    # The checkpoint's index as its MANIFEST describes it (model_type, max_error, index_meta), when known: a
    # restore that puts the checkpoint back as is writes it into the new MANIFEST.
    index: dict[str, Any] | None = None


def empty_base_bytes(model_type: str = "recursive", max_error: int = 50) -> bytes:
    """A checkpoint file holding no records (a database that never checkpointed, at LSN 0)."""
    from omendb import rmi  # here, not at the top: it imports numba (0.4-0.8 s), which other backups never need

    with tempfile.TemporaryDirectory(prefix="omendb-empty-") as tmp:
        path = Path(tmp) / "base.odb"
        empty = np.zeros(0, np.int64)
        write_base(path, 0, empty, np.zeros(0), empty, rmi.train(empty, model_type, max_error), compress=True,
                   block_size=100_000)
        return path.read_bytes()


class LocalSource:
    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.description: dict[str, Any] = {"kind": "offline", "data_dir": str(layout.data_dir),
                                            "wal_dir": str(layout.wal_dir)}
        self._proven: tuple[int, list[Frame]] | None = None  # (checkpoint LSN, the frames info() read after it)

    def _manifest(self) -> Any:
        path = self.layout.data_dir / MANIFEST
        try:
            if path.read_bytes().startswith(RESTORE_POISON):
                raise BackupError(f"{self.layout.data_dir} is in the middle of an interrupted restore; "
                                  "finish it (backup_tool restore ... --force) or undo it (backup_tool "
                                  f"--data-dir {self.layout.data_dir} rollback-restore) first")
        except FileNotFoundError:
            pass
        try:
            return read_manifest(self.layout.data_dir)
        except CorruptionError as exc:
            raise Corrupt(f"cannot back up {self.layout.data_dir}: {exc.message}") from None

    def info(self) -> SourceInfo:
        if not self.layout.data_dir.is_dir():
            raise BackupError(f"{self.layout.data_dir} does not exist; pass the directory holding the "
                              "database's data/ and wal/ (the guide's /var/lib/omendb) or the data "
                              "directory itself as --data-dir")
        manifest = self._manifest()
        if manifest is None and not list_segments(self.layout.wal_dir):
            raise BackupError(f"{self.layout.data_dir} holds no OmenDB database (no MANIFEST and no WAL in "
                              f"{self.layout.wal_dir}); check --data-dir (and --wal-dir if [wal] dir is set)")
        lsn, term = self._check_wal(manifest)
        database_id = manifest.database_id if manifest else None
        if database_id:
            self.description["database_id"] = database_id  # a restore gives the restored database this identity
        return SourceInfo(manifest.database if manifest else "", lsn, term,
                          manifest.model_type if manifest else "recursive",
                          manifest.max_error if manifest else 50, read_restored_from(self.layout.data_dir),
                          database_id)

    def _check_wal(self, manifest: Any) -> tuple[int, int]:
        """(newest LSN, term) of the source, refusing one whose WAL does not continue its checkpoint (the same
        proof the engine's recovery makes). A server may be running on the directory: a checkpoint that
        releases segments while we look changes the MANIFEST, and then we look again."""
        for _ in range(20):
            checkpoint = manifest.checkpoint_lsn if manifest else 0
            try:
                chain = check_source(self.layout.wal_dir, self.layout.data_dir,
                                     manifest.database_id if manifest else None, checkpoint)
            except FileNotFoundError:
                manifest = self._manifest()
                continue
            except CorruptionError as exc:
                again = self._manifest()
                if again is not None and manifest is not None and again.checkpoint_lsn != checkpoint:
                    manifest = again
                    continue
                raise Corrupt(f"cannot back up {self.layout.data_dir}: its WAL and checkpoint disagree: "
                              f"{exc.message}") from None
            term = max([manifest.term if manifest else 1, *(frame.term for frame in chain.frames)])
            self._proven = (checkpoint, chain.frames)  # what frames_after(checkpoint) returns without reading again
            return chain.end_lsn, term
        raise BackupError(f"the checkpoint of {self.layout.data_dir} kept changing while its WAL was checked; "
                          f"retry the backup")

    def snapshot(self, sink: Sink) -> Snapshot:
        return self._snapshot(lambda f: _drain(f, sink))

    def snapshot_file(self, path: Path) -> Snapshot:
        """The snapshot copied into a new file at `path` inside the kernel (verbatim.copy_file), not yet
        fsynced."""
        from omendb.backup.verbatim import copy_file

        def empty(data: bytes) -> None:
            path.write_bytes(data)

        return self._snapshot(lambda f: copy_file(f, path), empty)

    def snapshot_with(self, use: Callable[[Any], object], empty: Sink) -> Snapshot:
        """The current checkpoint, handed open (a binary file at its start) to `use`: the open file stays
        readable (and its mappings valid) even if a newer checkpoint unlinks it meanwhile. A database that
        never checkpointed hands `empty` the bytes of an empty checkpoint instead."""
        return self._snapshot(use, empty)

    def _snapshot(self, copy: Callable[[Any], object], empty: Sink | None = None) -> Snapshot:
        for _ in range(50):
            manifest = self._manifest()
            if manifest is None or manifest.base_file is None:
                lsn = manifest.checkpoint_lsn if manifest else 0
                if lsn != 0:
                    raise Corrupt(f"{self.layout.data_dir}/MANIFEST names no checkpoint file at LSN {lsn}")
                data = empty_base_bytes()
                if empty is not None:
                    empty(data)
                else:
                    copy(_Bytes(data))
                return Snapshot(0, manifest.term if manifest else 1, 0)
            try:
                f = open(self.layout.data_dir / manifest.base_file, "rb")  # noqa: SIM115
            except FileNotFoundError:
                time.sleep(0.05)  # a checkpoint replaced it between reading MANIFEST and opening it
                continue
            with f:  # the open file stays readable even if a newer checkpoint unlinks it meanwhile
                copy(f)
            return Snapshot(manifest.checkpoint_lsn, manifest.term, int(manifest.created_at * 1_000_000),
                            {"model_type": manifest.model_type, "max_error": manifest.max_error,
                             "meta": dict(manifest.index_meta)})
        raise BackupError(f"the checkpoint of {self.layout.data_dir} kept changing while it was being read; "
                          f"retry the backup")

    def frames_after(self, lsn: int) -> list[Frame]:
        if self._proven is not None and self._proven[0] == lsn:
            # info() just read and proved these (every frame after the checkpoint at `lsn`): a consistent end
            # for the backup, without decoding the WAL a second time. Frames appended since (a server running
            # on the directory) go into the next backup.
            frames = self._proven[1]
            self._proven = None
            return frames
        for _ in range(20):
            # The checkpoint is read first: frames up to it existed before we looked, so if they are not
            # there now they were released.
            manifest = self._manifest()
            checkpoint = manifest.checkpoint_lsn if manifest else 0
            try:
                frames = list(read_frames(self.layout.wal_dir, after_lsn=lsn))
            except FileNotFoundError:
                time.sleep(0.05)  # a checkpoint released a segment while we read: look again
                continue
            except CorruptionError as exc:
                raise Corrupt(f"cannot back up the WAL of {self.layout.data_dir}: {exc.message}") from None
            if frames and frames[0].lsn != lsn + 1 or not frames and checkpoint > lsn:
                raise WalGone(f"the WAL in {self.layout.wal_dir} no longer holds every write after LSN {lsn}")
            return frames
        raise BackupError(f"WAL segments in {self.layout.wal_dir} kept disappearing while being read; retry")

    def mark_archived(self, lsn: int) -> None:
        if self.layout.wal_dir.is_dir():
            write_archived(self.layout.wal_dir, lsn)


def _drain(f: Any, sink: Sink) -> None:
    while chunk := f.read(CHUNK):
        sink(chunk)


class _Bytes:
    """Bytes read like a file (the empty checkpoint, handed to the same copy as a file's)."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def read(self, n: int) -> bytes:
        chunk = self.data[self.pos:self.pos + n]
        self.pos += len(chunk)
        return chunk


def read_restored_from(data_dir: Path) -> dict[str, Any] | None:
    try:
        raw: dict[str, Any] = json.loads((data_dir / RESTORED_FROM).read_text())
        return raw
    except (FileNotFoundError, ValueError):
        return None


# ---- online --------------------------------------------------------------------------------------------


def load_credentials(path: str | None, option: str = "--credentials-file") -> tuple[str, str] | None:
    """``user:password`` (one line) or JSON ``{"username": ..., "password": ...}`` from a file, else the
    OMENDB_USER / OMENDB_PASSWORD environment variables, else None (a server without authentication).
    ``option`` names where ``path`` came from, for messages."""
    if path:
        try:
            text = Path(path).read_text().strip()
        except OSError as exc:
            raise BackupError(f"cannot read {option} {path}: {exc.strerror}") from None
        if text.startswith("{"):
            try:
                body = json.loads(text)
            except ValueError as exc:
                raise BackupError(f"{option} {path} is not valid JSON ({exc})") from None
            user = body.get("username", body.get("user")) if isinstance(body, dict) else None
            password = body.get("password") if isinstance(body, dict) else None
            if isinstance(body, dict) and user is None and len(body) == 1:
                user, password = next(iter(body.items()))
            if not isinstance(user, str) or not isinstance(password, str):
                raise BackupError(f"{option} {path}: expected "
                                  f"{{\"username\": ..., \"password\": ...}}")
            return user, password
        user, sep, password = text.partition(":")
        if not sep or not user:
            raise BackupError(f"{option} {path}: expected one line 'user:password' or JSON "
                              f"{{\"username\": ..., \"password\": ...}}")
        return user, password
    user, password = os.environ.get("OMENDB_USER"), os.environ.get("OMENDB_PASSWORD")
    if user:
        if password is None:
            raise BackupError("OMENDB_USER is set but OMENDB_PASSWORD is not; set both, or use "
                              "--credentials-file")
        return user, password
    return None


class RemoteSource:
    """A running server's admin backup endpoints (engine/omendb/server/routes/backup.py), through the
    project's HTTP client (omendb.client: HTTP Basic, TLS verification against --ca-file, typed errors)."""

    def __init__(self, url: str, credentials: tuple[str, str] | None, ca_file: str | None,
                 timeout: float = 60.0) -> None:
        from omendb.client import Client

        if ca_file and not Path(ca_file).is_file():
            raise BackupError(f"--ca-file {ca_file} does not exist")
        self.url = url.rstrip("/")
        user, password = credentials if credentials else (None, None)
        self.client = Client(self.url, username=user, password=password, ca_file=ca_file, timeout=timeout,
                             auth="basic" if credentials else "none")
        self.description = {"kind": "online", "url": self.url}

    @contextlib.contextmanager
    def _request(self, method: str, path: str, **kwargs: Any) -> Iterator[Any]:
        """One call, with the client's typed errors turned into messages that say what to do."""
        from omendb.client import errors

        try:
            with self.client.stream(method, path, **kwargs) as response:
                yield response
        except errors.TLSError as exc:
            raise SourceError(f"TLS verification of {self.url} failed ({exc.message}); pass --ca-file with the CA "
                              f"certificate that signed the server's certificate") from None
        except errors.Unauthorized as exc:
            raise SourceError(f"{self.url} refused the credentials ({exc.message}); pass --credentials-file or "
                              "set OMENDB_USER and OMENDB_PASSWORD to an admin user") from None
        except errors.Forbidden as exc:
            raise SourceError(f"{self.url}: {exc.message}; backups need a user listed in [security] "
                              "admin_users") from None
        except errors.ClientError as exc:
            if exc.status == 410:
                raise WalGone(f"{self.url} no longer retains the WAL requested ({exc.message})") from None
            if exc.status == 404:
                raise SourceError(f"{self.url} has no backup endpoints ({path}: 404); it runs an OmenDB version "
                                  "without online backup — take an offline backup instead") from None
            if exc.status is None:
                raise SourceError(f"cannot reach {self.url} ({exc.message}); check --source and that the server "
                                  "is running") from None
            raise SourceError(f"{self.url} answered {exc.status} to {path}: {exc.message}") from None

    def info(self) -> SourceInfo:
        with self._request("GET", "/admin/backup/info") as response:
            body = json.loads(response.read())
        if body.get("database_id"):
            self.description["database_id"] = body["database_id"]
        return SourceInfo(body["database"], body["lsn"], body["term"], body["model_type"], body["max_error"],
                          body.get("restored_from"), body.get("database_id"))

    def snapshot(self, sink: Sink) -> Snapshot:
        with self._request("GET", "/admin/backup/snapshot") as response:
            headers = response.headers
            expected = int(headers.get("content-length", "-1"))
            received = 0
            for chunk in response.iter_bytes(CHUNK):
                received += len(chunk)
                sink(chunk)
        if expected >= 0 and received != expected:
            raise SourceError(f"{self.url}: the snapshot stream ended after {received} of {expected} bytes; "
                              f"retry the backup")
        index = None
        with contextlib.suppress(ValueError):  # absent (an older server) or unreadable: restores rebuild
            index = json.loads(headers.get("x-omendb-checkpoint-index", ""))
        return Snapshot(int(headers["x-omendb-lsn"]), int(headers["x-omendb-term"]),
                        int(headers["x-omendb-checkpoint-created-us"]), index if isinstance(index, dict) else None)

    def frames_after(self, lsn: int) -> list[Frame]:
        with self._request("GET", "/admin/wal", params={"after_lsn": lsn}) as response:
            content = response.read()
            last = int(response.headers["x-omendb-last-lsn"])
        frames = decode_frames(content, f"{self.url}/admin/wal?after_lsn={lsn}")
        if frames and (frames[0].lsn != lsn + 1 or frames[-1].lsn != last) or not frames and last != lsn:
            raise SourceError(f"{self.url}: the WAL stream after LSN {lsn} was incomplete (ended at "
                              f"{frames[-1].lsn if frames else lsn}, server said {last}); retry the backup")
        return frames

    def mark_archived(self, lsn: int) -> None:
        with self._request("POST", "/admin/wal/archived", json={"lsn": lsn}) as response:
            response.read()

    def close(self) -> None:
        self.client.close()
