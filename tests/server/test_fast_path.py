"""Single-key reads answered by the connection itself (fastpath.py), against real ``omendb serve``
processes over real sockets: pipelined requests mixing them with the general path answer in order, the
bytes on the wire, the access log and the metrics are what the general path gives, authentication
follows the verified-credentials cache, the throttle and htpasswd reloads, and idle timeouts and graceful
shutdown still hold."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.server.harness import HOST, Server, htpasswd_bcrypt

ROUTE = "/v1/records/{key}"


def _request(method: str, target: str, request_id: str, extra: str = "", body: bytes = b"") -> bytes:
    head = f"{method} {target} HTTP/1.1\r\nHost: {HOST}\r\nX-Request-ID: {request_id}\r\n{extra}"
    if body:
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


class Responses:
    """Reads HTTP/1.1 responses off a socket, one after another (Content-Length framing)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.buffer = sock, b""

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"the server closed the connection; unread: {self.buffer!r}")
        self.buffer += chunk

    def next(self, head_only: bool = False) -> tuple[bytes, int, dict[str, str], bytes]:
        """The raw response, its status, headers (lower-case names) and body."""
        while b"\r\n\r\n" not in self.buffer:
            self._fill()
        end = self.buffer.index(b"\r\n\r\n") + 4
        lines = self.buffer[:end].decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = dict((k.lower(), v) for k, _, v in (line.partition(": ") for line in lines[1:] if line))
        length = 0 if head_only else int(headers.get("content-length", "0"))
        while len(self.buffer) < end + length:
            self._fill()
        raw, self.buffer = self.buffer[:end + length], self.buffer[end + length:]
        return raw, status, headers, raw[end:]


def _connect(server: Server) -> socket.socket:
    sock = socket.create_connection((HOST, server.port), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _series(server: Server) -> dict[str, float]:
    """Every sample of /metrics, by name and labels."""
    samples = {}
    for line in httpx.get(server.metrics_url, timeout=10).text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("fast-path"), {"http": {"idle_timeout_ms": 1500},
                                                        "monitoring": {"log_format": "json"}})
    with srv:
        srv.start()
        records = [{"key": k, "value": k * 1.5} for k in range(10)]
        httpx.post(f"{srv.url}/v1/records", json={"records": records}, timeout=30).raise_for_status()
        yield srv


def test_a_point_read_is_answered_within_data_received(tmp_path: Path) -> None:
    # No sockets: the protocol class `omendb serve` uses, fed one request. The answer is written before
    # data_received returns, and uvicorn made no task for it; a HEAD of the same record goes the usual way.
    from omendb import Database
    from omendb.server.lifecycle import build_server
    from omendb.server.state import Phase

    config = Server(tmp_path).config
    written: list[bytes] = []

    class Transport:
        def write(self, data: bytes) -> None:
            written.append(data)

        def is_closing(self) -> bool:
            return False

        def close(self) -> None:
            pass

        def get_extra_info(self, name: str, default: object = None) -> object:
            return {"sockname": (HOST, 1), "peername": (HOST, 2)}.get(name, default)

        def pause_reading(self) -> None:
            pass

        def resume_reading(self) -> None:
            pass

    async def run() -> None:
        srv, state = build_server(config)
        state.db = Database.open(config)
        try:
            state.db.put_many([7], [3.5])
            state.set_phase(Phase.READY, "ready")
            srv.config.load()
            protocol = srv.config.http_protocol_class(config=srv.config, server_state=srv.server_state,
                                                      app_state={})
            protocol.connection_made(Transport())
            protocol.data_received(_request("GET", "/v1/records/7", "in-process"))
            assert not srv.server_state.tasks
            assert len(written) == 1 and written[0].startswith(b"HTTP/1.1 200 OK\r\n")
            assert written[0].endswith(b'x-request-id: in-process\r\n\r\n{"key":7,"value":3.5}')
            protocol.data_received(_request("HEAD", "/v1/records/7", "head"))
            assert len(srv.server_state.tasks) == 1  # the general path: an ASGI task
            await asyncio.gather(*srv.server_state.tasks)
            # (FastAPI answers HEAD on a GET route 405, as it did before the connection answered reads.)
            assert written[-1].startswith(b"HTTP/1.1 405 ") and b"x-request-id: head" in written[-1]
            protocol.connection_lost(None)
        finally:
            state.db.close()
            state.executor.shutdown()

    asyncio.run(run())


