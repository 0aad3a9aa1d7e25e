"""A server's replication role: the primary (accepting writes, waiting for synchronous replicas) or a
replica that follows a primary in a background thread.

The follower long-polls the primary's ``GET /admin/replication/wal`` from its own LSN, applies the frames
durably (``db.apply_frames``: the primary's LSN, term and commit time) and so reports, with its next poll,
the LSN it holds. Before streaming (at start and after every disconnect) it compares timelines with
``GET /admin/replication/info``: a node holding writes the primary's timeline does not have (an old
primary that kept writing after a failover) logs each of them and re-seeds from the primary's snapshot.
The same happens when the primary no longer has the WAL the replica needs (410). Every error is retried
with backoff: a replica never gives up following, and never accepts client writes.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import shutil
import socket
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omendb import files
from omendb.backup.errors import BackupError
from omendb.backup.payload import State
from omendb.backup.restore import write_checkpoint
from omendb.backup.source import load_credentials
from omendb.checkpoint import read_base
from omendb.errors import OmenDBError
from omendb.files import RESEED_STAGING, read_manifest, write_manifest
from omendb.loglevels import TRACE
from omendb.replication import Fenced, divergence_lsn, term_at
from omendb.server.errors import APIError
from omendb.server.state import Phase, ServerState
from omendb.wal import decode_frames, read_frames

if TYPE_CHECKING:
    import httpx

    from omendb.config import Config, ReplicationSection
    from omendb.database import Database

log = logging.getLogger("omendb.replication")
logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per long poll would drown the server log

MAX_POLL_BYTES = 8 << 20  # per WAL response: bounds a replica's memory while catching up
BACKOFF_MIN, BACKOFF_MAX = 0.1, 5.0
PREFLIGHT_TIMEOUT = 10.0  # POST /admin/follow asks the new primary before changing anything


class Resync(Exception):
    """The replica must discard its state and re-seed from the primary's snapshot."""

    def __init__(self, reason: str, diverged_at: int | None) -> None:
        super().__init__(reason)
        self.reason, self.diverged_at = reason, diverged_at


class FollowError(Exception):
    """The primary cannot be followed right now (unreachable, not a primary, refused us); retried."""


class CredentialsError(FollowError):
    """No replication credentials, or the primary refused them."""


def read_only_reason(primary_url: str) -> str:
    return f"this server is a read-only replica; send writes to the primary at {primary_url}"


# A database object is replaced when a replica re-seeds, so every database the server opens goes through one
# of these two: a reopened database promoted later must wait for its synchronous replicas as configured, not
# for the 0 s a fresh Database starts with (which failed every synchronous write at once).
def as_primary(db: Database, cfg: ReplicationSection) -> None:
    db.sync_timeout_s = cfg.synchronous_timeout_ms / 1000
    db.sync_replicas = cfg.synchronous_replicas


def as_replica(db: Database, cfg: ReplicationSection, primary_url: str) -> None:
    db.sync_timeout_s = cfg.synchronous_timeout_ms / 1000
    db.sync_replicas = 0
    db.set_read_only(read_only_reason(primary_url))


