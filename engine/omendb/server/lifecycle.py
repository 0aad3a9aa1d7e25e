"""Running the server: listeners up first, database recovery in the background, a periodic health
check, and an orderly shutdown.

SIGTERM (or SIGINT): /ready turns 503, the listener stops accepting, in-flight requests get up to
``[http] shutdown_grace_seconds`` to finish, then the database is closed (WAL synced, checkpoint
written) and the process exits 0. A second signal exits at once with status 1: every acknowledged write
is already in the fsynced WAL (with ``[wal] sync_on_write = true``) and is replayed on the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import threading
import time
from collections.abc import AsyncIterator
from types import FrameType
from typing import Any

import uvicorn
from fastapi import FastAPI

import omendb
from omendb.config import Config
from omendb.errors import OmenDBError
from omendb.server.app import build_asgi
from omendb.server.archiving import build_archiver
from omendb.server.fastpath import PointReads
from omendb.server.fencing import Fence
from omendb.server.limits import limited_protocol
from omendb.server.logs import AccessLog, setup_logging
from omendb.server.state import Phase, ServerState
from omendb.server.timeouts import Timeouts
from omendb.server.tls import ReloadingTLS
from omendb.server.tlsport import PlainProbesOnly, sniffing_protocol

log = logging.getLogger("omendb.server")


class OmenServer(uvicorn.Server):
    """uvicorn's server with our signal policy: graceful first, immediate second, exit 0 when clean."""

    def __init__(self, config: uvicorn.Config, state: ServerState) -> None:
        super().__init__(config)
        self.state = state
        self.exit_code = 0

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.should_exit:
            log.warning("second shutdown signal: exiting now; acknowledged writes are in the WAL and will "
                        "be replayed on the next start", extra={"signal": sig})
            logging.shutdown()
            os._exit(1)
        log.info("shutdown requested: finishing in-flight requests", extra={
            "signal": sig, "grace_seconds": self.state.config.http.shutdown_grace_seconds})
        self.state.set_phase(Phase.SHUTTING_DOWN, "the server is shutting down")
        # Not recorded in _captured_signals: uvicorn would re-raise it after a clean shutdown and the
        # process would die by the signal instead of exiting 0.
        self.should_exit = True

    def fail(self, message: str) -> None:
        self.exit_code = 1
        self.should_exit = True


def _open_database(state: ServerState, server: OmenServer) -> None:
    from omendb import Database

    started = time.monotonic()
    state.set_phase(Phase.RECOVERING, "recovering: loading the checkpoint and replaying the WAL")
    try:
        db = Database.open(state.config)
    except OmenDBError as exc:
        log.error("cannot open the database", extra={"code": exc.code, "error": exc.message})
        state.set_phase(Phase.FAILED, f"cannot open the database: {exc.message}")
        server.fail(exc.message)
        return
    except Exception as exc:
        log.exception("cannot open the database")
        state.set_phase(Phase.FAILED, f"cannot open the database: {exc}")
        server.fail(str(exc))
        return
    # Compile the lookup kernels now, in this thread: point reads run on the event loop.
    db.get(0)
    db.get_many([0])
    state.db = db
    if state.phase is Phase.SHUTTING_DOWN:
        return
    try:
        state.role().attach(db)  # a replica refuses writes and starts following its primary here
    except OmenDBError as exc:
        log.error("cannot start replication", extra={"code": exc.code, "error": exc.message})
        state.set_phase(Phase.FAILED, f"cannot start replication: {exc.message}")
        server.fail(exc.message)
        return
    state.set_phase(Phase.READY, "ready")
    if state.archiver is not None:
        state.archiver.start()
    log.info("database open", extra={"database": state.config.database.name, "records": db.count(),
                                     "lsn": db.lsn(),
                                     "recovery_seconds": round(time.monotonic() - started, 3)})


async def _flush_access_log(state: ServerState) -> None:
    """Access lines are buffered (see logs.AccessLog); push them out even when traffic stops."""
    while True:
        await asyncio.sleep(AccessLog.FLUSH_SECONDS)
        state.access_log.flush()


async def _health_loop(state: ServerState) -> None:
    interval = state.config.monitoring.health_check_interval_ms / 1000
    while True:
        db = state.db
        if db is not None and state.phase is Phase.READY:
            try:
                await state.run(db.check_health)
            except OmenDBError as exc:
                if state.healthy:
                    log.error("health check failed", extra={"code": exc.code, "error": exc.message})
                state.healthy, state.health_error = False, exc.message
            else:
                if not state.healthy:
                    log.warning("health check passes again")
                state.healthy, state.health_error = True, ""
                # A full WAL volume makes the server not ready, not dead: a restart would free nothing.
                full = await state.run(db.wal_full_reason)
                state.storage_full = full or ""
        await asyncio.sleep(interval)


