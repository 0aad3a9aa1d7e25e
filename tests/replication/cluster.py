"""A small replicated OmenDB cluster of real ``omendb serve`` processes on loopback, for the replication
tests and the failover benchmark: authentication on, replicas following with their own credentials, a
writer that records exactly which writes were acknowledged, and the failover routine the operator runs
(promote the most advanced replica, repoint the others)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.server.harness import Server, htpasswd_bcrypt

ADMIN = ("admin", "admin-secret-1")
REPLICATOR = ("replicator", "replicator-secret-1")


def write_users(directory: Path) -> tuple[Path, Path]:
    """An htpasswd file (admin and replicator, both admins) and the replicas' credentials file."""
    directory.mkdir(parents=True, exist_ok=True)
    users = directory / "users.htpasswd"
    users.write_text(f"{htpasswd_bcrypt(*ADMIN)}\n{htpasswd_bcrypt(*REPLICATOR)}\n")
    credentials = directory / "replicator.credentials"
    credentials.write_text(f"{REPLICATOR[0]}:{REPLICATOR[1]}\n")
    return users, credentials


class Cluster:
    """Nodes under one directory; every node shares the users and runs with authentication on."""

    def __init__(self, root: Path, replication: dict[str, Any] | None = None,
                 sections: dict[str, dict[str, Any]] | None = None) -> None:
        self.root = root
        self.users, self.credentials = write_users(root / "auth")
        self.replication = replication or {}
        self.sections = sections or {}
        self.nodes: dict[str, Server] = {}

    def replicas(self, primary: Server, *names: str) -> list[Server]:
        """Start replicas of `primary` side by side (each start is mostly process and engine start-up)."""
        servers = [self.node(name, primary, wait=False) for name in names]
        for server in servers:
            server.wait_ready()
        return servers

    def node(self, name: str, primary: Server | None = None, wait: bool = True, **replication: Any) -> Server:
        """Start (or restart, keeping its data) node `name`: a primary, or a replica of `primary`."""
        old = self.nodes.get(name)
        if old is not None and old.proc is not None and old.proc.poll() is None:
            raise AssertionError(f"node {name} is still running")
        # Every node holds the replication credentials, as every pod does: a primary may become a replica.
        settings: dict[str, Any] = {"poll_wait_ms": 500, "replica_id": name, "credentials_file":
                                    str(self.credentials), **self.replication, **replication}
        if primary is not None:
            settings.update(role="replica", primary_url=primary.url)
        sections = {**self.sections,
                    "security": {"auth_enabled": True, "htpasswd_file": str(self.users),
                                 "admin_users": [ADMIN[0], REPLICATOR[0]]},
                    "replication": settings}
        server = Server(self.root / name, sections)
        self.nodes[name] = server
        return server.start(wait_ready=wait)

    def stop_all(self) -> None:
        for server in self.nodes.values():
            if server.proc is not None and server.proc.poll() is None:
                server.stop(9, timeout=10)


def api(server: Server, timeout: float = 30) -> httpx.Client:
    return httpx.Client(base_url=server.url, auth=ADMIN, timeout=timeout)


def info(server: Server) -> dict[str, Any]:
    with api(server, 5) as c:
        r = c.get("/admin/replication/info")
        r.raise_for_status()
        result: dict[str, Any] = r.json()
        return result


def lookup(server: Server, keys: list[int]) -> list[float | None]:
    out: list[float | None] = []
    with api(server) as c:
        for i in range(0, len(keys), 5000):
            r = c.post("/v1/records/lookup", json={"keys": keys[i:i + 5000]})
            r.raise_for_status()
            out.extend(item["value"] for item in r.json()["records"])
    return out


def wait_until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
            if last:
                return last
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def caught_up(replica: Server, primary: Server, timeout: float = 30) -> None:
    def same() -> bool:
        mine, theirs = info(replica), info(primary)
        return bool(mine["lsn"] == theirs["lsn"] and mine["term_history"] == theirs["term_history"])

    wait_until(same, timeout, f"{replica.url} to reach the LSN and timeline of {primary.url}")


@dataclass
class Writer:
    """Writes batches of fresh keys to one URL from a thread, recording each acknowledged batch and when."""

    url: str
    batch: int = 20
    first_key: int = 0
    acked: list[tuple[list[int], float]] = field(default_factory=list)  # (keys, monotonic ack time)
    failures: list[str] = field(default_factory=list)
    stop_on_error: bool = True

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._next = self.first_key

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, auth=ADMIN, timeout=10) as c:
            while not self._stop.is_set():
                keys = list(range(self._next, self._next + self.batch))
                self._next += self.batch
                try:
                    r = c.post("/v1/records", json={"records": [{"key": k, "value": k * 0.5} for k in keys]})
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))
                    if self.stop_on_error:
                        return
                    continue
                if r.status_code == 200:
                    self.acked.append((keys, time.monotonic()))
                else:
                    self.failures.append(f"{r.status_code} {r.text}")
                    if self.stop_on_error:
                        return

    def start(self) -> Writer:
        self._thread.start()
        return self

    def stop(self) -> Writer:
        self._stop.set()
        self._thread.join(30)
        return self

    @property
    def keys(self) -> list[int]:
        return [k for keys, _ in self.acked for k in keys]


def failover(candidates: list[Server]) -> tuple[Server, list[Server], dict[str, Any]]:
    """The failover routine the operator performs: promote the most advanced replica, repoint the rest."""
    positions = {}
    for server in candidates:
        try:
            positions[server.url] = info(server)["lsn"]
        except httpx.HTTPError:
            continue
    if not positions:
        raise AssertionError("no replica answered")
    best = max(candidates, key=lambda s: positions.get(s.url, -1))
    with api(best) as c:
        r = c.post("/admin/promote")
        r.raise_for_status()
        promoted: dict[str, Any] = r.json()
    others = [s for s in candidates if s is not best]
    for server in others:
        with api(server) as c:
            c.post("/admin/follow", json={"primary_url": best.url}).raise_for_status()
    return best, others, promoted
