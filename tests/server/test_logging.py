"""Log levels on a REAL server's log: debug and trace add recovery, merge, checkpoint, WAL and replication
lines from OmenDB's own loggers (libraries stay quiet); RUST_LOG follows env_logger's convention (`off`,
a bare level, `omendb=debug,hyper=warn` takes the omendb directive); a bad level is refused at start."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from tests.replication.cluster import Cluster, api, caught_up
from tests.server.harness import Server


def _records(server: Server) -> list[dict[str, Any]]:
    return server.log_records()


def _messages(records: list[dict[str, Any]], level: str) -> list[str]:
    return [r["msg"] for r in records if r.get("level") == level]


def _exercise(server: Server) -> None:
    """Writes, a merge with its checkpoint, a clean stop (checkpoint), and a restart (recovery)."""
    httpx.post(f"{server.url}/v1/records", json={"records": [{"key": k, "value": 1.0} for k in range(100)]},
               timeout=30).raise_for_status()
    httpx.post(f"{server.url}/admin/retrain-index", timeout=60).raise_for_status()
    httpx.post(f"{server.url}/v1/records", json={"records": [{"key": 1000, "value": 2.0}]},
               timeout=30).raise_for_status()
    assert server.stop() == 0
    server.start()
    assert server.stop() == 0


def test_rust_log_omendb_directive_gives_debug_lines(tmp_path: Path) -> None:
    server = Server(tmp_path / "srv", env={"RUST_LOG": "omendb=debug,hyper=warn"})
    with server:
        server.start()
        _exercise(server)
    debug = _messages(_records(server), "DEBUG")
    for wanted in ("recovery: replaying the WAL", "recovery: loaded checkpoint", "merge: ", "checkpoint: writing",
                   "checkpoint: LSN", "WAL: releasing segments"):
        assert any(m.startswith(wanted) for m in debug), (wanted, debug)
    # Only OmenDB's loggers speak at debug: no numba, httpx or asyncio internals.
    assert {r["logger"].split(".")[0] for r in _records(server) if r.get("level") == "DEBUG"} == {"omendb"}
    assert not _messages(_records(server), "TRACE")


def test_trace_adds_per_fsync_lines_and_info_has_none(tmp_path: Path) -> None:
    traced = Server(tmp_path / "trace", {"monitoring": {"log_level": "trace"}})
    with traced:
        traced.start()
        _exercise(traced)
    assert any(m.startswith("WAL: fsync through byte") for m in _messages(_records(traced), "TRACE"))
    assert _messages(_records(traced), "DEBUG")
    # RUST_LOG naming another target only says nothing about OmenDB: the configured info level stays.
    quiet = Server(tmp_path / "info", env={"RUST_LOG": "hyper=warn"})
    with quiet:
        quiet.start()
        _exercise(quiet)
    levels = {r.get("level") for r in _records(quiet)}
    assert "INFO" in levels and "DEBUG" not in levels and "TRACE" not in levels


def test_rust_log_off_writes_nothing(tmp_path: Path) -> None:
    server = Server(tmp_path / "srv", env={"RUST_LOG": "off"})
    with server:
        server.start()
        httpx.post(f"{server.url}/v1/records", json={"records": [{"key": 1, "value": 1.0}]}, timeout=30)
        httpx.get(f"{server.url}/nowhere", timeout=30)
        assert server.stop() == 0
    assert server.log_text() == ""


def test_a_bad_rust_log_level_is_refused(tmp_path: Path) -> None:
    server = Server(tmp_path / "srv")
    result = subprocess.run([sys.executable, "-m", "omendb.cli", "serve", "--config", str(server.config_path)],
                            env={**server.env, "RUST_LOG": "omendb=loud"}, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2
    assert "RUST_LOG='omendb=loud'" in result.stderr and "not a level" in result.stderr


def test_debug_logs_replication_steps(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, sections={"monitoring": {"log_level": "debug"}})
    try:
        primary = cluster.node("p")
        (replica,) = cluster.replicas(primary, "r")
        with api(primary) as client:
            client.post("/v1/records", json={"records": [{"key": 7, "value": 7.0}]}).raise_for_status()
        caught_up(replica, primary)
        debug = _messages(replica.log_records(), "DEBUG")
        assert any(m.startswith("replication: timeline checked against") for m in debug), debug
        assert any(m.startswith("replication: applied 1 frames") for m in debug), debug
    finally:
        cluster.stop_all()
