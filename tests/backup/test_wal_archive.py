"""Continuous WAL archiving ([wal_archive], omendb/wal_archive.py) with a directory as the location: a real
server ships its WAL while it takes writes, is killed, and `backup_tool restore` brings back every
acknowledged write (the newest backup continued by the archived WAL); the WAL stays on the volume until it
is shipped; a restore never mixes two primaries' histories, stops at gaps and damage, and refuses what the
backup key did not sign; cleanup prunes what no kept backup can use."""

from __future__ import annotations

import signal
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
import pytest

from omendb import Database
from omendb.errors import ConfigError
from omendb.files import list_segments
from omendb.wal import encode_frame
from omendb.wal_archive import (
    DirectoryLocation,
    build_piece,
    parse_name,
    piece_mac,
    pieces,
    replay_after,
)
from tests.backup.conftest import engine_config, tool
from tests.server.harness import Server

KEY = b"k" * 32


def _archiving_server(root: Path, archive: Path, interval: float = 0.2, **env: str) -> Server:
    return Server(root, {"database": {"name": "shop"},
                         "wal_archive": {"url": str(archive), "interval_seconds": interval}}, env=env or None)


def _write(server: Server, batch: int, acked: dict[int, float]) -> int:
    records = [{"key": batch * 100 + j, "value": float(batch)} for j in range(20)]
    r = httpx.post(f"{server.url}/v1/records", json={"records": records}, timeout=10)
    assert r.status_code == 200, r.text
    acked.update((rec["key"], rec["value"]) for rec in records)
    return int(r.json()["lsn"])


def _metric(server: Server, name: str) -> float:
    for line in httpx.get(server.metrics_url, timeout=5).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} is not exported")


def _wait(predicate, timeout: float = 15.0, what: str = "") -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _restore_and_read(backups: Path, target: Path, *extra: str) -> tuple[str, Server]:
    out = tool("--backup-dir", str(backups), "--data-dir", str(target), "restore", "--backup-id", "latest",
               *extra).stdout
    return out, Server(target, {"database": {"name": "shop"}}).start()


def test_a_killed_primary_loses_no_acknowledged_write_that_was_shipped(tmp_path):
    backups = tmp_path / "backups"
    acked: dict[int, float] = {}
    with _archiving_server(tmp_path / "primary", backups).start() as primary:
        for batch in range(5):
            _write(primary, batch, acked)
        tool("--backup-dir", str(backups), "--source", primary.url, "full-backup", "--database", "shop")
        for batch in range(5, 40):
            last = _write(primary, batch, acked)
        _wait(lambda: _metric(primary, "omendb_wal_archive_shipped_lsn") >= last, what="the archive to catch up")
        assert _metric(primary, "omendb_wal_archive_active") == 1
        assert _metric(primary, "omendb_wal_archive_failures_total") == 0
        assert _metric(primary, "omendb_wal_archive_lag_seconds") == 0
        primary.stop(signal.SIGKILL)  # no shutdown: only what the archiver shipped on its own counts

    out, restored = _restore_and_read(backups, tmp_path / "restored")
    # One client for the 800 reads: a new one per request costs ~30 ms of CPU (its TLS context).
    with restored, httpx.Client(base_url=restored.url, timeout=5) as http:
        assert f"to LSN {last}" in out and "archived writes after its end" in out, out
        for key, value in acked.items():
            r = http.get(f"/v1/records/{key}")
            assert r.status_code == 200 and r.json()["value"] == value, (key, r.text)
        stats = http.get("/v1/stats").json()
        assert stats["records"] == len(acked)


def test_a_clean_shutdown_ships_the_last_interval(tmp_path):
    backups = tmp_path / "backups"
    acked: dict[int, float] = {}
    with _archiving_server(tmp_path / "primary", backups, interval=3600).start() as primary:
        _write(primary, 0, acked)  # before the first backup: the first tick ran at start
        tool("--backup-dir", str(backups), "--source", primary.url, "full-backup", "--database", "shop")
        last = _write(primary, 1, acked)
        assert primary.stop() == 0
    _, restored = _restore_and_read(backups, tmp_path / "restored")
    with restored:
        assert httpx.get(f"{restored.url}/v1/stats", timeout=5).json()["lsn"] == last
        assert httpx.get(f"{restored.url}/v1/records/100", timeout=5).json()["value"] == 1.0


