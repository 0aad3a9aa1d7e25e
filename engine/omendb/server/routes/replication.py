"""Replication endpoints, for ``[security] admin_users`` only (checked for every ``/admin/`` path):

- ``GET /admin/replication/info``: role, term, term history, LSN, last commit time: what a replica checks
  before following (is it a primary, is my log a prefix of its timeline?).
- ``GET /admin/replication/wal?after_lsn=N&replica_id=R&last_term=T&wait_ms=W``: WAL frames N+1.. as in
  the WAL segments (each with LSN, term, commit time, crc32). The replica durably holds N, so the call also
  acknowledges N for synchronous replication. With ``wait_ms`` it long-polls until a newer write commits.
  ``X-OmenDB-Primary-LSN`` / ``X-OmenDB-Primary-Commit-Us`` give the lag. 410: the WAL after N is gone
  (re-seed from ``GET /admin/backup/snapshot``); 409 ``lsn_ahead`` / ``diverged``: the caller's log is not
  on this timeline.
- ``GET /admin/replication/heartbeat``: the operator's probe of the pod it holds for the primary, every
  second: role, term, LSN. The time of the last one keeps a primary cut off from its replicas from fencing
  itself while the operator still reaches it (server/fencing.py).
- ``POST /admin/promote``: a replica stops following and becomes the primary under a new term.
- ``POST /admin/follow {"primary_url": ...}``: become a replica of another primary (repoint a replica,
  or demote an old primary, which then rewinds writes the new timeline does not have).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Annotated, Any

from fastapi import APIRouter, Query
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from pydantic import BaseModel, Field, field_validator
from starlette.responses import Response

from omendb.replication import term_at
from omendb.server.bodies import JSONRoute
from omendb.server.errors import APIError
from omendb.server.models import error_responses
from omendb.server.replica import Replication
from omendb.server.routes.backup import _collect_frames
from omendb.server.routes.records import _json
from omendb.server.state import ServerState

DISK_FRAMES = 2000  # frames per answer when a replica is far behind and is served from the WAL files


class FollowRequest(BaseModel):
    primary_url: str = Field(max_length=2000, description="The primary's API URL, e.g. "
                                                          "https://omendb-0.omendb-headless:3000.")

    @field_validator("primary_url")
    @classmethod
    def _url(cls, value: str) -> str:
        import httpx  # not at the top: it would add ~0.1 s to every server's start-up for this one check

        try:
            url = httpx.URL(value)
        except (httpx.InvalidURL, ValueError, TypeError) as exc:
            raise ValueError(f"not a valid URL ({exc})") from None
        if url.scheme not in ("http", "https") or not url.host or url.query or url.fragment:
            raise ValueError("must be http:// or https:// with a host, e.g. https://omendb-0.omendb-headless:3000")
        return value.rstrip("/")


def _frames(db: Any, after_lsn: int, max_bytes: int) -> tuple[bytes, int]:
    """Frames after `after_lsn` up to the visible LSN: from memory when recent, else from the WAL files."""
    visible = db.lsn()
    if after_lsn >= visible:
        return b"", after_lsn
    recent = db.frame_ring.after(after_lsn, visible, max_bytes)
    if recent is not None:
        return recent
    body, last = _collect_frames(db, after_lsn, DISK_FRAMES)
    return body, last


def build_router(state: ServerState, replication: Replication) -> APIRouter:
    router = APIRouter(prefix="/admin", responses=error_responses(401, 403, 503), route_class=JSONRoute)

    @router.get("/replication/info", summary="Role, term history and LSN: what a replica checks first")
    async def info() -> Response:
        db = state.ready_db()
        return _json({"database": db.config.database.name, "database_id": db.database_id, "role": replication.role,
                      "primary": replication.primary_url, "lsn": db.lsn(), "term": db.term,
                      "term_history": [list(e) for e in db.term_history], "last_commit_us": db.last_commit_us})

    @router.get("/replication/wal", summary="Long-poll WAL frames after an LSN (acknowledges that LSN)",
                responses={200: {"content": {"application/octet-stream": {}}}, **error_responses(409, 410)})
    async def wal(after_lsn: Annotated[int, Query(ge=0, description="the caller durably holds every frame "
                                                                     "through this LSN")],
                  replica_id: Annotated[str, Query(max_length=200, description="who is asking")] = "",
                  last_term: Annotated[int | None, Query(ge=1, description="the caller's term at after_lsn; "
                                                                           "checked against this timeline")]
                  = None,
                  wait_ms: Annotated[int, Query(ge=0, le=25000, description="wait this long for a new "
                                                                            "write")] = 0,
                  max_bytes: Annotated[int, Query(ge=1, le=64 << 20)] = 8 << 20) -> Response:
        db = state.ready_db()
        if after_lsn > db.lsn():
            raise APIError(409, "lsn_ahead", f"after_lsn {after_lsn} is ahead of this server's LSN {db.lsn()}: "
                                             "the caller holds writes this timeline does not have; re-seed")
        if last_term is not None and after_lsn > 0 and term_at(db.term_history, after_lsn) != last_term:
            raise APIError(409, "diverged", f"LSN {after_lsn} was written in term "
                                            f"{term_at(db.term_history, after_lsn)} on this timeline, the caller "
                                            f"has it from term {last_term}; re-seed")
        if replica_id:
            db.replicas.report(replica_id, after_lsn)
        if wait_ms and db.lsn() <= after_lsn:
            # The default executor, not the request workers: idle long polls must not starve writes.
            await asyncio.get_running_loop().run_in_executor(None, db.wait_for_lsn, after_lsn, wait_ms / 1000)
        body, last = await state.run(_frames, db, after_lsn, max_bytes)
        return Response(body, media_type="application/octet-stream", headers={
            "X-OmenDB-Last-LSN": str(last), "X-OmenDB-Term": str(db.term),
            "X-OmenDB-Primary-LSN": str(db.lsn()), "X-OmenDB-Primary-Commit-Us": str(db.last_commit_us)})

    @router.get("/replication/heartbeat", summary="The operator's probe of the primary (recorded for fencing)")
    async def heartbeat() -> Response:
        return _json(replication.heartbeat())

    @router.post("/promote", summary="Make this replica the primary (new term; stops following)")
    async def promote() -> Response:
        state.ready_db()
        return _json(await asyncio.get_running_loop().run_in_executor(None, replication.promote))

    @router.post("/follow", summary="Follow another primary (repoint a replica or demote a primary)",
                 responses=error_responses(422))
    async def follow(request: FollowRequest) -> Response:
        state.ready_db()
        return _json(await asyncio.get_running_loop().run_in_executor(None, replication.follow,
                                                                      request.primary_url))

    return router


class ReplicationCollector(Collector):
    """Role, term and lag gauges, read at scrape time."""

    def __init__(self, state: ServerState, replication: Replication) -> None:
        self.state, self.replication = state, replication

    def collect(self) -> Iterable[Any]:
        role = GaugeMetricFamily("omendb_replication_role", "1 for this server's role (primary or replica).",
                                 labels=["role"])
        for name in ("primary", "replica"):
            role.add_metric([name], float(self.replication.role == name))
        yield role
        db = self.state.db
        if db is not None:
            yield GaugeMetricFamily("omendb_replication_term", "Current term (timeline) of this server.",
                                    value=float(db.term))
        follower = self.replication.follower
        lag_s = follower.lag_seconds() if follower is not None else 0.0
        lag_lsn = follower.lag_lsn() if follower is not None else 0
        if lag_s is not None:
            yield GaugeMetricFamily("omendb_replication_lag_seconds", "How far this replica is behind its "
                                    "primary's newest commit (0 on a primary).", value=lag_s)
        if lag_lsn is not None:
            yield GaugeMetricFamily("omendb_replication_lag_lsn", "Batches (LSNs) this replica is behind its "
                                    "primary (0 on a primary).", value=float(lag_lsn))
        if db is not None and follower is None:
            replicas = GaugeMetricFamily("omendb_replication_replica_lsn", "On a primary: the LSN each "
                                         "replica last acknowledged.", labels=["replica"])
            for name, (lsn, _age) in db.replicas.positions().items():
                replicas.add_metric([name], float(lsn))
            yield replicas