def test_pipelined_requests_mixing_both_paths_answer_in_order(server: Server) -> None:
    upsert = json.dumps({"records": [{"key": 100, "value": 7.5}]}).encode()
    requests = [
        ("r1", _request("GET", "/v1/records/2", "r1"), 200, {"key": 2, "value": 3.0}),  # on the connection
        ("r2", _request("POST", "/v1/records", "r2", body=upsert), 200, None),  # the general path
        ("r3", _request("GET", "/v1/records/100", "r3"), 200, {"key": 100, "value": 7.5}),  # after r2's write
        ("r4", _request("GET", "/v1/records/abc", "r4"), 400, None),
        ("r5", _request("HEAD", "/v1/records/2", "r5"), 405, None),  # FastAPI's answer to HEAD, as before
        ("r6", _request("GET", "/v1/records/3", "r6", "X-Forwarded-For: 10.1.2.3\r\n"), 200,
         {"key": 3, "value": 4.5}),
        ("r7", _request("GET", "/v1/records/999", "r7"), 404, None),
        ("r8", _request("GET", "/v1/records/4", "r8"), 200, {"key": 4, "value": 6.0}),
    ]
    with _connect(server) as sock:
        sock.sendall(b"".join(r[1] for r in requests))
        responses = Responses(sock)
        for request_id, raw, status, body in requests:
            _, got_status, headers, got_body = responses.next(head_only=raw.startswith(b"HEAD"))
            assert (headers["x-request-id"], got_status) == (request_id, status), got_body
            if body is not None:
                assert json.loads(got_body) == body
        assert headers.get("connection") != "close"
        # The connection is still usable.
        for n in range(3):
            sock.sendall(_request("GET", f"/v1/records/{n}", f"again{n}"))
            _, got_status, headers, got_body = responses.next()
            assert (got_status, headers["x-request-id"], json.loads(got_body)) == (
                200, f"again{n}", {"key": n, "value": n * 1.5})
    lines = {r["request_id"]: r for r in (server.wait_for_log(lambda r, i=i: r.get("request_id") == i)
                                          for i in ["r1", "r3", "r6", "r7", "r8", "again0"])}
    assert [lines[i]["status"] for i in ["r1", "r3", "r6", "r7", "r8"]] == [200, 200, 200, 404, 200]
    assert lines["r1"]["path"] == "/v1/records/2" and lines["r1"]["method"] == "GET"
    assert lines["r1"]["remote"] == HOST and lines["r1"]["user"] == "-"
    assert lines["r6"]["remote"] == "10.1.2.3"  # X-Forwarded-For from a trusted proxy: uvicorn's rewrite
    assert list(lines["r1"]) == list(lines["r6"])  # the same fields, in the same order
    assert server.log_text().splitlines()[-1].endswith("}")


def test_fast_answers_are_the_general_paths_bytes(server: Server) -> None:
    # A query string sends the same read down the general path (the request guard, uvicorn's cycle).
    with _connect(server) as sock:
        responses = Responses(sock)
        for key in (5, 12345):
            answers = []
            for target in (f"/v1/records/{key}", f"/v1/records/{key}?via=general"):
                sock.sendall(_request("GET", target, "same-id"))
                raw = responses.next()[0]
                answers.append(re.sub(rb"\r\ndate: [^\r]*", b"", raw))
            assert answers[0] == answers[1]
            assert re.search(rb"\r\ndate: ", raw)


def test_metrics_count_fast_answers_as_the_general_path_does(server: Server) -> None:
    keys = [k % 10 for k in range(40)] + [1000 + k for k in range(10)]  # 40 found, 10 missing

    def run(suffix: str) -> dict[str, float]:
        before = _series(server)
        with httpx.Client(base_url=server.url, timeout=30) as client:
            for key in keys:
                assert client.get(f"/v1/records/{key}{suffix}").status_code == (200 if key < 1000 else 404)
        after = _series(server)
        return {name: after[name] - before.get(name, 0.0) for name in after}

    fast = run("")
    general = run("?via=general")
    requests = 'omendb_http_requests_total{method="GET",route="/v1/records/{key}",status="%s"}'
    for deltas in (fast, general):
        assert deltas[requests % "200"] == 40 and deltas[requests % "404"] == 10
        assert deltas['omendb_searches_total{operation="get"}'] == 50
        assert deltas['omendb_query_duration_seconds_count{operation="get"}'] == 50
        assert deltas['omendb_query_duration_seconds_bucket{le="+Inf",operation="get"}'] == 50
        assert deltas['omendb_query_duration_seconds_sum{operation="get"}'] > 0
        assert deltas['omendb_search_failures_total{operation="get"}'] == 0
    assert set(fast) == set(general)  # the same series (the general run added none)
    counts = [name for name in fast if name.startswith(("omendb_http_requests_total", "omendb_searches",
                                                        "omendb_query_duration_seconds_count"))]
    assert {name: fast[name] for name in counts} == {name: general[name] for name in counts}


def test_idle_timeout_runs_from_the_last_fast_answer(server: Server) -> None:
    def closed_by_timeout() -> float:
        samples = _series(server)
        return samples['omendb_http_connections_closed_total{reason="idle_timeout"}']

    before = closed_by_timeout()
    with _connect(server) as sock:
        responses = Responses(sock)
        for n in range(6):  # 3 s of answers 0.5 s apart on a connection with a 1.5 s idle bound
            sock.sendall(_request("GET", "/v1/records/1", f"idle{n}"))
            assert responses.next()[1] == 200
            time.sleep(0.5)
        last = time.monotonic() - 0.5
        sock.settimeout(15)
        assert sock.recv(1) == b""  # closed by the server, silently
        waited = time.monotonic() - last
    # Not before the bound, give or take the answer's trip to this client (the server's bound runs from its
    # write); not long after it. Had the idle timer run from the first answer, a read above would have failed.
    assert 1.0 <= waited <= 1.5 + 8.0, waited
    assert closed_by_timeout() == before + 1