def test_point_in_time_past_the_newest_backup_comes_from_the_archive(tmp_path):
    backups = tmp_path / "backups"
    acked: dict[int, float] = {}
    with _archiving_server(tmp_path / "primary", backups).start() as primary:
        _write(primary, 0, acked)
        tool("--backup-dir", str(backups), "--source", primary.url, "full-backup", "--database", "shop")
        lsns = [_write(primary, batch, acked) for batch in range(1, 6)]
        _wait(lambda: _metric(primary, "omendb_wal_archive_shipped_lsn") >= lsns[-1], what="the archive")
    out = tool("--backup-dir", str(backups), "--data-dir", str(tmp_path / "pitr"), "restore", "--backup-id",
               "latest", "--to-lsn", str(lsns[2])).stdout
    assert f"to LSN {lsns[2]}" in out
    with Server(tmp_path / "pitr", {"database": {"name": "shop"}}).start() as restored:
        assert httpx.get(f"{restored.url}/v1/records/300", timeout=5).status_code == 200  # batch 3: at the target
        assert httpx.get(f"{restored.url}/v1/records/400", timeout=5).status_code == 404  # batch 4: after it
    listed = tool("--backup-dir", str(backups), "list").stdout.splitlines()
    assert listed[0].endswith("-full") or "-full\t" in listed[0]  # the guide's `list | head -n1`: a backup
    archive_row = listed[-1].split("\t")
    assert archive_row[:2] == ["wal-archive", "shop"] and archive_row[2].endswith(f"..{lsns[-1]}"), listed
    assert f"lsns_after_backup={lsns[-1] - lsns[0] + 1}" in archive_row, listed
    exact = tool("--backup-dir", str(backups), "--data-dir", str(tmp_path / "exact"), "restore", "--backup-id",
                 "latest", "--without-wal-archive").stdout
    assert f"to LSN {lsns[0] - 1} " in exact and "archived writes" not in exact, exact
    refused = tool("--backup-dir", str(backups), "--data-dir", str(tmp_path / "beyond"), "restore",
                   "--backup-id", "latest", "--to-lsn", str(lsns[-1] + 50), check=None)
    assert refused.returncode != 0 and f"covers LSN {lsns[-1] + 50}" in refused.stderr, refused.stderr


def test_the_wal_stays_on_the_volume_until_it_is_shipped(tmp_path):
    """The engine's release rule, in process with real files: a checkpoint releases nothing the archiver has
    not shipped; once shipped, the segments go (and a replica, which ships nothing, holds nothing)."""
    config = engine_config(tmp_path / "db", wal={"max_file_size_mb": 1},
                           wal_archive={"url": str(tmp_path / "archive")})
    db = Database.open(config)
    try:
        rng = np.random.default_rng(7)
        for _ in range(30):  # ~2.4 MB of WAL: several 1 MB segments
            db.put_many(rng.integers(0, 1 << 40, 5000), rng.random(5000))
        db.checkpoint()
        kept = list_segments(db.wal_dir)
        assert len(kept) > 2, "nothing shipped yet: the checkpoint must not release the WAL"
        db.set_archive_hold(db.lsn())
        assert len(list_segments(db.wal_dir)) == 1, "shipped and checkpointed: only the open segment stays"
        db.set_archive_hold(None)
    finally:
        db.close()


def test_wal_archiving_needs_the_wal(tmp_path):
    with pytest.raises(ConfigError, match=r"\[wal_archive\] url is set but \[wal\] enabled = false"):
        engine_config(tmp_path, wal={"enabled": False}, wal_archive={"url": str(tmp_path / "a")}).check_consistency()


# ---- replaying pieces: histories, gaps, damage, keys -------------------------------------------------------


def _frames(first: int, last: int, term: int, value: float) -> bytes:
    return b"".join(encode_frame(lsn, term, 1_000_000 + lsn, np.array([lsn], np.int64), np.array([value]))
                    for lsn in range(first, last + 1))


def _ship(location: DirectoryLocation, database_id: str, first: int, last: int, term: int, value: float,
          secret: bytes | None = None) -> str:
    name, data = build_piece(database_id, _frames(first, last, term, value), first, last, term, term, secret)
    assert location.create(name, data)
    assert not location.create(name, data), "a piece is written once"
    return name


def test_a_replaced_history_is_never_mixed_in(tmp_path):
    """After an asynchronous failover the old primary (term 1) shipped LSN 6..9 that the new primary (term 2)
    never received; the new one wrote its own 6..7. The restore follows term 2 and stops where it ends."""
    database_id = str(uuid.uuid4())
    location = DirectoryLocation(tmp_path, database_id)
    _ship(location, database_id, 1, 5, 1, 1.0)
    _ship(location, database_id, 6, 9, 1, 1.0)  # the old primary's last shipment
    _ship(location, database_id, 6, 7, 2, 2.0)  # the new primary's
    replay = replay_after(location, database_id, 3, 1, None)
    assert [(f.lsn, f.term) for f in replay.frames] == [(4, 1), (5, 1), (6, 2), (7, 2)]
    assert "history another primary replaced" in replay.stop
    assert [p.name for p in pieces(location)] == sorted(p.name for p in pieces(location))


