"""Proof that a database's WAL continues its checkpoint without a gap, used by recovery and the backup tool.

What must hold before a database may open (or be backed up):

* every segment belongs to this database (its header carries the MANIFEST's ``database_id``);
* the frames after the checkpoint LSN start at ``checkpoint + 1`` and run without a gap to the last frame;
* the newest segment is there: ``WAL_HEAD`` in the data directory names the first LSN of the newest segment
  the engine created (rewritten, fsynced, at each rotation, after the new segment is durable), so a lost
  newest segment, or a lost WAL directory, is noticed even when everything left looks contiguous.

Segments of the previous release carry no identity; they are accepted once, on upgrade (no ``WAL_HEAD``
yet), with the same LSN checks.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from omendb.errors import CorruptionError
from omendb.files import WAL_HEAD, Manifest, default_wal_dir, legacy_wal_dir, list_segments, read_head, segment_name
from omendb.wal import SEGMENT_HEADER_V1, SEGMENT_VERSION, Frame, read_segment, read_segment_header

log = logging.getLogger("omendb.wal")

ACCEPT_GAP_HINT = ("or, accepting the loss of those writes, start once with [wal] accept_gap = true (the "
                   "database then continues on a new term, so no LSN is handed out twice)")


class WalGap(CorruptionError):
    """The WAL does not prove every write after the checkpoint: starting would silently lose writes."""

    code = "wal_gap"


class ForeignWal(CorruptionError):
    """A WAL segment of another database: two databases share a WAL directory."""

    code = "wal_foreign"


@dataclass
class WalChain:
    """What the WAL proves after the checkpoint."""

    frames: list[Frame] = field(default_factory=list)  # every frame after the checkpoint, in LSN order
    end_lsn: int = 0  # last LSN the checkpoint and the WAL together hold
    resume: bool = False  # the newest segment is this release's and ends at end_lsn: keep appending to it
    legacy: bool = False  # previous-release segments were read
    gap: WalGap | None = None  # set when the WAL does not continue the checkpoint (frames hold the prefix)


def locate_wal_dir(data_dir: Path, configured: str, manifest: Manifest | None, opened_before: bool) -> Path:
    """Where a database's WAL is: [wal] dir if set; else where its MANIFEST says; else, for a database of the
    previous release (which put every WAL in <data_dir>/../wal), that directory if it holds previous-release
    segments; else the default for this data directory (files.default_wal_dir)."""
    if configured:
        return Path(os.path.abspath(configured))
    if manifest is not None and manifest.wal_dir:
        return Path(manifest.wal_dir)
    legacy = legacy_wal_dir(data_dir)
    segments = list_segments(legacy)
    if (manifest is not None or opened_before) and segments and \
            all(read_segment_header(path).database_id is None for _, path in segments):
        if legacy != default_wal_dir(data_dir):
            log.warning("upgrading %s: keeping its WAL in %s, where the previous release put it (recorded in the "
                        "MANIFEST from now on)", data_dir, legacy)
        return legacy
    return default_wal_dir(data_dir)


def prove(wal_dir: Path, data_dir: Path, database_id: str, checkpoint_lsn: int, *, repair: bool = False,
          previous_id: str | None = None) -> WalChain:
    """Check the WAL against the checkpoint. Foreign segments raise ForeignWal; a gap is returned in
    ``chain.gap`` (with the frames before it) so recovery can refuse or, when told to, start anyway. With
    `repair`, a torn tail is truncated on disk, but only when there is no gap: a refused WAL is left as is."""
    # WAL_HEAD before the listing: a server rotating meanwhile (backup_tool reads a live directory) then
    # only makes the listing newer than the head, never older.
    head = read_head(data_dir)
    segments = list_segments(wal_dir)
    chain = WalChain(end_lsn=checkpoint_lsn)
    newest_version = SEGMENT_VERSION
    for i, (first, path) in enumerate(segments):
        if i == len(segments) - 1 and path.stat().st_size < SEGMENT_HEADER_V1.size:
            continue  # the newest segment was created but its header never reached the disk: no frames
        header = read_segment_header(path)
        if header.database_id is None:
            chain.legacy = True
        elif header.database_id not in (database_id, previous_id):
            raise ForeignWal(f"WAL segment {path} (LSN {first} onward) belongs to database {header.database_id}, "
                             f"not to {database_id} ({data_dir}/MANIFEST): two databases share the WAL "
                             f"directory {wal_dir}. Give each database its own [wal] dir and move this "
                             f"database's segments there; nothing was opened")
        if header.first_lsn is not None and header.first_lsn != first:
            raise CorruptionError(f"WAL segment {path} is named for LSN {first} but its header says LSN "
                                  f"{header.first_lsn}: it was renamed or copied; put the original back")
        newest_version = header.version
    if head is not None:
        head_id, head_lsn = head
        where = f"{data_dir / WAL_HEAD} says the newest WAL segment is {wal_dir / segment_name(head_lsn)}"
        if head_id not in (database_id, previous_id):
            raise ForeignWal(f"{data_dir / WAL_HEAD} belongs to database {head_id}, not to {database_id}: "
                             f"the data directory was assembled from two databases; restore from a backup")
        if not segments:
            chain.gap = WalGap(f"the WAL directory {wal_dir} holds no segment, but {where}: the WAL that holds "
                               f"the writes after LSN {checkpoint_lsn} (LSN {checkpoint_lsn + 1} to at least "
                               f"{head_lsn - 1 if head_lsn > checkpoint_lsn + 1 else checkpoint_lsn + 1}) is "
                               f"missing. Point [wal] dir at it, or restore from a backup (backup_tool restore "
                               f"--backup-id latest --force), {ACCEPT_GAP_HINT}")
            return chain
        if segments[-1][0] < head_lsn:
            chain.gap = WalGap(f"{where}, but the newest segment present is {segments[-1][1]}: the newest "
                               f"segment (LSN {head_lsn} onward) is missing. Put it back, or restore from a "
                               f"backup (backup_tool restore --backup-id latest --force), {ACCEPT_GAP_HINT}")
    last_in_newest: int | None = None
    torn: tuple[Path, int] | None = None
    for i, (first, path) in enumerate(segments):
        is_last = i == len(segments) - 1
        if not is_last and segments[i + 1][0] <= checkpoint_lsn + 1:
            continue  # wholly covered by the checkpoint
        frames, truncate_at = read_segment(path, is_last, report=repair)
        if truncate_at is not None:
            torn = (path, truncate_at)
        if is_last:
            last_in_newest = frames[-1].lsn if frames else first - 1
        for frame in frames:
            if frame.lsn <= checkpoint_lsn:
                continue
            if frame.lsn <= chain.end_lsn:
                raise CorruptionError(f"WAL segment {path}: LSN {frame.lsn} follows LSN {chain.end_lsn}; the "
                                      f"log is out of order; restore from a backup (backup_tool restore "
                                      f"--backup-id latest --force)")
            if frame.lsn != chain.end_lsn + 1:
                chain.gap = chain.gap or _missing(chain.end_lsn + 1, frame.lsn - 1, path, checkpoint_lsn)
                return chain
            chain.frames.append(frame)
            chain.end_lsn = frame.lsn
    if segments and segments[-1][0] > chain.end_lsn + 1:
        chain.gap = chain.gap or _missing(chain.end_lsn + 1, segments[-1][0] - 1, segments[-1][1], checkpoint_lsn)
    chain.resume = bool(segments) and newest_version == SEGMENT_VERSION and last_in_newest == chain.end_lsn
    if repair and torn is not None and chain.gap is None:
        with open(torn[0], "r+b") as f:
            f.truncate(torn[1])
            f.flush()
            os.fsync(f.fileno())
    return chain


def _missing(first: int, last: int, before: Path, checkpoint_lsn: int) -> WalGap:
    return WalGap(f"the WAL has no frames for LSN {first} to {last} (checkpoint LSN {checkpoint_lsn}; the next "
                  f"segment present is {before}): a WAL segment is missing. Put the missing segment back, or "
                  f"restore from a backup (backup_tool restore --backup-id latest --force), {ACCEPT_GAP_HINT}")


def check_source(wal_dir: Path, data_dir: Path, database_id: str | None, checkpoint_lsn: int) -> WalChain:
    """The backup tool's check of an offline source (same proof as recovery, nothing repaired): raises the
    gap instead of returning it."""
    if database_id is None:  # a previous-release database: no identity yet, the LSN checks still apply
        database_id = "00000000-0000-0000-0000-000000000000"
    chain = prove(wal_dir, data_dir, database_id, checkpoint_lsn)
    if chain.gap is not None:
        raise chain.gap
    return chain
