"""Each limit against a real server: concurrent requests, connections, request timeout, scan duration."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.server.harness import HOST, Server


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(tmp_path_factory.mktemp("limits"), {
        "http": {"max_concurrent_requests": 1, "request_timeout_ms": 1500},
        "limits": {"max_connections": 3, "max_query_duration_ms": 1},
    })
    with server:
        server.start()
        yield server


class SlowUpload:
    """A request whose body trickles in, holding a request slot until released."""

    def __init__(self, server: Server, hold: float) -> None:
        self.release = threading.Event()
        self.response: httpx.Response | None = None
        self.error: Exception | None = None
        self.hold = hold
        self.thread = threading.Thread(target=self._run, args=(server,), daemon=True)
        self.thread.start()
        time.sleep(0.3)  # let the request reach the server

    def _body(self) -> Iterator[bytes]:
        yield b'{"keys": [1'
        self.release.wait(self.hold)
        yield b"]}"

    def _run(self, server: Server) -> None:
        try:
            with httpx.Client(timeout=30) as client:
                self.response = client.post(f"{server.url}/v1/records/lookup", content=self._body(),
                                            headers={"content-type": "application/json"})
        except Exception as exc:
            self.error = exc

    def finish(self) -> httpx.Response:
        self.release.set()
        self.thread.join(30)
        assert self.error is None, self.error
        assert self.response is not None
        return self.response


def test_excess_concurrent_requests_get_503_at_once(limited: Server) -> None:
    slow = SlowUpload(limited, hold=10)
    started = time.monotonic()
    with httpx.Client(timeout=10) as client:
        r = client.get(f"{limited.url}/v1/records/1")
        # Probes are not counted against the limit.
        assert client.get(f"{limited.url}/ready").status_code == 200
    assert time.monotonic() - started < 5  # refused, not queued behind the slow request
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    assert "max_concurrent_requests = 1" in r.json()["error"]["message"]
    # The slow request itself was admitted (answered, or timed out by request_timeout_ms on a busy machine).
    admitted = slow.finish()
    assert admitted.status_code == 200 or admitted.json()["error"]["code"] == "request_timeout"
    with httpx.Client(timeout=10) as client:
        assert client.get(f"{limited.url}/v1/records/1").status_code == 404


def test_request_timeout(limited: Server) -> None:
    slow = SlowUpload(limited, hold=3)  # longer than request_timeout_ms = 1500
    slow.thread.join(10)  # answered when the timeout fires, before the body is released
    r = slow.response
    assert r is not None, slow.error
    slow.release.set()
    assert r.status_code == 503 and r.json()["error"]["code"] == "request_timeout"
    assert "request_timeout_ms = 1500" in r.json()["error"]["message"]


def test_connections_beyond_max_connections_are_refused(tmp_path: Path) -> None:
    """Refused only when every connection has a request in progress; idle ones are evicted instead
    (tests/server/test_slow_clients.py)."""
    server = Server(tmp_path, {"http": {"max_concurrent_requests": 10},
                               "limits": {"max_connections": 3}})
    with server:
        server.start()
        busy = [SlowUpload(server, hold=20) for _ in range(3)]
        try:
            with httpx.Client(timeout=10) as client:
                r = client.get(f"{server.url}/health")
            assert r.status_code == 503 and r.json()["error"]["code"] == "too_many_connections"
            assert "max_connections = 3" in r.json()["error"]["message"]
            assert "omendb_active_connections 3.0" in httpx.get(server.metrics_url).text
            # A refused client that sends nothing still gets the answer, and the socket is closed.
            with socket.create_connection((HOST, server.port), timeout=10) as silent:
                reply = b""
                while chunk := silent.recv(4096):
                    reply += chunk
            assert reply.startswith(b"HTTP/1.1 503") and b"too_many_connections" in reply
            assert 'omendb_rejected_requests_total{limit="max_connections"}' in httpx.get(server.metrics_url).text
        finally:
            for upload in busy:
                assert upload.finish().status_code == 200
        time.sleep(0.3)
        assert httpx.get(f"{server.url}/health").status_code == 200


def test_long_scan_stops_with_a_clear_error(limited: Server) -> None:
    with httpx.Client(base_url=limited.url, timeout=30) as client:
        for base in range(0, 60_000, 20_000):
            batch = [{"key": k, "value": 1.0} for k in range(base, base + 20_000)]
            assert client.post("/v1/records", json={"records": batch}).status_code == 200
        r = client.get("/v1/records", params={"limit": 60_000})
        assert r.status_code == 503, r.text
        error = r.json()["error"]
        assert error["code"] == "query_timeout" and "max_query_duration_ms = 1" in error["message"]
        # A page that fits in one slice of the scan is answered.
        assert len(client.get("/v1/records", params={"limit": 100}).json()["records"]) == 100


def test_metrics_count_refusals(limited: Server) -> None:
    text = httpx.get(limited.metrics_url).text
    for limit in ("max_concurrent_requests", "request_timeout_ms"):
        assert f'omendb_rejected_requests_total{{limit="{limit}"}}' in text, limit


def test_prometheus_disabled_means_no_listener(tmp_path: Path) -> None:
    server = Server(tmp_path, {"monitoring": {"prometheus_enabled": False}})
    with server:
        server.start()
        with pytest.raises(httpx.ConnectError):
            httpx.get(server.metrics_url, timeout=2)
        assert server.stop() == 0


def _peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM in /proc/PID/status")


def test_an_oversized_batch_is_refused_before_it_is_parsed(tmp_path: Path) -> None:
    """A 61 MiB lookup is under max_body_mb = 64 but far over what 50,000 keys need: it used to be read
    and parsed into Python objects (767 MiB peak) before the 413. Now the size is checked as it streams."""
    big = b'{"keys": [' + b"1234567," * (61 * 2**20 // 8) + b"1]}"
    server = Server(tmp_path)  # default limits: max_body_mb = 64, max_insert_batch_size = 50000
    with server:
        server.start()
        assert server.proc is not None
        with httpx.Client(base_url=server.url, timeout=120) as client:
            assert client.post("/v1/records/lookup", json={"keys": [1]}).status_code == 200
            before = _peak_rss_mib(server.proc.pid)

            def chunks() -> Iterator[bytes]:
                for i in range(0, len(big), 1 << 20):
                    yield big[i:i + (1 << 20)]

            for content in (big, chunks()):  # with Content-Length, and chunked without it
                r = client.post("/v1/records/lookup", content=content, headers={"content-type": "application/json"})
                assert r.status_code == 413, r.text[:300]
                error = r.json()["error"]
                assert error["code"] == "batch_too_large", error
                assert "max_insert_batch_size = 50000" in error["message"]
            growth = _peak_rss_mib(server.proc.pid) - before
        assert growth < 100, f"peak RSS grew {growth:.0f} MiB while refusing a 61 MiB batch"
        text = httpx.get(server.metrics_url).text
        assert 'omendb_rejected_requests_total{limit="max_insert_batch_size"} 2.0' in text
