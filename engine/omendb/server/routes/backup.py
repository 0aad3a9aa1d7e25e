"""``/admin/backup/*`` and ``/admin/wal``: what an online backup (``backup_tool --source URL``) and WAL
streaming replicas read from a running server, for ``[security] admin_users`` only (checked for every
``/admin/`` path before routing).

- ``GET /admin/backup/info``: database name, LSN, term, archived LSN, index settings, restore origin.
- ``GET /admin/backup/snapshot``: the current checkpoint file, byte for byte (after a checkpoint unless
  ``checkpoint=false``), consistent at the LSN in ``X-OmenDB-LSN``. The file is opened before streaming
  starts, so a concurrent checkpoint unlinking it does not disturb the stream.
- ``GET /admin/wal?after_lsn=N[&limit=M]``: WAL frames N+1.. up to the newest durable write, concatenated
  exactly as in the WAL segments (each frame carries its LSN, term, commit time and crc32);
  ``X-OmenDB-Last-LSN`` is the last one sent. 410 when the WAL after N is no longer retained (take a full
  backup / resynchronize from a snapshot), 409 when N is ahead of this server (another history).
- ``POST /admin/wal/archived {"lsn": N}``: backups hold the WAL through N, so the engine may release it.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import AsyncIterator
from typing import IO, Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response, StreamingResponse

from omendb.backup.source import empty_base_bytes, read_restored_from
from omendb.checkpoint import BASE_HEADER
from omendb.files import read_manifest
from omendb.server.bodies import JSONRoute
from omendb.server.errors import APIError
from omendb.server.models import INT64_MAX, error_responses
from omendb.server.routes.records import _json
from omendb.server.state import ServerState
from omendb.wal import encode_frame, read_frames

CHUNK = 1 << 20
LSN_HEADER = "X-OmenDB-LSN"
INDEX_HEADER = "X-OmenDB-Checkpoint-Index"  # JSON: model_type, max_error, meta (the MANIFEST's index_meta)


class ArchivedRequest(BaseModel):
    # strict: true is not LSN 1, nor "5" LSN 5 (bool is an int subclass, and lax mode parses strings).
    model_config = ConfigDict(extra="forbid", strict=True)

    lsn: int = Field(ge=0, le=INT64_MAX, description="Backups hold every WAL frame up to and including this LSN.")


def _open_checkpoint(db: Any) -> tuple[IO[bytes] | None, int, int, int, str]:
    """(open base file or None for an empty database, LSN, term, checkpoint creation µs, the checkpoint's
    index description as JSON: a restore that puts the file back as is writes it into the new MANIFEST)."""
    for _ in range(50):
        manifest = read_manifest(db.data_dir)
        if manifest is None or manifest.base_file is None:
            return None, 0, db.term, 0, ""
        try:
            f = open(db.data_dir / manifest.base_file, "rb")  # noqa: SIM115 - closed by the stream
        except FileNotFoundError:
            time.sleep(0.02)  # a checkpoint replaced it after we read the manifest
            continue
        lsn = BASE_HEADER.unpack(f.read(BASE_HEADER.size))[5]
        f.seek(0)
        if lsn != manifest.checkpoint_lsn:
            f.close()
            continue
        index = json.dumps({"model_type": manifest.model_type, "max_error": manifest.max_error,
                            "meta": manifest.index_meta}, separators=(",", ":"))
        return f, lsn, manifest.term, int(manifest.created_at * 1_000_000), index
    raise APIError(503, "checkpoint_busy", "the checkpoint kept changing while it was being opened; retry",
                   {"Retry-After": "1"})


def _collect_frames(db: Any, after_lsn: int, limit: int | None) -> tuple[bytes, int]:
    visible = db.lsn()
    if after_lsn > visible:
        raise APIError(409, "lsn_ahead",
                       f"after_lsn {after_lsn} is ahead of this server's LSN {visible}: the "
                                         "the caller follows another history; start from a full snapshot")
    if after_lsn == visible:
        return b"", visible
    if not db.config.wal.enabled:
        raise APIError(410, "wal_gone", "this server runs with [wal] enabled = false, so it keeps no WAL; "
                                        "take full backups (or enable the WAL)")
    for _ in range(20):
        parts: list[bytes] = []
        last = after_lsn
        try:
            for frame in read_frames(db.wal_dir, after_lsn=after_lsn):
                if frame.lsn > visible or (limit is not None and len(parts) >= limit):
                    break
                if frame.lsn != last + 1:
                    break
                parts.append(encode_frame(frame.lsn, frame.term, frame.commit_us, frame.keys, frame.values))
                last = frame.lsn
        except FileNotFoundError:
            time.sleep(0.02)  # a checkpoint released a segment while we read it
            continue
        if not parts:
            raise APIError(410, "wal_gone", f"the WAL after LSN {after_lsn} is no longer retained (released "
                                            f"after a checkpoint); take a full backup or resynchronize from "
                                            f"GET /admin/backup/snapshot")
        return b"".join(parts), last
    raise APIError(503, "wal_busy", "WAL segments kept changing while being read; retry",
                   {"Retry-After": "1"})


def build_router(state: ServerState) -> APIRouter:
    # Authentication and the admin check happen before routing for every /admin/ path (server/auth.py).
    router = APIRouter(prefix="/admin", responses=error_responses(401, 403, 503), route_class=JSONRoute)

    @router.get("/backup/info", summary="What an online backup needs to know about this database")
    async def info() -> Response:
        db = state.ready_db()
        cfg = db.config
        return _json({
            "database": cfg.database.name, "database_id": db.database_id, "lsn": db.lsn(), "term": db.term,
            "archived_lsn": await state.run(db.archived_lsn),
            "wal_released_unarchived": db.wal_released_unarchived, "wal_enabled": cfg.wal.enabled,
            "model_type": cfg.index.model_type, "max_error": cfg.index.max_error,
            "restored_from": await state.run(read_restored_from, db.data_dir),
        })

    @router.get("/backup/snapshot", summary="Stream the checkpoint file: a consistent snapshot at one LSN",
                response_class=StreamingResponse,
                responses={200: {"content": {"application/octet-stream": {}}}})
    async def snapshot(checkpoint: Annotated[bool, Query(description="write a checkpoint first, so the WAL "
                                                                      "needed after it is short")] = True
                       ) -> Response:
        db = state.ready_db()
        if checkpoint:
            await state.run(db.checkpoint)
        f, lsn, term, created_us, index = await state.run(_open_checkpoint, db)
        headers = {LSN_HEADER: str(lsn), "X-OmenDB-Term": str(term), "X-OmenDB-Checkpoint-Created-Us":
                   str(created_us), "X-OmenDB-Database": db.config.database.name}
        if index:
            headers[INDEX_HEADER] = index
        if f is None:
            return Response(await state.run(empty_base_bytes), media_type="application/octet-stream",
                            headers=headers)
        headers["Content-Length"] = str(os.fstat(f.fileno()).st_size)

        async def stream(f: IO[bytes] = f) -> AsyncIterator[bytes]:
            try:
                while chunk := await state.run(f.read, CHUNK):
                    yield chunk
            finally:
                f.close()

        return StreamingResponse(stream(), media_type="application/octet-stream", headers=headers)

    @router.get("/wal", summary="Stream WAL frames after an LSN (raw frames with their checksums)",
                responses={200: {"content": {"application/octet-stream": {}}}, **error_responses(409, 410)})
    async def wal(after_lsn: Annotated[int, Query(ge=0, description="send frames with LSN > after_lsn")],
                  limit: Annotated[int | None, Query(ge=1, description="at most this many frames")] = None
                  ) -> Response:
        db = state.ready_db()
        body, last = await state.run(_collect_frames, db, after_lsn, limit)
        return Response(body, media_type="application/octet-stream",
                        headers={"X-OmenDB-Last-LSN": str(last), "X-OmenDB-Term": str(db.term)})

    @router.post("/wal/archived", summary="Record that backups hold the WAL through an LSN",
                 responses=error_responses(409, 422))
    async def archived(request: ArchivedRequest) -> Response:
        db = state.ready_db()
        if request.lsn > db.lsn():
            raise APIError(409, "lsn_ahead", f"lsn {request.lsn} is ahead of this server's LSN {db.lsn()}")
        await state.run(db.mark_archived, request.lsn)
        return _json({"archived_lsn": request.lsn})

    return router
