"""``make bench-failover``: measured RTO and RPO of a primary failure, against the guide's targets.

Each round starts a primary and two replicas (real ``omendb serve`` processes on loopback, authentication
on, replicas streaming with their own credentials), preloads records, runs a writer that records the
exact time every batch was acknowledged, and SIGKILLs the primary mid-load. Then the failover routine the
operator performs runs: probe the primary's ``/ready`` every ``--probe-interval`` seconds; once it has
failed for ``--failover-delay`` seconds, promote the most advanced replica (``POST /admin/promote``),
repoint the other (``POST /admin/follow``) and retry a write on the new primary until it is accepted.

- **RTO** = from the SIGKILL to the first write accepted by the new primary (detection + promotion).
- **RPO** = acknowledged writes missing on the new primary: records, and the loss window in seconds (from
  the newest surviving acknowledgement to the newest acknowledgement).

Both replication modes are measured: asynchronous (default) and synchronous (``synchronous_replicas = 1``).
The baseline, in the same run, is the guide's other recovery path: the killed primary restarted in place
(the pod-restart scenario: process start, WAL replay, first write accepted). Results go to the
``## Failover`` section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import bcrypt
import httpx

from omendb.bench import record_section
from omendb.cli import render_toml
from omendb.config import Config

HOST = "127.0.0.1"
ADMIN = ("admin", "bench-admin-pw")
REPLICATOR = ("replicator", "bench-replicator-pw")
GUIDE = {"Pod restart": ("< 2 minutes", "0"), "Node failure": ("< 5 minutes", "< 1 minute")}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


class Node:
    """One ``omendb serve`` process with its own data, WAL, ports and log."""

    def __init__(self, root: Path, name: str, auth: tuple[Path, Path], replication: dict[str, Any]) -> None:
        self.dir = root / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port, self.metrics_port = _free_port(), _free_port()
        users, credentials = auth
        config = Config.from_dict({
            "database": {"name": "bench", "data_dir": str(self.dir / "data"), "max_memory_mb": 1024},
            "wal": {"dir": str(self.dir / "wal")},
            "http": {"host": HOST, "port": self.port, "shutdown_grace_seconds": 5},
            "security": {"auth_enabled": True, "htpasswd_file": str(users),
                         "admin_users": [ADMIN[0], REPLICATOR[0]]},
            "monitoring": {"prometheus_port": self.metrics_port, "log_level": "warning"},
            "limits": {"memory_limit_mb": 1024},
            "replication": {"replica_id": name, "credentials_file": str(credentials), "poll_wait_ms": 1000,
                            **replication},
        })
        self.config_path = self.dir / "omendb.toml"
        self.config_path.write_text(render_toml(config))
        self.url = f"http://{HOST}:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Node:
        with open(self.dir / "server.log", "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "omendb.cli", "serve", "--config",
                                          str(self.config_path)], stdout=log, stderr=subprocess.STDOUT)
        return self

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.url} exited; see {self.dir / 'server.log'}")
            try:
                if httpx.get(f"{self.url}/ready", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"{self.url} not ready after {timeout}s; see {self.dir / 'server.log'}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def client(self, timeout: float = 10) -> httpx.Client:
        return httpx.Client(base_url=self.url, auth=ADMIN, timeout=timeout)


class Writer(threading.Thread):
    """Batches of fresh keys to one URL; every acknowledged batch is recorded with its time."""

    def __init__(self, url: str, batch: int) -> None:
        super().__init__(daemon=True)
        self.url, self.batch = url, batch
        self.acked: list[tuple[int, float]] = []  # (first key of the batch, monotonic time of the ack)
        self.stopping = threading.Event()

    def run(self) -> None:
        key = 1 << 40
        with httpx.Client(base_url=self.url, auth=ADMIN, timeout=30) as c:
            while not self.stopping.is_set():
                body = {"records": [{"key": k, "value": 1.0} for k in range(key, key + self.batch)]}
                try:
                    r = c.post("/v1/records", json=body)
                except httpx.HTTPError:
                    return
                if r.status_code != 200:
                    return
                self.acked.append((key, time.monotonic()))
                key += self.batch


def _lsn(node: Node) -> int:
    with node.client(2) as c:
        r = c.get("/admin/replication/info")
        r.raise_for_status()
        return int(r.json()["lsn"])


def failover_routine(primary: Node, replicas: list[Node], probe_interval: float, delay: float
                     ) -> tuple[Node, float]:
    """What the operator does: declare the primary failed after `delay` seconds of failed probes, promote
    the most advanced replica, repoint the others. Returns the new primary and when the failure was
    declared (monotonic)."""
    failing_since: float | None = None
    while True:
        try:
            ok = httpx.get(f"{primary.url}/ready", timeout=probe_interval).status_code == 200
        except httpx.HTTPError:
            ok = False
        now = time.monotonic()
        if ok:
            failing_since = None
        else:
            failing_since = failing_since or now
            if now - failing_since >= delay:
                break
        time.sleep(probe_interval)
    declared = time.monotonic()
    positions = {}
    for node in replicas:
        with contextlib.suppress(httpx.HTTPError):  # an unreachable replica is not a candidate
            positions[node.url] = _lsn(node)
    best = max(replicas, key=lambda n: positions.get(n.url, -1))
    with best.client() as c:
        c.post("/admin/promote").raise_for_status()
    for node in replicas:
        if node is not best:
            with node.client() as c:
                c.post("/admin/follow", json={"primary_url": best.url}).raise_for_status()
    return best, declared


def _first_write(node: Node, started: float, timeout: float = 60) -> float:
    """Seconds from `started` until `node` accepts a write."""
    with node.client(5) as c:
        while time.monotonic() - started < timeout:
            try:
                if c.post("/v1/records", json={"records": [{"key": -1, "value": 0.0}]}).status_code == 200:
                    return time.monotonic() - started
            except httpx.HTTPError:
                pass
            time.sleep(0.01)
    raise RuntimeError(f"{node.url} accepted no write within {timeout}s")


def _survivors(node: Node, acked: list[tuple[int, float]], batch: int) -> list[bool]:
    out: list[bool] = []
    with node.client(60) as c:
        for i in range(0, len(acked), 1000):
            keys = [k for k, _ in acked[i:i + 1000]]
            r = c.post("/v1/records/lookup", json={"keys": keys})
            r.raise_for_status()
            out.extend(rec["value"] is not None for rec in r.json()["records"])
    return out


def _preload(node: Node, records: int) -> None:
    with node.client(120) as c:
        for start in range(0, records, 50_000):
            body = {"records": [{"key": k, "value": k * 0.5} for k in range(start, min(records, start + 50_000))]}
            c.post("/v1/records", json=body).raise_for_status()


def one_round(root: Path, auth: tuple[Path, Path], sync: int, args: argparse.Namespace) -> dict[str, float]:
    replication = {"synchronous_replicas": sync, "synchronous_timeout_ms": 10_000}
    primary = Node(root, "p", auth, replication).start()
    nodes = [primary]
    try:
        primary.wait_ready()
        replicas = [Node(root, name, auth, {**replication, "role": "replica", "primary_url": primary.url})
                    for name in ("r1", "r2")]
        nodes += replicas
        for node in replicas:
            node.start()
        for node in replicas:
            node.wait_ready()
        _preload(primary, args.records)
        writer = Writer(primary.url, args.batch)
        writer.start()
        time.sleep(args.load_seconds)
        killed = time.monotonic()
        primary.kill()
        writer.stopping.set()
        writer.join(30)
        new, declared = failover_routine(primary, replicas, args.probe_interval, args.failover_delay)
        rto = _first_write(new, killed)
        survived = _survivors(new, writer.acked, args.batch)
        lost = [i for i, ok in enumerate(survived) if not ok]
        window = 0.0
        if lost:
            kept = [t for (_, t), ok in zip(writer.acked, survived, strict=True) if ok]
            window = writer.acked[-1][1] - (kept[-1] if kept else writer.acked[0][1])
        return {"rto": rto, "detection": declared - killed, "after_detection": rto - (declared - killed),
                "acked_records": len(writer.acked) * args.batch,
                "lost_records": len(lost) * args.batch, "loss_window": window,
                "write_rate": len(writer.acked) * args.batch / max(args.load_seconds, 1e-9)}
    finally:
        for node in nodes:
            node.kill()


def restart_round(root: Path, auth: tuple[Path, Path], args: argparse.Namespace) -> float:
    """Baseline: SIGKILL a loaded primary and restart it in place; seconds to its first accepted write."""
    node = Node(root, "restart", auth, {}).start()
    try:
        node.wait_ready()
        _preload(node, args.records)
        writer = Writer(node.url, args.batch)
        writer.start()
        time.sleep(args.load_seconds)
        killed = time.monotonic()
        node.kill()
        writer.stopping.set()
        writer.join(30)
        node.start()
        return _first_write(node, killed, timeout=300)
    finally:
        node.kill()


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    users, credentials = workdir / "users.htpasswd", workdir / "replicator.credentials"
    # `htpasswd -B` writes bcrypt with the $2y$ prefix.
    users.write_text("".join(f"{u}:$2y${bcrypt.hashpw(p.encode(), bcrypt.gensalt(rounds=5)).decode()[4:]}\n"
                             for u, p in (ADMIN, REPLICATOR)))
    credentials.write_text(f"{REPLICATOR[0]}:{REPLICATOR[1]}\n")
    auth = (users, credentials)
    results: dict[str, Any] = {"async": [], "sync": [], "restart": []}
    for i in range(args.rounds):
        for mode, sync in (("async", 0), ("sync", 1)):
            r = one_round(workdir / f"{mode}-{i}", auth, sync, args)
            print(f"round {i + 1} {mode}: RTO {r['rto']:.2f}s (detection {r['detection']:.2f}s), lost "
                  f"{r['lost_records']} of {r['acked_records']} acknowledged records "
                  f"(window {r['loss_window'] * 1000:.0f} ms)",
                  flush=True)
            results[mode].append(r)
        restart = restart_round(workdir / f"restart-{i}", auth, args)
        print(f"round {i + 1} restart in place: {restart:.2f}s", flush=True)
        results["restart"].append(restart)
    return results


def render(results: dict[str, Any], args: argparse.Namespace) -> str:
    def med(mode: str, key: str) -> float:
        return statistics.median(r[key] for r in results[mode])

    def worst(mode: str, key: str) -> float:
        return max(r[key] for r in results[mode])

    restart = statistics.median(results["restart"])
    lines = [
        "## Failover (`make bench-failover`)",
        "",
        f"A primary and two replicas on loopback (authentication on), {args.records:,} records preloaded, a "
        f"writer sending {args.batch}-record batches; the primary is SIGKILLed after {args.load_seconds:g}s "
        f"of load. The failover routine probes `/ready` every {args.probe_interval:g}s, declares the primary "
        f"failed after {args.failover_delay:g}s (the operator's configurable delay), promotes the most "
        f"advanced replica and repoints the other. RTO is from the SIGKILL to the first write the new "
        f"primary accepts; RPO counts acknowledged writes missing there. Baseline in the same run: the "
        f"killed primary restarted in place (pod restart). Median of {args.rounds} rounds "
        f"(worst in brackets); {os.cpu_count()} CPUs shared with other work.",
        "",
        "| scenario | measured RTO | measured RPO | guide target RTO | guide target RPO |",
        "|---|---|---|---|---|",
        f"| failover, asynchronous replication | {med('async', 'rto'):.2f}s ({worst('async', 'rto'):.2f}s) | "
        f"{med('async', 'lost_records'):.0f} records, {med('async', 'loss_window') * 1000:.0f} ms "
        f"({worst('async', 'lost_records'):.0f} records, {worst('async', 'loss_window') * 1000:.0f} ms) | "
        f"{GUIDE['Node failure'][0]} | {GUIDE['Node failure'][1]} |",
        f"| failover, synchronous (`synchronous_replicas = 1`) | {med('sync', 'rto'):.2f}s "
        f"({worst('sync', 'rto'):.2f}s) | {worst('sync', 'lost_records'):.0f} records (worst) | "
        f"{GUIDE['Node failure'][0]} | 0 |",
        f"| restart in place (baseline, pod restart) | {restart:.2f}s ({max(results['restart']):.2f}s) | 0 "
        f"(fsync on write) | {GUIDE['Pod restart'][0]} | {GUIDE['Pod restart'][1]} |",
        "",
        f"Failover RTO / restart-in-place RTO: {med('async', 'rto') / restart:.2f} (async), "
        f"{med('sync', 'rto') / restart:.2f} (sync). Of the failover RTO, detection took "
        f"{med('async', 'detection'):.2f}s (the configured {args.failover_delay:g}s delay plus probe "
        f"granularity); promotion, repointing and the first write took {med('async', 'after_detection'):.2f}s "
        f"async, {med('sync', 'after_detection'):.2f}s sync (a synchronous primary first waits for the "
        f"repointed replica to follow it). Write throughput during "
        f"the load: {med('async', 'write_rate'):,.0f} records/s async, {med('sync', 'write_rate'):,.0f} "
        f"records/s sync (the price of waiting for a replica's acknowledgement).",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--records", type=int, default=200_000, help="preloaded before the load")
    parser.add_argument("--batch", type=int, default=50, help="records per write during the load")
    parser.add_argument("--load-seconds", type=float, default=3.0)
    parser.add_argument("--probe-interval", type=float, default=0.5)
    parser.add_argument("--failover-delay", type=float, default=2.0,
                        help="seconds the primary must fail its probes before the routine promotes")
    parser.add_argument("--workdir", default=os.environ.get("TMPDIR", "/tmp"))
    parser.add_argument("--no-record", action="store_true", help="print only; do not update docs/benchmarks.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="omendb-bench-failover-", dir=args.workdir) as tmp:
        results = run(args, Path(tmp))
    section = render(results, args)
    print(section)
    if not args.no_record:
        docs = Path(__file__).resolve().parents[3] / "docs" / "benchmarks.md"
        record_section("Failover", section, docs)
        print(f"recorded in {docs}")


if __name__ == "__main__":
    main()