class Follower:
    """Follows one primary until stopped. Lag figures are read by metrics, /ready and /v1/stats."""

    def __init__(self, state: ServerState, primary_url: str) -> None:
        cfg = state.config.replication
        self.state = state
        self.primary_url = primary_url.rstrip("/")
        self.replica_id = cfg.replica_id or socket.gethostname()
        self.poll_wait_ms = cfg.poll_wait_ms
        try:
            credentials = load_credentials(cfg.credentials_file or None)
        except BackupError as exc:
            raise OmenDBError(f"[replication] credentials_file: {exc.message}") from None
        verify: Any = cfg.ca_file or True
        import httpx  # here and below, not at the top: only a replica needs it (~0.1 s of every start-up)

        timeout = httpx.Timeout(self.poll_wait_ms / 1000 + 30, connect=5.0)
        self.client = httpx.Client(base_url=self.primary_url, auth=credentials, verify=verify, timeout=timeout)
        self._stop = threading.Event()
        self._apply_lock = threading.Lock()  # held while frames are applied or a re-seed runs (see stop)
        self._thread = threading.Thread(target=self._run, name="omendb-follower", daemon=True)
        self.primary_lsn: int | None = None
        self.primary_commit_us = 0
        self.last_contact: float | None = None  # monotonic time of the last answer from the primary
        self.last_error = ""
        self.reseeds = 0

    # ---- figures --------------------------------------------------------------------------------------

    def lag_lsn(self) -> int | None:
        db = self.state.db
        if self.primary_lsn is None or db is None:
            return None
        return max(0, self.primary_lsn - db.lsn())

    def lag_seconds(self) -> float | None:
        """How far behind the primary's newest commit this replica is, in seconds; while the primary cannot
        be reached, at least the time since it last answered (beyond one long poll)."""
        db = self.state.db
        if self.last_contact is None or db is None:
            return None
        lag = 0.0
        if self.primary_lsn is not None and db.lsn() < self.primary_lsn:
            lag = max(0.0, (self.primary_commit_us - db.last_commit_us) / 1e6)
        silent = time.monotonic() - self.last_contact - self.poll_wait_ms / 1000
        return max(lag, silent, 0.0)

    def describe(self) -> dict[str, Any]:
        age = None if self.last_contact is None else time.monotonic() - self.last_contact
        return {"primary": self.primary_url, "replica_id": self.replica_id, "primary_lsn": self.primary_lsn,
                "lag_lsn": self.lag_lsn(), "lag_seconds": self.lag_seconds(),
                # How long the primary has not answered: since its last answer, and beyond one long poll
                # (what the operator needs to tell a dead primary from one it alone cannot reach).
                "primary_contact_age_seconds": None if age is None else round(age, 3),
                "primary_silent_seconds": None if age is None else round(max(0.0, age - self.poll_wait_ms / 1000), 3),
                "connected": self.last_error == "" and self.last_contact is not None,
                "last_error": self.last_error, "reseeds": self.reseeds}

    # ---- running --------------------------------------------------------------------------------------

    def start(self) -> None:
        log.info("following the primary", extra={"primary": self.primary_url, "replica_id": self.replica_id})
        self._thread.start()

    def stop(self) -> None:
        """Stop following; returns once no frame is being applied and none will be. A request still on its
        way to the primary is not waited for (its answer is dropped): a long poll to a primary cut off by a
        partition hangs until its read timeout (poll_wait_ms + 30 s), and promoting this replica in its
        place must not wait that long."""
        self._stop.set()
        with self._apply_lock:  # a batch being applied (or a re-seed) finishes; the next one sees _stop
            pass
        self._thread.join(timeout=1.0)
        if not self._thread.is_alive():
            self.client.close()  # else the thread closes it when its request returns

    def _run(self) -> None:
        import httpx

        backoff = BACKOFF_MIN
        while not self._stop.is_set():
            try:
                self._check_timeline()
                while not self._stop.is_set():
                    self._poll()
                    backoff = BACKOFF_MIN
            except Resync as exc:
                if self._stop.is_set():
                    break
                try:
                    with self._apply_lock:
                        if self._stop.is_set():
                            break
                        self._reseed(exc.reason, exc.diverged_at)
                    backoff = BACKOFF_MIN
                    continue
                except (httpx.HTTPError, FollowError, OmenDBError, OSError) as err:
                    self._failed(f"re-seeding from {self.primary_url} failed: {err}")
            except httpx.HTTPError as exc:
                self._failed(f"cannot reach the primary {self.primary_url} ({type(exc).__name__}: {exc})")
            except Fenced as exc:
                self._failed(f"refusing frames from {self.primary_url}: {exc.message}")
            except (FollowError, OmenDBError) as exc:
                self._failed(str(exc))
            except Exception as exc:  # the follower must survive anything and keep trying
                log.exception("replication loop error")
                self._failed(f"unexpected error: {exc}")
            # Jitter so replicas do not reconnect in lockstep after the primary returns.
            self._stop.wait(backoff * (0.5 + random.random()))
            backoff = min(BACKOFF_MAX, backoff * 2)
        self.client.close()

    def _failed(self, message: str) -> None:
        if message != self.last_error:
            log.warning("replication interrupted; retrying", extra={"primary": self.primary_url,
                                                                   "error": message})
        self.last_error = message

    def preflight(self) -> None:
        """Check, before anything changes, that the new primary can be followed: it answers with these
        credentials, serves this database, and, when it is a primary, its term is not older than this
        server's (a primary on an older term has been replaced: following it would take a fenced timeline).
        It need not be a primary yet: a planned switchover demotes the old primary to follow the replica it
        then promotes. A timeline
        this server must rewind to (an old primary being demoted) is fine too: that is what following does.
        Raises FollowError saying what is wrong."""
        import httpx

        try:
            self._peer_info(timeout=PREFLIGHT_TIMEOUT)
        except httpx.HTTPError as exc:
            raise FollowError(f"{self.primary_url} cannot be reached ({type(exc).__name__}: {exc}); check "
                              f"primary_url and that the primary is running") from None
        except (ValueError, KeyError, TypeError) as exc:
            raise FollowError(f"{self.primary_url}/admin/replication/info is not an OmenDB answer "
                              f"({type(exc).__name__}: {exc})") from None

    def _get(self, path: str, timeout: float | None = None, **params: Any) -> httpx.Response:
        import httpx

        response = self.client.get(path, params=params,
                                   timeout=httpx.USE_CLIENT_DEFAULT if timeout is None else timeout)
        if response.status_code in (401, 403):
            raise CredentialsError(f"the primary {self.primary_url} refused this replica's credentials "
                              f"({response.status_code}: {_message(response)}); set [replication] "
                              f"credentials_file to an admin user of the primary")
        return response

    def _db(self) -> Database:
        db = self.state.db
        if db is None:
            raise FollowError("the database is not open")
        return db

    def _peer_info(self, timeout: float | None = None) -> dict[str, Any]:
        """The peer's /admin/replication/info, checked to serve this database and, when it is a primary, to be
        on a term not older than ours."""
        response = self._get("/admin/replication/info", timeout=timeout)
        if response.status_code != 200:
            raise FollowError(f"{self.primary_url}/admin/replication/info answered {response.status_code}: "
                              f"{_message(response)}")
        info: dict[str, Any] = response.json()
        db = self._db()
        if info["database"] != db.config.database.name:
            raise FollowError(f"{self.primary_url} serves database {info['database']!r}, this server "
                              f"{db.config.database.name!r}; point primary_url at the right primary")
        # Only a *primary* on an older term is a replaced one. A replica may lag in terms it has not seen
        # a frame of yet (a switchover target right after a promotion elsewhere): it is promoted past them.
        if info["role"] == "primary" and info["term"] < db.term:
            raise FollowError(f"{self.primary_url} is at term {info['term']}, older than this server's term "
                              f"{db.term}: it is a replaced (fenced) primary; follow the current primary")
        return info

    def _check_timeline(self) -> None:
        """Make sure this node's log is a prefix of the primary's before streaming from it."""
        info = self._peer_info()
        db = self._db()
        if info["role"] != "primary":
            raise FollowError(f"{self.primary_url} is not a primary (role {info['role']}); waiting for it "
                              f"to be promoted, or point [replication] primary_url at the primary")
        history = [(int(t), int(first)) for t, first in info["term_history"]]
        diverged = divergence_lsn(db.term_history, db.lsn(), history)
        if diverged is not None:
            raise Resync(f"this server's log left the primary's timeline at LSN {diverged} (local LSN "
                         f"{db.lsn()}, term {db.term}; primary term history {history})", diverged)
        if db.lsn() > info["lsn"]:
            raise Resync(f"this server holds LSN {db.lsn()}, ahead of the primary's {info['lsn']} on the "
                         f"same term: those writes never reached the primary", info["lsn"] + 1)
        primary_id = info.get("database_id")  # absent on a primary of the previous release
        if primary_id and primary_id != db.database_id:
            # A replica is a copy of its primary and carries its identity (as a PostgreSQL standby shares the
            # system identifier). An empty one takes it, and so does one whose identity was only given when
            # the previous release's files were upgraded (every node got its own then); one holding writes of
            # another database re-seeds, which brings the identity along.
            if db.can_adopt_identity:
                db.adopt_identity(primary_id)
            else:
                raise Resync(f"this server holds database {db.database_id}, the primary {self.primary_url} "
                             f"database {primary_id}: not a copy of it", 1)
        self.primary_lsn, self.primary_commit_us = info["lsn"], info["last_commit_us"]
        self.last_contact = time.monotonic()
        log.debug("replication: timeline checked against %s (primary LSN %d, term %d; local LSN %d)",
                  self.primary_url, info["lsn"], info["term"], db.lsn())

    def _poll(self) -> None:
        db = self._db()
        after = db.lsn()
        response = self._get("/admin/replication/wal", after_lsn=after, replica_id=self.replica_id,
                             last_term=term_at(db.term_history, after), wait_ms=self.poll_wait_ms,
                             max_bytes=MAX_POLL_BYTES)
        if response.status_code == 410:
            raise Resync(f"the primary no longer has the WAL after LSN {after}: {_message(response)}", None)
        if response.status_code == 409:  # lsn_ahead / diverged: find where, so the rewound writes are logged
            primary = self._get("/admin/replication/info").json()
            history = [(int(t), int(first)) for t, first in primary["term_history"]]
            diverged = divergence_lsn(db.term_history, after, history)
            if diverged is None and after > primary["lsn"]:
                diverged = primary["lsn"] + 1
            raise Resync(f"the primary refused LSN {after}: {_message(response)}", diverged)
        if response.status_code != 200:
            raise FollowError(f"{self.primary_url}/admin/replication/wal answered {response.status_code}: "
                              f"{_message(response)}")
        frames, offset, problem = decode_frames(response.content, f"{self.primary_url} WAL stream")
        if problem is not None:
            raise FollowError(f"the WAL stream from {self.primary_url} was damaged at byte {offset} ({problem})")
        if frames and frames[0].lsn != after + 1:
            raise FollowError(f"the primary sent LSN {frames[0].lsn} after {after}; retrying")
        if frames:
            with self._apply_lock:
                if self._stop.is_set():
                    return  # stopped while the answer was on its way: promote/follow owns the database now
                db.apply_frames(frames)
            log.debug("replication: applied %d frames (LSN %d..%d) from %s", len(frames), frames[0].lsn,
                      frames[-1].lsn, self.primary_url)
        else:
            log.log(TRACE, "replication: poll after LSN %d returned nothing new", after)
        self.primary_lsn = int(response.headers["x-omendb-primary-lsn"])
        self.primary_commit_us = int(response.headers["x-omendb-primary-commit-us"])
        self.last_contact = time.monotonic()
        if self.last_error:
            log.info("replication resumed", extra={"primary": self.primary_url, "lsn": db.lsn()})
        self.last_error = ""

    # ---- re-seeding -----------------------------------------------------------------------------------

    def _reseed(self, reason: str, diverged_at: int | None) -> None:
        """Replace this node's data by the primary's snapshot (logging every discarded write), then reopen.

        The snapshot is downloaded and checked while the old data still serves reads; only the swap (delete
        the old WAL, move the new checkpoint in, reopen) happens with the database closed. A crash during
        the swap leaves either the old checkpoint (whose timeline check re-seeds again) or the new one."""
        db = self._db()
        config = db.config
        log.warning("re-seeding from the primary's snapshot", extra={"primary": self.primary_url,
                                                                   "reason": reason, "local_lsn": db.lsn()})
        data_dir, wal_dir = Path(config.database.data_dir), db.wal_dir
        staging = data_dir / RESEED_STAGING  # the snapshot being installed
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        try:
            snapshot_path = staging / "snapshot"
            with self.client.stream("GET", "/admin/backup/snapshot") as response:
                if response.status_code != 200:
                    response.read()
                    raise FollowError(f"{self.primary_url}/admin/backup/snapshot answered "
                                      f"{response.status_code}: {_message(response)}")
                with open(snapshot_path, "wb") as out:
                    for chunk in response.iter_bytes(1 << 20):
                        out.write(chunk)
            info = self._get("/admin/replication/info").json()
            lsn, keys, values, lsns, _ = read_base(snapshot_path)  # checks every block's checksum
            # Terms that start after the snapshot arrive with their frames (apply_frames records them).
            history = [(int(t), int(first)) for t, first in info["term_history"] if int(first) <= max(lsn, 1)]
            history = history or [(1, 1)]
            term = term_at(history, lsn)
            # The backup tool's restore code writes the checkpoint (base file + manifest).
            write_checkpoint(State(keys, values, lsns, lsn, term), staging, config.database.name,
                             {"model_type": config.index.model_type, "max_error": config.index.max_error})
            manifest = read_manifest(staging)
            assert manifest is not None and manifest.base_file is not None
            if diverged_at is not None:
                _log_rewound(db, diverged_at)
            self.state.set_phase(Phase.RECOVERING, f"re-seeding from the primary {self.primary_url}: {reason}")
            self.state.db = None
            db.close(checkpoint=False)
            try:
                # The old WAL goes (a crash meanwhile leaves a prefix that recovery accepts, and the timeline
                # check re-seeds again); then the checkpoint moves in and the MANIFEST naming it commits.
                files.discard_wal(data_dir, wal_dir)
                files.move_in(staging / manifest.base_file, data_dir)
                write_manifest(data_dir, dataclasses.replace(
                    manifest, term=term, term_history=[list(e) for e in history], wal_dir=str(wal_dir),
                    database_id=info.get("database_id") or db.database_id))
            finally:
                self._reopen(config)  # the new data, or after a failure whatever the directory holds
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        self.reseeds += 1
        log.warning("re-seeded from the primary's snapshot", extra={"primary": self.primary_url, "lsn": lsn,
                                                                  "term": term, "records": len(keys)})

    def _reopen(self, config: Config) -> None:
        from omendb import Database

        state = self.state
        try:
            reopened = Database.open(config)
        except Exception as exc:
            log.exception("cannot reopen the database after re-seeding")
            state.set_phase(Phase.FAILED, f"cannot reopen the database after re-seeding: {exc}")
            self._stop.set()
            raise
        as_replica(reopened, config.replication, self.primary_url)
        state.db = reopened
        if state.phase is Phase.RECOVERING:
            state.set_phase(Phase.READY, "ready")


