"""Idle and slow clients against a real server, plain HTTP and TLS: they are timed out or evicted, and
never keep authenticated requests out (issue 14, item 2)."""

from __future__ import annotations

import base64
import contextlib
import re
import resource
import selectors
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.server.certs import CertificateAuthority
from tests.server.harness import HOST, Server, htpasswd_bcrypt

USER, PASSWORD = "alice", "alice-slow-pw"
# Every connection timeout of the test server. Eviction needs more than MAX_CONNECTIONS connections open at
# once, so all of them must open before the first ones time out: 2 s was too short on a loaded machine
# (with TLS each handshake costs both sides CPU; the 325 of them took 0.9 s at load 4, and the eviction check
# failed once at load 9-13). 4 s keeps the timeouts' checks and doubles that margin.
TIMEOUT_MS = 4000
SLACK = 8.0  # seconds beyond a timeout within which the close must be seen (a loaded machine)
IDLE_SOCKETS, SLOW_HEADER_SOCKETS, MAX_CONNECTIONS = 250, 200, 200
ANSWER_BOUND = 1.0  # the issue's bound for a legitimate request


class Site:
    def __init__(self, server: Server, context: ssl.SSLContext | None) -> None:
        self.server, self.context = server, context

    @property
    def verify(self) -> ssl.SSLContext | bool:
        return self.context if self.context is not None else True

    def metric(self, reason: str) -> float:
        text = httpx.get(self.server.metrics_url, timeout=10).text
        match = re.search(rf'^omendb_http_connections_closed_total{{reason="{reason}"}} (\S+)$', text, re.M)
        assert match, text
        return float(match.group(1))

    def timed_get(self) -> tuple[int, float]:
        """An authenticated read on a fresh connection: its status and seconds from connect to answer."""
        with httpx.Client(base_url=self.server.url, verify=self.verify, auth=(USER, PASSWORD),
                          timeout=30) as client:
            started = time.monotonic()
            r = client.get("/v1/records/1")
            return r.status_code, time.monotonic() - started


@pytest.fixture(scope="module", params=["http", "https"])
def site(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = min(hard, 4096) if hard != resource.RLIM_INFINITY else 4096
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))  # the server inherits it too
    workdir: Path = tmp_path_factory.mktemp(f"slow-{request.param}")
    users = workdir / "users.htpasswd"
    users.write_text(htpasswd_bcrypt(USER, PASSWORD) + "\n")
    security: dict[str, object] = {"auth_enabled": True, "htpasswd_file": str(users)}
    context = None
    if request.param == "https":
        ca = CertificateAuthority.create()
        cert, key = workdir / "tls.crt", workdir / "tls.key"
        ca.issue(cert, key)
        context = ssl.create_default_context(cafile=str(ca.write_ca(workdir / "ca.crt")))
        security |= {"tls_enabled": True, "tls_cert_file": str(cert), "tls_key_file": str(key)}
    server = Server(workdir / "srv", {
        "security": security,
        "http": {"first_request_timeout_ms": TIMEOUT_MS, "header_timeout_ms": TIMEOUT_MS,
                 "body_timeout_ms": TIMEOUT_MS, "idle_timeout_ms": TIMEOUT_MS},
        "limits": {"max_connections": MAX_CONNECTIONS},
    })
    with server:
        server.start(verify=context if context is not None else True)
        r = httpx.post(f"{server.url}/v1/records", json={"records": [{"key": 1, "value": 2.0}]},
                       auth=(USER, PASSWORD), verify=context if context is not None else True)
        assert r.status_code == 200, r.text
        yield Site(server, context)


class Raw:
    """A client socket driven by hand: it sends what the test says and records what comes back."""

    def __init__(self, site: Site, handshake: bool = True) -> None:
        sock = socket.create_connection((HOST, site.server.port), timeout=10)
        if site.context is not None and handshake:
            sock = site.context.wrap_socket(sock, server_hostname="localhost")
        sock.setblocking(False)
        self.sock = sock
        self.reply = b""
        self.opened = time.monotonic()
        self.closed_at: float | None = None

    def send(self, data: bytes) -> None:
        if self.closed_at is not None:
            return
        try:
            self.sock.send(data)
        except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
            pass
        except OSError:
            self._closed()

    def poll(self) -> None:
        """Read whatever arrived; notice the server's close."""
        for _ in range(100):
            if self.closed_at is not None:
                return
            try:
                chunk = self.sock.recv(65536)
            except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                return
            except OSError:  # reset, or a TLS connection cut without close_notify
                self._closed()
                return
            if not chunk:
                self._closed()
                return
            self.reply += chunk

    def _closed(self) -> None:
        self.closed_at = time.monotonic()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


def watch(clients: list[Raw], until: float, every: float = 0.5, dribble: dict[Raw, bytes] | None = None,
          site: Site | None = None, answers: list[tuple[int, float]] | None = None) -> None:
    """Until every client is closed (or ``until``): feed each client in ``dribble`` one more byte every
    ``every`` seconds, and time one legitimate request per round when ``answers`` is given."""
    selector = selectors.DefaultSelector()
    for c in clients:
        selector.register(c.sock, selectors.EVENT_READ, c)
    next_drip = time.monotonic()
    try:
        for _ in range(100_000):  # bounded in count as well as in time
            now = time.monotonic()
            if now >= until or all(c.closed_at is not None for c in clients):
                return
            if now >= next_drip:
                for c, data in (dribble or {}).items():
                    c.send(data)
                next_drip = now + every
                if answers is not None and site is not None and len(answers) < 60:
                    answers.append(site.timed_get())
            for key, _ in selector.select(timeout=0.05):
                key.data.poll()
                if key.data.closed_at is not None:
                    selector.unregister(key.fileobj)  # a closed socket stays readable: stop watching it
    finally:
        selector.close()


