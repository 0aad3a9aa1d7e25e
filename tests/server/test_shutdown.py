"""SIGTERM with writes in flight: every acknowledged write survives, in-flight requests finish, exit 0.
A second signal exits at once, still without losing acknowledged writes. A data directory held by
another server stops startup with a clear error."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from tests.server.harness import Server


class Writers:
    """Threads upserting distinct keys as fast as they can, remembering what was acknowledged."""

    def __init__(self, server: Server, threads: int = 4, batch: int = 200) -> None:
        self.acked: dict[int, float] = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.statuses: list[int] = []
        self.workers = [threading.Thread(target=self._run, args=(server, n, batch), daemon=True)
                        for n in range(threads)]
        for w in self.workers:
            w.start()

    def _run(self, server: Server, n: int, batch: int) -> None:
        key = n * 10_000_000
        with httpx.Client(base_url=server.url, timeout=30) as client:
            while not self.stop.is_set():
                records = [{"key": key + i, "value": float(key + i)} for i in range(batch)]
                try:
                    r = client.post("/v1/records", json={"records": records})
                except httpx.HTTPError:
                    return  # the server went away: this batch was never acknowledged
                with self.lock:
                    self.statuses.append(r.status_code)
                    if r.status_code == 200:
                        self.acked.update((rec["key"], rec["value"]) for rec in records)
                key += batch

    def join(self) -> None:
        self.stop.set()
        for w in self.workers:
            w.join(30)


def assert_all_present(server: Server, acked: dict[int, float]) -> None:
    keys = sorted(acked)
    with httpx.Client(base_url=server.url, timeout=60) as client:
        for i in range(0, len(keys), 5000):
            chunk = keys[i:i + 5000]
            got = client.post("/v1/records/lookup", json={"keys": chunk}).json()["records"]
            missing = [rec["key"] for rec in got if rec["value"] != acked[rec["key"]]]
            assert not missing, f"{len(missing)} acknowledged writes lost, e.g. {missing[:5]}"


def test_sigterm_with_writes_in_flight_loses_nothing(tmp_path: Path) -> None:
    server = Server(tmp_path, {"http": {"shutdown_grace_seconds": 10}})
    with server:
        server.start()
        writers = Writers(server)
        time.sleep(1.0)
        started = time.monotonic()
        code = server.stop(signal.SIGTERM)
        elapsed = time.monotonic() - started
        writers.join()
        assert code == 0, server.log_text()
        assert elapsed < 10 + 10  # grace period plus closing the database
        assert writers.acked, "no write was acknowledged before the signal"
        assert set(writers.statuses) <= {200}, set(writers.statuses)
        log = server.log_text()
        assert "shutdown requested" in log and "database closed" in log

        server.start()
        assert_all_present(server, writers.acked)
        assert server.stop() == 0


def test_second_signal_exits_at_once_without_losing_acknowledged_writes(tmp_path: Path) -> None:
    server = Server(tmp_path, {"http": {"shutdown_grace_seconds": 60}})
    with server:
        server.start()
        writers = Writers(server, threads=2)
        release = threading.Event()

        def stuck_request() -> None:  # keeps graceful shutdown waiting for the whole grace period
            def body() -> Iterator[bytes]:
                yield b'{"keys": [1'
                release.wait(60)
                yield b"]}"
            with contextlib.suppress(httpx.HTTPError):
                httpx.post(f"{server.url}/v1/records/lookup", content=body(), timeout=70,
                           headers={"content-type": "application/json"})

        stuck = threading.Thread(target=stuck_request, daemon=True)
        stuck.start()
        time.sleep(1.0)
        assert server.proc is not None
        server.proc.send_signal(signal.SIGTERM)
        time.sleep(1.0)
        assert server.proc.poll() is None, "graceful shutdown should still be waiting for the stuck request"
        started = time.monotonic()
        code = server.stop(signal.SIGTERM, timeout=10)
        assert time.monotonic() - started < 5
        assert code == 1
        writers.join()
        release.set()
        assert "second shutdown signal" in server.log_text()

        server.start()
        assert_all_present(server, writers.acked)
        assert server.stop() == 0


def test_data_dir_held_by_another_server_stops_startup(tmp_path: Path) -> None:
    first = Server(tmp_path / "a")
    with first:
        first.start()
        second = Server(tmp_path / "b", {"database": {"data_dir": first.config.database.data_dir},
                                         "wal": {"dir": str(first.config.wal_dir)}})
        with second:
            second.start(wait_ready=False)
            assert second.proc is not None and second.proc.wait(60) == 1
        assert "cannot open the database" in second.log_text()
        assert httpx.get(f"{first.url}/ready").status_code == 200
        assert first.stop() == 0