def _log_rewound(db: Database, diverged_at: int) -> None:
    """Log every write from `diverged_at` on that this node holds and is about to discard."""
    local_lsn = db.lsn()
    if local_lsn < diverged_at:
        return
    log.warning("rewinding writes that are not on the primary's timeline",
                extra={"from_lsn": diverged_at, "to_lsn": local_lsn, "batches": local_lsn - diverged_at + 1})
    logged = diverged_at - 1
    try:
        for frame in read_frames(db.wal_dir, after_lsn=diverged_at - 1):
            if frame.lsn > local_lsn:
                break
            keys = frame.keys.tolist()
            log.warning("rewound write", extra={
                "lsn": frame.lsn, "term": frame.term, "commit_us": frame.commit_us,
                "op": "put" if frame.values is not None else "delete", "records": len(keys),
                "keys": keys[:100], "values": frame.values.tolist()[:100] if frame.values is not None else None})
            logged = frame.lsn
    except (OmenDBError, OSError) as exc:
        log.error("could not read every rewound write from the WAL", extra={"error": str(exc)})
    if logged < local_lsn:
        log.warning("rewound writes no longer in the WAL (already checkpointed); their keys cannot be listed",
                    extra={"from_lsn": logged + 1, "to_lsn": local_lsn})


def _message(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["message"])
    except Exception:
        return response.text[:300]