def _lifespan(state: ServerState, server_box: list[OmenServer]) -> Any:
    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # Startup returns at once so the listener comes up; /ready says 503 until recovery is done.
        opener = threading.Thread(target=_open_database, args=(state, server_box[0]), name="omendb-open",
                                  daemon=True)
        opener.start()
        fence = Fence(state)  # [replication] fence_after_seconds: a cut-off primary stops writing
        fence.start()
        health = asyncio.create_task(_health_loop(state))
        flusher = asyncio.create_task(_flush_access_log(state))
        try:
            yield
        finally:
            health.cancel()
            flusher.cancel()
            await asyncio.get_running_loop().run_in_executor(None, fence.stop)
            state.access_log.flush()
            state.set_phase(Phase.SHUTTING_DOWN, "the server is shutting down")
            # Recovery cannot be interrupted half-way; wait for it so the data directory is closed cleanly.
            await asyncio.get_running_loop().run_in_executor(None, opener.join)
            await asyncio.get_running_loop().run_in_executor(None, state.role().stop)
            if state.archiver is not None and state.db is not None:
                # Ships what the last interval wrote: a clean shutdown leaves nothing behind in the WAL.
                await asyncio.get_running_loop().run_in_executor(None, state.archiver.stop)
            if state.db is not None:
                started = time.monotonic()
                await asyncio.get_running_loop().run_in_executor(None, state.db.close)
                log.info("database closed (WAL synced, checkpoint written)",
                         extra={"seconds": round(time.monotonic() - started, 3)})
            state.metrics.stop()
            state.executor.shutdown(wait=False)
            state.io_executor.shutdown(wait=False)

    return lifespan


def build_server(config: Config) -> tuple[OmenServer, ServerState]:
    """Everything for one server, validated: a bad htpasswd file or certificate fails here, at startup."""
    state = ServerState(config)
    state.archiver = build_archiver(state)
    tls = ReloadingTLS(config.security.tls_cert_file, config.security.tls_key_file, state.metrics.registry) \
        if config.security.tls_enabled else None
    box: list[OmenServer] = []
    guard = build_asgi(state, lifespan=_lifespan(state, box))
    app: Any = guard
    timeouts = Timeouts.from_config(config.http)

    def closed(reason: str) -> None:
        state.metrics.connections_closed.labels(reason).inc()

    protocol = limited_protocol(config.limits.max_connections, timeouts,
                                lambda: state.metrics.rejected.labels("max_connections").inc(), closed,
                                PointReads(guard, https_only=tls is not None))
    if tls is not None:
        # HTTPS, and plain HTTP for the probes on the same port (tlsport.py: the guide's health_check.sh).
        # The TLS layer is built there, not by uvicorn, so the handshake bound is set there too.
        context = tls.context
        protocol = sniffing_protocol(protocol, lambda: context, timeouts.first_request, closed)
        app = PlainProbesOnly(app, config.security.plain_http_probes)
    uv_config = uvicorn.Config(
        app, host=config.http.host, port=config.http.port, loop="uvloop", http=protocol,
        timeout_keep_alive=timeouts.idle,  # type: ignore[arg-type]  # a float works
        ws="none", lifespan="on", access_log=False, log_config=None, server_header=False,
        timeout_graceful_shutdown=int(config.http.shutdown_grace_seconds) or 1,
        backlog=max(2048, config.limits.max_connections),
    )
    server = OmenServer(uv_config, state)
    box.append(server)
    state.connections = lambda: len(server.server_state.connections)
    state.metrics.watch_engine(state.engine_stats, state.connections)
    return server, state


def serve(config: Config) -> int:
    setup_logging(config.monitoring.log_level, config.monitoring.log_format)
    server, state = build_server(config)
    if config.monitoring.prometheus_enabled:
        try:
            state.metrics.serve(config.http.host, config.monitoring.prometheus_port)
        except OSError as exc:
            log.error("cannot listen for metrics", extra={
                "host": config.http.host, "port": config.monitoring.prometheus_port, "error": exc.strerror,
                "hint": "set [monitoring] prometheus_port (or OMENDB_PROMETHEUS_PORT) to a free port"})
            return 1
    log.info("starting omendb", extra={
        "version": omendb.__version__, "database": config.database.name, "host": config.http.host,
        "port": config.http.port, "tls": config.security.tls_enabled, "auth": config.security.auth_enabled,
        "metrics_port": config.monitoring.prometheus_port if config.monitoring.prometheus_enabled else None})
    # What start-up built (modules, the app) lives until exit: frozen, full collections skip it, and so
    # does the collection at interpreter exit, which otherwise walked it all again (~0.4 s of CPU per
    # process). No gc.collect() first: start-up leaves no measurable garbage (same RSS), it would cost 0.1 s.
    gc.freeze()
    gc.enable()
    server.run()
    if not server.started and server.exit_code == 0:
        return 1
    log.info("omendb stopped", extra={"exit_code": server.exit_code})
    return server.exit_code
