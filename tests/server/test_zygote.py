"""The fast tier's forked servers (tests/server/zygote.py) behave as `python -m omendb.cli serve` does for the
tests: same log file, exit codes and signals, and a fresh process each time (checked in `make test` too,
which otherwise starts every server from a fresh interpreter)."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
import pytest

from tests.server import zygote
from tests.server.harness import Server


@pytest.fixture
def forked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(zygote.ENV, "1")


def test_a_forked_server_serves_logs_and_exits_like_a_started_one(tmp_path: Path, forked: None) -> None:
    first = Server(tmp_path / "a", env={"RUST_LOG": "omendb=debug"}).start()
    assert isinstance(first.proc, zygote.Forked)
    r = httpx.post(f"{first.url}/v1/records", json={"records": [{"key": 1, "value": 0.5}]})
    assert r.status_code == 200, r.text
    assert first.proc.poll() is None
    assert first.stop(signal.SIGTERM) == 0  # a clean shutdown, as a fresh interpreter's
    assert any(rec.get("msg") == "database open" for rec in first.log_records())
    assert any(rec.get("level") == "DEBUG" for rec in first.log_records()), "its own environment applied"

    again = Server(tmp_path / "a").start()  # the same data, a new process
    assert again.proc is not None and again.proc.pid != first.proc.pid
    assert httpx.get(f"{again.url}/v1/records/1").json()["value"] == 0.5
    assert again.stop(signal.SIGKILL) == -signal.SIGKILL


def test_a_forked_server_that_cannot_start_reports_its_exit_code(tmp_path: Path, forked: None) -> None:
    holder = Server(tmp_path / "a").start()
    try:
        second = Server(tmp_path / "b", sections={"database": {"data_dir": str(tmp_path / "a" / "data")},
                                                  "wal": {"dir": str(tmp_path / "a" / "wal")}})
        second.start(wait_ready=False)
        assert second.proc is not None
        code = second.proc.wait(60)
        assert code != 0 and "lock" in second.log_text().lower(), (code, second.log_text()[-2000:])
    finally:
        holder.stop()