USER, PASSWORD, NEW_PASSWORD = "bob", "bob-fast-pw", "bob-new-pw"


def test_authenticated_fast_reads_follow_the_cache_the_reload_and_the_throttle(tmp_path: Path) -> None:
    users = tmp_path / "users.htpasswd"
    users.write_text(htpasswd_bcrypt(USER, PASSWORD) + "\n")
    srv = Server(tmp_path, {"security": {"auth_enabled": True, "htpasswd_file": str(users),
                                         "login_failures_per_user": 8, "login_failures_per_address": 100}})
    with srv:
        srv.start()
        with httpx.Client(base_url=srv.url, timeout=30, auth=(USER, PASSWORD)) as client:
            client.post("/v1/records", json={"records": [{"key": 1, "value": 2.0}]}).raise_for_status()
        assert httpx.get(f"{srv.url}/v1/records/1").status_code == 401  # no credentials
        with httpx.Client(base_url=srv.url, timeout=30) as client:  # one keep-alive connection
            for n in range(5):  # the first verifies (bcrypt), the others find the cache
                r = client.get("/v1/records/1", auth=(USER, PASSWORD), headers={"X-Request-ID": f"auth{n}"})
                assert (r.status_code, r.json()) == (200, {"key": 1, "value": 2.0})
            line = srv.wait_for_log(lambda r: r.get("request_id") == "auth4")
            assert (line["user"], line["status"]) == (USER, 200)
            assert client.get("/v1/records/1", auth=(USER, "wrong")).status_code == 401
            assert client.get("/v1/records/1", auth=(USER, PASSWORD)).status_code == 200

            # A new password in the file (reloaded within a second or so): the cached one stops working on
            # this very connection.
            users.write_text(htpasswd_bcrypt(USER, NEW_PASSWORD) + "\n")
            deadline = time.monotonic() + 10
            while client.get("/v1/records/1", auth=(USER, PASSWORD)).status_code == 200:
                assert time.monotonic() < deadline, "the old password still works 10 s after the change"
                time.sleep(0.2)
            assert client.get("/v1/records/1", auth=(USER, PASSWORD)).status_code == 401
            for _ in range(3):
                assert client.get("/v1/records/1", auth=(USER, NEW_PASSWORD)).status_code == 200

            # Wrong passwords for the user until it is throttled: the right, cached one now gets 429 too.
            failures = 0
            while True:
                r = client.get("/v1/records/1", auth=(USER, "guess"))
                if r.status_code == 429:
                    break
                assert r.status_code == 401 and failures < 8
                failures += 1
            r = client.get("/v1/records/1", auth=(USER, NEW_PASSWORD))
            assert r.status_code == 429 and "login_failures_per_user" in r.json()["error"]["message"]


def test_shutdown_finishes_requests_in_flight_and_refuses_new_ones(tmp_path: Path) -> None:
    srv = Server(tmp_path, {"http": {"shutdown_grace_seconds": 10}})
    with srv:
        srv.start()
        httpx.post(f"{srv.url}/v1/records", json={"records": [{"key": 1, "value": 2.0}]},
                   timeout=30).raise_for_status()
        idle, busy = _connect(srv), _connect(srv)
        with idle, busy:
            idle_responses, busy_responses = Responses(idle), Responses(busy)
            idle.sendall(_request("GET", "/v1/records/1", "before"))
            assert idle_responses.next()[1] == 200
            body = json.dumps({"records": [{"key": 2, "value": 4.0}]}).encode()
            request = _request("POST", "/v1/records", "in-flight", body=body)
            busy.sendall(request[:-5])  # in flight: the application waits for the rest of the body
            time.sleep(0.5)
            assert srv.proc is not None
            srv.proc.send_signal(signal.SIGTERM)
            srv.wait_for_log(lambda r: r.get("msg") == "shutdown requested: finishing in-flight requests")
            idle.settimeout(10)
            assert idle.recv(1) == b""  # the idle keep-alive connection is closed
            deadline = time.monotonic() + 10
            while True:  # the listener stops accepting
                try:
                    socket.create_connection((HOST, srv.port), timeout=2).close()
                except OSError:
                    break
                assert time.monotonic() < deadline, "new connections still accepted during shutdown"
                time.sleep(0.1)
            busy.sendall(request[-5:])
            _, status, headers, answer = busy_responses.next()
            assert (status, headers["x-request-id"], headers.get("connection")) == (200, "in-flight", "close")
            assert json.loads(answer)["count"] == 1
        assert srv.proc.wait(30) == 0, srv.log_text()
        srv.start()
        with httpx.Client(base_url=srv.url, timeout=30) as client:
            assert client.get("/v1/records/2").json() == {"key": 2, "value": 4.0}