def test_idle_and_slow_header_clients_do_not_keep_requests_out(site: Site) -> None:
    """The issue's test: with max_connections = 200, 250 idle and 200 slow-header connections, each
    authenticated request is answered within 1 s, from the moment they are all open until they are gone."""
    closed_before = {r: site.metric(r) for r in ("first_request_timeout", "header_timeout", "evicted")}
    clients: list[Raw] = []
    answers: list[tuple[int, float]] = []
    try:
        # Idle: connect and send nothing. With TLS, half of them never even start the handshake.
        for i in range(IDLE_SOCKETS):
            clients.append(Raw(site, handshake=i % 2 == 0))
        slow = []
        for _ in range(SLOW_HEADER_SOCKETS):
            c = Raw(site)
            c.send(b"GET /v1/records/1 HTTP/1.1\r\nHost: x\r\n")
            slow.append(c)
        clients += slow
        opened = time.monotonic()
        # Answered at once, before any timeout could act: idle connections give way to new ones.
        answers += [site.timed_get() for _ in range(5)]
        # One more header byte per slow connection every half second, and a request every round.
        watch(clients, until=opened + TIMEOUT_MS / 1000 + SLACK, dribble={c: b"X" for c in slow},
              site=site, answers=answers)
        answers += [site.timed_get() for _ in range(5)]
        assert all(status == 200 for status, _ in answers), answers
        slowest = max(seconds for _, seconds in answers)
        assert slowest < ANSWER_BOUND, f"a legitimate request took {slowest:.3f}s: {answers}"
        still_open = [c for c in clients if c.closed_at is None]
        assert not still_open, f"{len(still_open)} of {len(clients)} idle or slow connections still open " \
                               f"{SLACK}s after the {TIMEOUT_MS} ms timeouts"
    finally:
        for c in clients:
            c.close()
    # Slow headers that were not evicted were told why.
    timed_out = [c for c in slow if c.reply]
    assert timed_out, "no slow-header connection lived to its header timeout"
    assert all(c.reply.startswith(b"HTTP/1.1 408") and f"header_timeout_ms = {TIMEOUT_MS}".encode() in c.reply
               for c in timed_out), timed_out[0].reply
    closed = {r: site.metric(r) - closed_before[r] for r in closed_before}
    assert closed["header_timeout"] >= len(timed_out)
    assert closed["evicted"] > 0, closed
    # Every connection that reached the server was evicted or timed out (TLS sockets that never
    # handshook are dropped by the handshake timeout before they are connections).
    expected = len(clients) - (IDLE_SOCKETS // 2 if site.context is not None else 0)
    assert sum(closed.values()) >= expected, closed


def _slow_body_head(site: Site) -> bytes:
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    return (f"POST /v1/records/lookup HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {token}\r\n"
            "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n").encode()


def test_each_timeout_closes_its_connection(site: Site) -> None:
    closed_before = {r: site.metric(r) for r in ("first_request_timeout", "header_timeout", "body_timeout",
                                                 "idle_timeout")}
    clients: list[Raw] = []
    try:
        idle = Raw(site)
        slow_header = Raw(site)
        slow_header.send(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        slow_body = Raw(site)
        slow_body.send(_slow_body_head(site))
        keep_alive, crlf = Raw(site), Raw(site)  # answered once, then idle (one of them sending blank lines)
        for c in (keep_alive, crlf):
            c.send(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        clients = [idle, slow_header, slow_body, keep_alive, crlf]
        if site.context is not None:
            clients.append(Raw(site, handshake=False))  # never says hello
        started = time.monotonic()
        watch(clients, until=started + TIMEOUT_MS / 1000 + SLACK,
              dribble={slow_header: b"X", slow_body: b"1", crlf: b"\r\n"})
        for c in clients:
            assert c.closed_at is not None, f"connection still open: {c.reply!r}"
            # Closed by its timeout, not at once (a generous lower bound: timers may fire a little early).
            assert c.closed_at - c.opened >= TIMEOUT_MS / 1000 * 0.75, c.reply
        assert idle.reply == b""
        assert slow_header.reply.startswith(b"HTTP/1.1 408") and b'"header_timeout"' in slow_header.reply
        assert slow_body.reply.startswith(b"HTTP/1.1 408") and b'"body_timeout"' in slow_body.reply
        assert f"body_timeout_ms = {TIMEOUT_MS}".encode() in slow_body.reply
        for c in (keep_alive, crlf):
            assert c.reply.startswith(b"HTTP/1.1 200") and c.reply.count(b"HTTP/1.1") == 1, c.reply
    finally:
        for c in clients:
            c.close()
    closed = {r: site.metric(r) - closed_before[r] for r in closed_before}
    # Under TLS the client that never says hello is a silent connection too, and counted as one.
    silent = 2 if site.context is not None else 1
    assert closed == {"first_request_timeout": silent, "header_timeout": 1, "body_timeout": 1, "idle_timeout": 2}
    # The access log says what the client got.
    line = site.server.wait_for_log(lambda r: r.get("path") == "/v1/records/lookup")
    assert line["status"] == 408, line
    # The server still answers, and the cut-off body left nothing behind.
    assert site.timed_get()[0] == 200