def test_a_gap_and_a_damaged_piece_stop_the_replay_with_the_reason(tmp_path):
    database_id = str(uuid.uuid4())
    location = DirectoryLocation(tmp_path, database_id)
    _ship(location, database_id, 1, 3, 1, 1.0)
    _ship(location, database_id, 6, 8, 1, 1.0)
    replay = replay_after(location, database_id, 0, 1, None)
    assert replay.last_lsn == 3 and "no WAL for LSN 4" in replay.stop
    damaged = _ship(location, database_id, 4, 5, 1, 1.0)
    data = bytearray((location.dir / damaged).read_bytes())
    data[-3] ^= 0xFF
    (location.dir / damaged).write_bytes(bytes(data))
    replay = replay_after(location, database_id, 0, 1, None)
    assert replay.last_lsn == 3 and "unusable" in replay.stop and damaged in replay.stop


def test_with_a_key_only_signed_pieces_are_replayed(tmp_path):
    database_id = str(uuid.uuid4())
    location = DirectoryLocation(tmp_path, database_id)
    signed = _ship(location, database_id, 1, 2, 1, 1.0, KEY)
    unsigned = _ship(location, database_id, 3, 4, 1, 1.0)
    piece = parse_name(signed)
    assert piece is not None and piece.mac == piece_mac(KEY, (location.dir / signed).read_bytes())
    replay = replay_after(location, database_id, 0, 1, KEY)
    assert replay.last_lsn == 2 and "carries no MAC" in replay.stop and unsigned in replay.stop
    replay = replay_after(location, database_id, 0, 1, b"x" * 32)
    assert replay.frames == [] and "MAC mismatch" in replay.stop


def test_an_archive_another_cluster_writes_is_refused(tmp_path):
    """Cluster b is restored from a's backup while a keeps running and shipping: sharing the location would
    make b's history (a newer term) replace a's in every later restore. b's archiver refuses, loudly."""
    backups = tmp_path / "backups"
    acked: dict[int, float] = {}
    with _archiving_server(tmp_path / "a", backups).start() as a:
        _write(a, 0, acked)
        tool("--backup-dir", str(backups), "--source", a.url, "full-backup", "--database", "shop")
        tool("--backup-dir", str(backups), "--data-dir", str(tmp_path / "b"), "restore", "--backup-id", "latest")
        for batch in range(1, 4):
            last = _write(a, batch, acked)
        _wait(lambda: _metric(a, "omendb_wal_archive_shipped_lsn") >= last, what="a's archive")
        with _archiving_server(tmp_path / "b", backups).start() as b:
            _wait(lambda: _metric(b, "omendb_wal_archive_failing") == 1, what="b's archiver to refuse")
            assert "this database was restored from a backup" in b.log_text()
            _write(b, 9, {})
            time.sleep(0.5)
            assert _metric(b, "omendb_wal_archive_pieces_total") == 0
            assert _metric(b, "omendb_wal_archive_lag_seconds") > 0
    _, restored = _restore_and_read(backups, tmp_path / "check")
    with restored:  # a's history, untouched by b
        assert httpx.get(f"{restored.url}/v1/stats", timeout=5).json()["lsn"] == last
        assert httpx.get(f"{restored.url}/v1/records/900", timeout=5).status_code == 404


def test_cleanup_prunes_archived_wal_no_kept_backup_can_use(tmp_path):
    backups = tmp_path / "backups"
    acked: dict[int, float] = {}
    with _archiving_server(tmp_path / "primary", backups).start() as primary:
        _write(primary, 0, acked)
        tool("--backup-dir", str(backups), "--source", primary.url, "full-backup", "--database", "shop")
        for batch in range(1, 4):
            last = _write(primary, batch, acked)
        tool("--backup-dir", str(backups), "--source", primary.url, "full-backup", "--database", "shop")
        _write(primary, 4, acked)
        _wait(lambda: _metric(primary, "omendb_wal_archive_shipped_lsn") >= last + 1, what="the archive")
    before = [p for p in (backups / "wal").rglob("*.wal")]
    rows = [r for r in tool("--backup-dir", str(backups), "list").stdout.splitlines() if r.endswith("key=unkeyed")]
    first_full = rows[-1].split("\t")[0]  # newest first: the oldest backup is the last backup row
    (backups / first_full).rename(backups / ".aside")  # as if retention had removed the older full backup
    out = tool("--backup-dir", str(backups), "cleanup", "--retention-days", "0").stdout
    after = [p for p in (backups / "wal").rglob("*.wal")]
    assert "archived WAL pieces through LSN" in out, out
    assert 0 < len(after) < len(before)
    assert all((parse_name(p.name) or pytest.fail(p.name)).last > last for p in after)
