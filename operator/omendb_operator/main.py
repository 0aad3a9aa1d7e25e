"""``omendb-operator``: run the operator.

Configuration comes from the environment (see docs/operator.md, "Running the operator"):

- ``OMENDB_OPERATOR_NAMESPACES``: comma-separated namespaces to watch; empty = all namespaces.
- ``OMENDB_OPERATOR_RESYNC_SECONDS``: how often every OmenDB is reconciled even without events (drift,
  certificate renewal, backup status); default 300.
- ``OMENDB_OPERATOR_PORT``: the port of /healthz, /readyz and /metrics; default 8080.
- ``OMENDB_OPERATOR_WORKERS``: reconcile threads; default 2.
- ``OMENDB_OPERATOR_PEERING``: the kopf peering object shared by replicas; default ``omendb-operator``;
  ``none`` runs standalone. ``OMENDB_OPERATOR_PRIORITY``: this replica's priority (default random).
- ``OMENDB_OPERATOR_CLUSTER_DOMAIN``: for certificate names; default ``cluster.local``.
- ``OMENDB_OPERATOR_NAMESPACE``: the operator's own namespace (the Deployment sets it from the downward API),
  which NetworkPolicies admit; default: the service account's namespace file, else unknown.
- ``OMENDB_OPERATOR_LOG_FORMAT``: ``json`` (default) or ``text``; ``OMENDB_OPERATOR_LOG_LEVEL``.

Each has a command-line flag that wins over the variable (``--log-level debug`` over
``OMENDB_OPERATOR_LOG_LEVEL``): the Helm chart's ``extraArgs`` pass them.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import logging
import os
import random
import sys
import threading
from collections.abc import Mapping

import kopf
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from omendb_operator import labels as L
from omendb_operator.controller import handlers, metrics
from omendb_operator.controller.heartbeat import Heartbeat
from omendb_operator.controller.kube import Kube
from omendb_operator.controller.peering import PEERING_API, live_higher_peers
from omendb_operator.controller.reconcile import Reconciler
from omendb_operator.controller.workqueue import WorkQueue

log = logging.getLogger("omendb_operator")


@dataclasses.dataclass(frozen=True)
class Settings:
    namespaces: tuple[str, ...] = ()
    resync_seconds: float = 300.0
    port: int = 8080
    workers: int = 2
    peering: str | None = "omendb-operator"
    priority: int = 0
    cluster_domain: str = "cluster.local"
    operator_namespace: str | None = None
    log_format: str = "json"
    log_level: str = "info"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        def number(key: str, default: float, kind: type = float) -> float:
            raw = env.get(key, "").strip()
            if not raw:
                return default
            try:
                value = kind(raw)
            except ValueError:
                raise SystemExit(f"{key}={raw!r} is not a number") from None
            if value <= 0:
                raise SystemExit(f"{key}={raw!r} must be greater than 0")
            return value

        watched = env.get("OMENDB_OPERATOR_NAMESPACES", "").split(",")
        namespaces = tuple(n.strip() for n in watched if n.strip())
        peering = env.get("OMENDB_OPERATOR_PEERING", "omendb-operator").strip()
        log_format = env.get("OMENDB_OPERATOR_LOG_FORMAT", "json").strip().lower()
        if log_format not in ("json", "text"):
            raise SystemExit(f"OMENDB_OPERATOR_LOG_FORMAT={log_format!r} must be json or text")
        priority_raw = env.get("OMENDB_OPERATOR_PRIORITY", "").strip()
        try:
            # Distinct priorities: kopf pauses a replica only for a peer of *higher* priority.
            priority = int(priority_raw) if priority_raw else random.randint(1, 1_000_000)
        except ValueError:
            raise SystemExit(f"OMENDB_OPERATOR_PRIORITY={priority_raw!r} is not an integer") from None
        return cls(
            namespaces=namespaces,
            resync_seconds=number("OMENDB_OPERATOR_RESYNC_SECONDS", 300.0),
            port=int(number("OMENDB_OPERATOR_PORT", 8080, int)),
            workers=int(number("OMENDB_OPERATOR_WORKERS", 2, int)),
            peering=None if peering.lower() in ("", "none", "standalone") else peering,
            priority=priority,
            cluster_domain=env.get("OMENDB_OPERATOR_CLUSTER_DOMAIN", "").strip() or "cluster.local",
            operator_namespace=env.get("OMENDB_OPERATOR_NAMESPACE", "").strip() or _service_account_namespace(),
            log_format=log_format,
            log_level=env.get("OMENDB_OPERATOR_LOG_LEVEL", "info").strip().lower() or "info",
        )


SERVICE_ACCOUNT_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


def _service_account_namespace() -> str | None:
    try:
        with open(SERVICE_ACCOUNT_NAMESPACE) as f:
            return f.read().strip() or None
    except OSError:  # not in a pod (a developer's shell, the tests): unknown
        return None


class Operator:
    def __init__(self, settings: Settings, kube: Kube | None = None) -> None:
        self.settings = settings
        self.kube = kube or Kube()
        self.queue = WorkQueue(lambda key: self._reconcile(key), workers=settings.workers)
        self.heartbeat = Heartbeat(self.queue.add)
        self.reconciler = Reconciler(self.kube, settings.cluster_domain, operator_namespace=settings.operator_namespace,
                                     requeue=lambda ns, name, delay: self.queue.add_after((ns, name), delay),
                                     heartbeat=self.heartbeat)
        self.identity = f"omendb-operator@{os.environ.get('POD_NAME') or os.uname().nodename}/{os.getpid()}"
        self.ready = threading.Event()

    def _reconcile(self, key: tuple[str, str]) -> None:
        result = self.reconciler.reconcile(*key)
        # A resync that changes nothing is the common case; keep it out of the info log.
        log.log(logging.DEBUG if result == "unchanged" else logging.INFO, "reconciled %s/%s: %s",
                key[0], key[1], result)

    def active(self) -> bool:
        """False while a live peer with a higher priority exists (then kopf is paused too)."""
        if not self.settings.peering:
            return True
        objs = []
        if not self.settings.namespaces:
            if self.kube.has_kind(PEERING_API, "ClusterKopfPeering"):
                objs.append(self.kube.get(PEERING_API, "ClusterKopfPeering", self.settings.peering, None))
        elif self.kube.has_kind(PEERING_API, "KopfPeering"):
            objs += [self.kube.get(PEERING_API, "KopfPeering", self.settings.peering, ns)
                     for ns in self.settings.namespaces]
        now = dt.datetime.now(dt.UTC)
        return not any(obj and live_higher_peers(obj.get("status") or {}, self.identity,
                                                 self.settings.priority, now) for obj in objs)

    def resync_once(self) -> int:
        if not self.active():
            metrics.LEADER.set(0)
            return 0
        metrics.LEADER.set(1)
        items = []
        for ns in self.settings.namespaces or (None,):
            items += self.kube.list(L.API_VERSION, L.KIND, namespace=ns)
        metrics.MANAGED.set(len(items))
        for item in items:
            self.queue.add((item["metadata"]["namespace"], item["metadata"]["name"]))
        return len(items)

    async def resync_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.resync_seconds)
            try:
                await asyncio.to_thread(self.resync_once)
            except Exception:  # noqa: BLE001 - the next round tries again
                log.exception("periodic resync failed")

    async def serve_probes(self) -> web.AppRunner:
        async def healthz(_: web.Request) -> web.Response:
            return web.Response(text="ok\n")

        async def readyz(_: web.Request) -> web.Response:
            if self.ready.is_set():
                return web.Response(text="ready\n")
            return web.Response(status=503, text="not ready: watches are starting\n")

        async def metrics_view(_: web.Request) -> web.Response:
            return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

        app = web.Application()
        app.add_routes([web.get("/healthz", healthz), web.get("/readyz", readyz),
                        web.get("/metrics", metrics_view)])
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "0.0.0.0", self.settings.port).start()
        return runner

    async def run(self) -> None:
        handlers.attach(self.queue)
        self.heartbeat.start()
        runner = await self.serve_probes()
        ready_flag: asyncio.Event = asyncio.Event()

        async def mark_ready() -> None:
            await ready_flag.wait()
            self.ready.set()
            log.info("operator ready", extra={"identity": self.identity, "priority": self.settings.priority,
                                              "namespaces": list(self.settings.namespaces) or "all"})

        tasks = [asyncio.create_task(mark_ready()), asyncio.create_task(self.resync_loop())]
        try:
            await kopf.operator(
                clusterwide=not self.settings.namespaces,
                namespaces=list(self.settings.namespaces),
                standalone=self.settings.peering is None,
                peering_name=self.settings.peering,
                priority=self.settings.priority,
                identity=self.identity,  # type: ignore[arg-type]  # kopf types it as a NewType of str
                ready_flag=ready_flag,
            )
        finally:
            for task in tasks:
                task.cancel()
            # Graceful: finish the reconciles in flight, then stop serving probes.
            self.heartbeat.stop()
            self.queue.stop()
            await runner.cleanup()


# Command-line flags and the variable each one overrides; both go through Settings.from_env's checks.
FLAGS = {
    "--namespaces": "OMENDB_OPERATOR_NAMESPACES",
    "--resync-seconds": "OMENDB_OPERATOR_RESYNC_SECONDS",
    "--port": "OMENDB_OPERATOR_PORT",
    "--workers": "OMENDB_OPERATOR_WORKERS",
    "--peering": "OMENDB_OPERATOR_PEERING",
    "--priority": "OMENDB_OPERATOR_PRIORITY",
    "--cluster-domain": "OMENDB_OPERATOR_CLUSTER_DOMAIN",
    "--operator-namespace": "OMENDB_OPERATOR_NAMESPACE",
    "--log-format": "OMENDB_OPERATOR_LOG_FORMAT",
    "--log-level": "OMENDB_OPERATOR_LOG_LEVEL",
}


def settings_from(argv: list[str], env: Mapping[str, str]) -> Settings:
    """Settings from the environment, each flag in ``argv`` overriding its variable."""
    ap = argparse.ArgumentParser(prog="omendb-operator", description="Run the OmenDB operator.",
                                 epilog="Every flag overrides the environment variable named in its help.")
    for flag, var in FLAGS.items():
        ap.add_argument(flag, metavar="VALUE", help=f"overrides ${var}")
    args = vars(ap.parse_args(argv))
    given = {FLAGS[f"--{key.replace('_', '-')}"]: value for key, value in args.items() if value is not None}
    return Settings.from_env({**env, **given})


def main(argv: list[str] | None = None) -> int:
    settings = settings_from(sys.argv[1:] if argv is None else argv, os.environ)
    kopf.configure(verbose=settings.log_level == "debug",
                   log_format=kopf.LogFormat.JSON if settings.log_format == "json" else kopf.LogFormat.FULL)
    logging.getLogger().setLevel(settings.log_level.upper() if settings.log_level != "warn" else "WARNING")
    # httpx logs every request at info: the heartbeat alone would write a line a second per OmenDB.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    asyncio.run(Operator(settings).run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