class Replication:
    """This server's role, and the switches between roles (promotion, following another primary)."""

    def __init__(self, state: ServerState) -> None:
        cfg = state.config.replication
        self.state = state
        self.role = cfg.role
        self.primary_url: str | None = cfg.primary_url.rstrip("/") if cfg.role == "replica" else None
        self.follower: Follower | None = None
        # Monotonic time of the operator's last heartbeat (GET /admin/replication/heartbeat, sent only to the
        # pod it holds for the primary); None until one arrives. server/fencing.py reads it.
        self.heartbeat_at: float | None = None
        self._lock = threading.Lock()

    def attach(self, db: Database) -> None:
        """Configure a freshly opened database for this server's role (and start following)."""
        cfg = self.state.config.replication
        if self.role == "replica":
            assert self.primary_url is not None
            as_replica(db, cfg, self.primary_url)
            self.follower = Follower(self.state, self.primary_url)
            self.follower.start()
        else:
            as_primary(db, cfg)

    def promote(self) -> dict[str, Any]:
        """Stop following and become the primary under a new term. Idempotent on a primary."""
        with self._lock:
            if self.role == "primary":
                db = self.state.ready_db()
                return {"role": "primary", "term": db.term, "lsn": db.lsn(), "promoted": False}
            if self.follower is not None:
                self.follower.stop()
                self.follower = None
            db = self.state.ready_db()
            db.replicas.clear()
            term = db.promote()
            as_primary(db, self.state.config.replication)
            previous, self.role, self.primary_url = self.primary_url, "primary", None
            self.heartbeat_at = None  # a heartbeat from an earlier time as primary says nothing about now
            log.warning("promoted to primary", extra={"term": term, "lsn": db.lsn(), "previous_primary": previous})
            if self.state.archiver is not None:  # the new primary ships from now on; keep its WAL until then
                db.set_archive_hold(-1)
                self.state.archiver.wake()
            return {"role": "primary", "term": term, "lsn": db.lsn(), "promoted": True}

    def follow(self, primary_url: str) -> dict[str, Any]:
        """Become (or stay) a replica of `primary_url`: a repointed replica, or a demoted old primary.

        The new primary is checked first (Follower.preflight); when it cannot be followed the answer is an
        error and nothing changed: a primary stays a writable primary, a replica keeps its primary."""
        with self._lock:
            db = self.state.ready_db()
            primary_url = primary_url.rstrip("/")
            try:
                follower = Follower(self.state, primary_url)
            except OmenDBError as exc:  # the credentials file cannot be read or parsed
                raise APIError(400, "replication_credentials", f"{exc.message}; nothing was changed") from None
            try:
                if follower.client.auth is None and self.state.config.security.auth_enabled:
                    raise CredentialsError("no replication credentials are configured: set [replication] "
                                           "credentials_file (or OMENDB_USER and OMENDB_PASSWORD) to an admin "
                                           "user of the primary")
                follower.preflight()
            except FollowError as exc:
                follower.client.close()
                status, code = ((400, "replication_credentials") if isinstance(exc, CredentialsError)
                                else (409, "cannot_follow"))
                log.warning("refused to follow", extra={"primary": primary_url, "role": self.role,
                                                        "error": str(exc)})
                raise APIError(status, code, f"{exc}; nothing was changed (still {self.role}"
                               f"{f' of {self.primary_url}' if self.primary_url else ''})") from None
            if self.follower is not None:
                self.follower.stop()
                self.follower = None
            as_replica(db, self.state.config.replication, primary_url)
            if self.role == "primary":
                log.warning("this primary becomes a replica", extra={"primary": primary_url, "term": db.term,
                                                                   "lsn": db.lsn()})
            self.role, self.primary_url, self.heartbeat_at = "replica", primary_url, None
            self.follower = follower
            self.follower.start()
            return {"role": "replica", "primary": primary_url, "term": db.term, "lsn": db.lsn()}

    def heartbeat(self) -> dict[str, Any]:
        """The operator reached this server, as the primary it holds: recorded for self-fencing."""
        self.heartbeat_at = time.monotonic()
        db = self.state.db
        return {"role": self.role, "term": db.term if db is not None else None,
                "lsn": db.lsn() if db is not None else None,
                "isolated": db.isolated if db is not None else None}

    def stop(self) -> None:
        with self._lock:
            if self.follower is not None:
                self.follower.stop()
                self.follower = None

    def not_ready_reason(self) -> str | None:
        """Why /ready must say 503 on a replica (too far behind, or never reached its primary)."""
        follower = self.follower
        if self.role != "replica" or follower is None:
            return None
        lag = follower.lag_seconds()
        limit = self.state.config.replication.max_lag_seconds
        if lag is None:
            return f"this replica has not reached its primary {follower.primary_url} yet ({follower.last_error})"
        if lag > limit:
            return (f"this replica is {lag:.1f}s behind its primary {follower.primary_url}, more than "
                    f"[replication] max_lag_seconds = {limit:g}" +
                    (f" ({follower.last_error})" if follower.last_error else ""))
        return None

    def describe(self) -> dict[str, Any]:
        db = self.state.db
        out: dict[str, Any] = {"role": self.role, "primary": self.primary_url,
                               "term": db.term if db is not None else None}
        follower = self.follower
        if follower is not None:
            out["replication"] = follower.describe()
        elif db is not None:
            out["synchronous_replicas"] = db.sync_replicas
            out["replicas"] = {name: {"lsn": lsn, "seconds_since_report": round(age, 3),
                                      "lag_lsn": max(0, db.lsn() - lsn)}
                               for name, (lsn, age) in db.replicas.positions().items()}
        return out
