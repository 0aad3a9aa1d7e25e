"""What one running server holds: configuration, the database once open, users and sessions, metrics,
the thread pool for blocking engine calls, and the lifecycle phase that /ready reports."""

from __future__ import annotations

import asyncio
import enum
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

from omendb.config import Config
from omendb.server.credentials import CredentialCache
from omendb.server.errors import APIError
from omendb.server.firstrun import users_file
from omendb.server.htpasswd import UserFile
from omendb.server.logs import AccessLog
from omendb.server.metrics import Metrics
from omendb.server.sessions import SessionStore
from omendb.server.throttle import LoginThrottle

if TYPE_CHECKING:  # each of these imports this module
    from omendb.database import Database
    from omendb.server.replica import Replication
    from omendb.server.routes.records import PointReader
    from omendb.wal_archive import Archiver

T = TypeVar("T")

# Threads that verify passwords (bcrypt). Their own small pool, apart from the worker pool, so that
# guessed passwords — each costing milliseconds of CPU — queue behind each other and never in front of
# database calls; one thread also caps the CPU guessing can take at one core.
AUTH_THREADS = 1


class Phase(enum.Enum):
    STARTING = "starting"
    RECOVERING = "recovering"
    READY = "ready"
    SHUTTING_DOWN = "shutting_down"
    FAILED = "failed"


class ServerState:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.db: Database | None = None  # once recovery finished
        self.phase = Phase.STARTING
        self.reason = "the server is starting"
        self.healthy = True
        self.health_error = ""
        self.storage_full = ""  # why the WAL cannot be written (a full volume): not ready, still alive
        self.executor = ThreadPoolExecutor(max_workers=config.performance.worker_threads,
                                           thread_name_prefix="omendb-worker")
        # [performance] io_threads: maintenance calls (retrain, rebuild, checkpoint) run here, so a long
        # rebuild never takes a worker thread from requests.
        self.io_executor = ThreadPoolExecutor(max_workers=config.performance.io_threads,
                                              thread_name_prefix="omendb-io")
        self.users: UserFile | None = None
        if config.security.auth_enabled:
            self.users = UserFile(users_file(config))  # firstrun.py: no users file yet, an admin user
        self.sessions = SessionStore(config.security.session_timeout_seconds)
        security = config.security
        self.auth_executor = ThreadPoolExecutor(max_workers=AUTH_THREADS, thread_name_prefix="omendb-auth")
        self.verified = CredentialCache(security.credential_cache_seconds)
        self.throttle = LoginThrottle(security.login_failures_per_user, security.login_failures_per_address,
                                      security.login_failure_window_seconds)
        self.admins = frozenset(config.security.admin_users)
        self.metrics = Metrics()
        self.access_log = AccessLog(config.monitoring.log_format)
        self.connections: Callable[[], int] = lambda: 0
        self.point_reader: PointReader | None = None  # set when the routes are built
        self.replication: Replication | None = None  # role and follower, set when the app is built
        self.archiver: Archiver | None = None  # [wal_archive]: ships the WAL while this server is primary

    def set_phase(self, phase: Phase, reason: str) -> None:
        self.phase, self.reason = phase, reason

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a blocking engine call on the worker pool."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, functools.partial(fn, *args))

    async def run_auth(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a password verification on the auth pool."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.auth_executor, functools.partial(fn, *args))

    async def run_io(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a long maintenance call on the io pool."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.io_executor, functools.partial(fn, *args))

    def role(self) -> Replication:
        """This server's replication role; build_app sets it before the lifespan or any request runs."""
        if self.replication is None:
            raise RuntimeError("ServerState.replication is set by server.app.build_app, which has not run")
        return self.replication

    def ready_db(self) -> Database:
        """The open database, or a 503 saying why the API cannot serve yet.

        During shutdown, requests that reached us on already-open connections are still served: the
        database stays open until every connection is done (or the grace period ends).
        """
        if self.db is not None and self.phase in (Phase.READY, Phase.SHUTTING_DOWN):
            return self.db
        raise APIError(503, "not_ready", f"the database is not serving: {self.phase.value} ({self.reason})",
                       {"Retry-After": "1"})

    def engine_stats(self) -> dict[str, Any] | None:
        db = self.db
        if db is None or self.phase is not Phase.READY:
            return None
        return db.stats()
