"""``verify``: every checksum and the continuity of a backup's chain; ``--deep`` also rebuilds the state,
restores it into a temporary directory, opens it with the engine and compares the record count and
content digest with the manifest. With a data directory that holds a database, its checkpoint and WAL are
checked too (the guide's "check WAL integrity" step), read-only."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from omendb.backup.errors import Corrupt
from omendb.backup.layout import Layout
from omendb.backup.manifest import FULL
from omendb.backup.payload import check_file
from omendb.backup.restore import (
    check_against_manifest,
    keys_digest_of_directory,
    load_frames,
    materialize,
    write_checkpoint,
)
from omendb.backup.source import RESTORE_POISON
from omendb.backup.store import BackupStore
from omendb.checkpoint import read_base
from omendb.errors import CorruptionError
from omendb.files import MANIFEST, guide_layout, list_segments, read_manifest
from omendb.wal import read_segment


@dataclass
class Report:
    lines: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def ok(self, line: str) -> None:
        self.lines.append(f"OK   {line}")

    def warn(self, line: str) -> None:
        self.lines.append(f"WARN {line}")

    def bad(self, line: str) -> None:
        self.lines.append(f"FAIL {line}")
        self.problems.append(line)


def verify_backup(store: BackupStore, backup_id: str, database: str | None, deep: bool,
                  report: Report) -> None:
    try:
        manifest = store.get(backup_id, database)
        chain = store.chain(manifest)
    except Corrupt as exc:
        report.bad(exc.message)
        return
    finally:
        for warning in store.warnings:
            report.warn(warning)
    report.ok(f"chain of {manifest.id}: {' -> '.join(m.id for m in chain)} (LSN {chain[0].start_lsn}.."
              f"{manifest.end_lsn}, continuous)")
    for m in chain:
        try:
            for entry in m.files:
                check_file(store.path(m.id) / entry.name, entry)
            load_frames(store, m)  # every frame's crc32 and LSN continuity
            if m.type == FULL and m.snapshot is None:
                raise Corrupt(f"full backup {m.id} has no snapshot")
        except Corrupt as exc:
            report.bad(exc.message)
            continue
        signed = f", signature verified with key id {m.key_id}" if m.keyed else ", unkeyed (no signature)"
        report.ok(f"{m.id}: {len(m.files)} files, sha256 and WAL frame checksums match{signed}")
    if report.problems or not deep:
        return
    try:
        state = materialize(store, chain)
        check_against_manifest(state, manifest)
        with tempfile.TemporaryDirectory(prefix="omendb-verify-") as tmp:
            layout = Layout(*guide_layout(Path(tmp)))
            layout.data_dir.mkdir()
            write_checkpoint(state, layout.data_dir, manifest.engine_database or manifest.database,
                             manifest.index)
            records, digest, lsn = keys_digest_of_directory(layout)
        if (records, digest, lsn) != (manifest.records, manifest.content_sha256, manifest.end_lsn):
            raise Corrupt(f"restored {records} records at LSN {lsn} (digest {digest[:12]}...), the manifest "
                          f"says {manifest.records} at LSN {manifest.end_lsn} "
                          f"({manifest.content_sha256[:12]}...)")
    except Corrupt as exc:
        report.bad(f"deep check of {manifest.id}: {exc.message}")
        return
    report.ok(f"deep check of {manifest.id}: restored into a temporary directory, the engine opened it: "
              f"{records} records at LSN {lsn}, content sha256 {digest[:16]}... as in the manifest")


def verify_data_dir(layout: Layout, report: Report) -> None:
    """Read-only integrity check of a live data directory: checkpoint blocks and every WAL frame."""
    try:
        if (layout.data_dir / MANIFEST).read_bytes().startswith(RESTORE_POISON):
            report.bad(f"{layout.data_dir}: an interrupted restore; run the restore again or "
                       "rollback-restore")
            return
    except FileNotFoundError:
        pass
    try:
        manifest = read_manifest(layout.data_dir)
        lsn = 0
        if manifest is not None and manifest.base_file:
            lsn, keys, _, _, _ = read_base(layout.data_dir / manifest.base_file)
            report.ok(f"checkpoint {layout.data_dir / manifest.base_file}: {len(keys)} records at LSN {lsn}, "
                      f"every block checksum matches")
        segments = list_segments(layout.wal_dir)
        frames, last = 0, None
        for i, (_, path) in enumerate(segments):
            found, torn_at = read_segment(path, is_last=i == len(segments) - 1)
            for frame in found:
                if last is not None and frame.lsn != last + 1:
                    raise CorruptionError(f"WAL segment {path}: LSN {frame.lsn} follows LSN {last}; frames "
                                          "are missing")
                last = frame.lsn
            frames += len(found)
            if torn_at is not None:
                report.ok(f"WAL segment {path} ends in a torn frame at offset {torn_at} (an unacknowledged "
                          f"write; the engine truncates it at startup)")
        report.ok(f"WAL {layout.wal_dir}: {len(segments)} segments, {frames} frames"
                  + (f" (LSN {last - frames + 1}..{last})" if last is not None else "")
                  + ", every frame checksum matches")
    except CorruptionError as exc:
        report.bad(exc.message)
