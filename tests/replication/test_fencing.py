"""Self-fencing (server/fencing.py): a primary that reaches neither a replica nor the API server's address
for [replication] fence_after_seconds refuses writes with 503 `isolated`, and accepts again as soon as either
is back. Real processes: the replica is frozen with SIGSTOP (it stops polling, as behind a partition), and
the "API server" is a TCP listener of the test's own that it closes and opens."""

from __future__ import annotations

import signal
import socket
import threading
import time

import httpx
import pytest

from tests.ports import free_port
from tests.replication.cluster import ADMIN, Cluster, caught_up, wait_until

FENCE_AFTER = 2.0


class Listener:
    """A TCP port that accepts connections while open (the API server being reachable)."""

    def __init__(self) -> None:
        self.sock: socket.socket | None = None
        self.port = free_port()

    def open(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", self.port), reuse_port=False)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def _thaw_and_stop(cluster: Cluster) -> None:
    """Stop every node, thawing the ones a test froze with SIGSTOP first."""
    for server in cluster.nodes.values():
        if server.proc is not None and server.proc.poll() is None:
            server.proc.send_signal(signal.SIGCONT)
    cluster.stop_all()


def _write(url: str, key: int) -> httpx.Response:
    return httpx.post(f"{url}/v1/records", json={"records": [{"key": key, "value": 1.0}]}, auth=ADMIN, timeout=10)


def test_a_primary_cut_off_from_replicas_and_api_refuses_writes_until_either_is_back(tmp_path):
    api = Listener()
    api.open()
    cluster = Cluster(tmp_path, replication={"fence_after_seconds": FENCE_AFTER,
                                             "fence_probe_address": f"127.0.0.1:{api.port}"})
    try:
        p = cluster.node("p")
        (r,) = cluster.replicas(p, "r")
        assert _write(p.url, 1).status_code == 200
        caught_up(r, p)
        assert r.proc is not None

        # The replica gone but the API reachable (e.g. the replica restarting): no fence.
        r.proc.send_signal(signal.SIGSTOP)
        time.sleep(FENCE_AFTER + 2.5)
        assert _write(p.url, 2).status_code == 200

        # Both gone: fenced within fence_after_seconds (plus a probe period), with the reason.
        api.close()
        cut_at = time.monotonic()
        refused = wait_until(lambda: (resp := _write(p.url, 3)).status_code == 503 and resp, 15, "the fence")
        assert time.monotonic() - cut_at <= FENCE_AFTER + 4
        assert refused.json()["error"]["code"] == "isolated", refused.text
        assert "reached by no replica and not by the Kubernetes API" in refused.json()["error"]["message"]
        stats = httpx.get(f"{p.url}/v1/stats", auth=ADMIN, timeout=10).json()
        assert "isolated" in stats
        assert httpx.get(f"{p.url}/v1/records/2", auth=ADMIN, timeout=10).status_code == 200  # reads go on

        # The API back: writes resume.
        api.open()
        wait_until(lambda: _write(p.url, 4).status_code == 200, 10, "the fence to come down (API back)")

        # Fenced again, then the replica back: writes resume too.
        api.close()
        wait_until(lambda: _write(p.url, 5).status_code == 503, 15, "the fence again")
        r.proc.send_signal(signal.SIGCONT)
        wait_until(lambda: _write(p.url, 6).status_code == 200, 15, "the fence to come down (replica back)")
        caught_up(r, p)
    finally:
        _thaw_and_stop(cluster)
        api.close()


class Heartbeat:
    """The operator's heartbeat (GET /admin/replication/heartbeat every 0.5 s) while switched on."""

    def __init__(self, url: str) -> None:
        self.url, self.on = url, threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            if self.on.is_set():
                r = httpx.get(f"{self.url}/admin/replication/heartbeat", auth=ADMIN, timeout=5)
                assert r.status_code == 200 and r.json()["role"] == "primary", r.text

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


def test_once_the_operator_heartbeats_only_a_replica_or_the_heartbeat_lifts_the_fence(tmp_path):
    """With the operator's heartbeat the API probe no longer counts: a primary the operator still reaches is
    not fenced even without the API, and a fenced one stays fenced when only the API comes back (after a
    failover the heartbeat goes to the new primary, so a healed old primary must not take writes again)."""
    api = Listener()  # closed: the API server's address does not answer
    cluster = Cluster(tmp_path, replication={"fence_after_seconds": FENCE_AFTER,
                                             "fence_probe_address": f"127.0.0.1:{api.port}"})
    beat: Heartbeat | None = None
    try:
        p = cluster.node("p")
        (r,) = cluster.replicas(p, "r")
        assert _write(p.url, 1).status_code == 200
        caught_up(r, p)
        assert r.proc is not None
        beat = Heartbeat(p.url)
        beat.on.set()
        time.sleep(1.0)

        # Replica gone, API unreachable, but the operator's heartbeat arrives: not cut off.
        r.proc.send_signal(signal.SIGSTOP)
        time.sleep(FENCE_AFTER + 2.5)
        assert _write(p.url, 2).status_code == 200

        # The heartbeat stops too: fenced, naming it.
        beat.on.clear()
        refused = wait_until(lambda: (resp := _write(p.url, 3)).status_code == 503 and resp, 15, "the fence")
        assert "not by the operator's heartbeat" in refused.json()["error"]["message"], refused.text

        # The API server answering again does not lift it any more.
        api.open()
        time.sleep(FENCE_AFTER + 2)
        assert _write(p.url, 4).status_code == 503

        # The heartbeat back: writes resume.
        beat.on.set()
        wait_until(lambda: _write(p.url, 5).status_code == 200, 10, "the fence to come down (heartbeat back)")
        r.proc.send_signal(signal.SIGCONT)
        caught_up(r, p)
    finally:
        if beat is not None:
            beat.close()
        _thaw_and_stop(cluster)
        api.close()


def test_a_replica_reports_how_long_its_primary_has_been_silent(tmp_path):
    """/v1/stats of a replica: the primary's contact age and its silence beyond one long poll, which the
    operator reads to tell a dead primary from one only it cannot reach."""
    cluster = Cluster(tmp_path)
    try:
        p = cluster.node("p")
        (r,) = cluster.replicas(p, "r")
        caught_up(r, p)
        rep = httpx.get(f"{r.url}/v1/stats", auth=ADMIN, timeout=10).json()["replication"]
        assert rep["primary_silent_seconds"] < 1.0 and rep["primary_contact_age_seconds"] is not None, rep
        assert p.proc is not None
        p.proc.send_signal(signal.SIGSTOP)
        try:
            silent = wait_until(lambda: (x := httpx.get(f"{r.url}/v1/stats", auth=ADMIN, timeout=10).json()[
                "replication"])["primary_silent_seconds"] >= 2.0 and x, 20, "the replica to report silence")
            # silence = contact age less one long poll ([replication] poll_wait_ms)
            assert silent["primary_contact_age_seconds"] > silent["primary_silent_seconds"] + 0.1, silent
        finally:
            p.proc.send_signal(signal.SIGCONT)
    finally:
        _thaw_and_stop(cluster)


@pytest.mark.parametrize("replication", [
    {"fence_after_seconds": 0, "fence_probe_address": "127.0.0.1:9"},  # switched off (nothing listens on 9)
    {"fence_after_seconds": FENCE_AFTER, "fence_probe_address": ""},  # outside Kubernetes: no address
], ids=["off", "outside-kubernetes"])
def test_a_primary_without_fencing_keeps_writing_when_cut_off(tmp_path, monkeypatch, replication):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    cluster = Cluster(tmp_path, replication=replication)
    try:
        p = cluster.node("p")
        (r,) = cluster.replicas(p, "r")
        assert r.proc is not None
        r.proc.send_signal(signal.SIGSTOP)
        time.sleep(FENCE_AFTER + 3)
        assert _write(p.url, 1).status_code == 200
    finally:
        _thaw_and_stop(cluster)


def test_promoting_a_replica_does_not_wait_for_a_frozen_primarys_answer(tmp_path):
    """A partitioned primary never answers the replica's long poll, which then hangs until its read timeout
    (poll_wait_ms + 30 s). Promotion stops the follower without waiting for it (its answer would be dropped),
    so a failover is not 30 s longer under a partition than after a crash."""
    cluster = Cluster(tmp_path)
    try:
        p = cluster.node("p")
        (r,) = cluster.replicas(p, "r")
        assert _write(p.url, 1).status_code == 200
        caught_up(r, p)
        assert p.proc is not None
        p.proc.send_signal(signal.SIGSTOP)
        time.sleep(1.5)  # the replica's next long poll is on its way to the frozen primary
        started = time.monotonic()
        promoted = httpx.post(f"{r.url}/admin/promote", auth=ADMIN, timeout=60)
        took = time.monotonic() - started
        assert promoted.status_code == 200 and promoted.json()["promoted"], promoted.text
        assert took < 10, f"promotion waited {took:.1f}s for the frozen primary"
        assert _write(r.url, 2).status_code == 200
        assert httpx.get(f"{r.url}/v1/records/1", auth=ADMIN, timeout=10).status_code == 200
    finally:
        _thaw_and_stop(cluster)
