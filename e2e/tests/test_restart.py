"""The restart RTO in the cluster (issue 19, item 3): what a pod restart in place costs the clients.

One OmenDB pod (`rs`, the development sample: TLS and auth on, `sync_on_write`) holds RECORDS records in
a checkpoint plus a WAL tail, and a writer pod writes through the Service `rs` without pause. Its engine
process is SIGKILLed from the host; with one pod there is nothing to fail over to, so the kubelet restarts
the container in place and the clients wait for it. The test measures the phases from the kill:
- the container running again (the kubelet's restart),
- the engine opened (its "opened ... in N s" log line gives the open time itself),
- the pod Ready (the startup and readiness probes),
- the first write acknowledged through the Service (the RTO the clients see),
and prints them as a `RESTART-MEASURED` line. Every acknowledged write, and every loaded record, is there
afterwards. Figures: docs/benchmarks.md, "Restart in the cluster".
"""

from __future__ import annotations

import calendar
import json
import os
import re
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest

from e2e.kube import Kube
from e2e.tests.test_failover import BATCH, _acked_after, _check, _engine_pid, _log, _start_writer
from e2e.tests.test_operator_journey import Db, _pods, _ready, day2_sample

RECORDS = 5_000_000
FIRST_LOADED_KEY = 10**12  # far above the writer's keys
LOAD = """
import json, sys
import httpx

first, count, step = (int(a) for a in sys.argv[1:4])  # count 0: only the stats
auth = (open("/u/username").read(), open("/u/password").read())
with httpx.Client(base_url="https://__NAME__:3000", auth=auth, verify="/ca/ca.crt", timeout=120) as c:
    if count:
        for start in range(first, first + count, step):
            keys = range(start, min(start + step, first + count))
            c.post("/v1/records", json={"records": [{"key": k, "value": k * 0.5} for k in keys]}).raise_for_status()
        c.post("/admin/checkpoint").raise_for_status()
    print(json.dumps(c.get("/v1/stats").json()))
"""


@pytest.fixture(scope="module")
def db(kube: Kube, operator: str, journey_namespace: str) -> Iterator[Db]:
    d = Db(journey_namespace, "rs")
    kube.apply(d.namespace, day2_sample(d.name))
    kube.wait_condition(d.namespace, "omendb", d.name, "Ready", timeout=300)
    yield d


def _load(kube: Kube, d: Db, count: int) -> dict[str, Any]:
    """Write `count` records above the writer's keys through the Service in 50,000-record requests, then
    a checkpoint; return the engine's /v1/stats."""
    out = kube.kubectl("-n", d.namespace, "exec", "writer", "--", "python", "-c", LOAD.replace("__NAME__", d.name),
                       str(FIRST_LOADED_KEY), str(count), "50000", timeout=900).stdout
    stats: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return stats


def _since_epoch(stamp: str) -> float:
    return float(calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ")))


def _log_time(log: str, message: str) -> float:
    """When the engine logged `message` (text format: an ISO timestamp in milliseconds, then the level)."""
    match = re.search(rf"^(\S+)Z \S+ {re.escape(message)}", log, re.M)
    assert match, f"no {message!r} in the engine's log:\n{log[-3000:]}"
    stamp, _, millis = match.group(1).partition(".")
    return calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%S")) + float(f"0.{millis or 0}")


def _container(pod: dict[str, Any]) -> dict[str, Any]:
    (status,) = [c for c in pod["status"]["containerStatuses"] if c["name"] == "omendb"]
    return status


def test_a_pod_restarted_in_place_serves_again_and_keeps_every_write(kube: Kube, db: Db) -> None:
    _start_writer(kube, db)
    kube.wait_until("the writer's first acknowledged writes", lambda: len([e for e in _log(kube, db) if e["ok"]]) >= 20,
                    180, 2)
    stats = _load(kube, db, RECORDS)
    assert stats["records"] >= RECORDS, stats
    time.sleep(3)  # a few of the writer's writes land in the WAL after the checkpoint: the open replays them

    (pod,) = _pods(kube, db)
    name, restarts = pod["metadata"]["name"], _container(pod).get("restartCount", 0)
    pid = _engine_pid(pod)
    failed_at = time.time()
    os.kill(pid, signal.SIGKILL)
    # Polled every 2 s: the figures come from the writer's and the engine's own timestamps, and polling
    # faster (a kubectl process and the whole writer log each time) only takes CPU from the restart.
    first = kube.wait_until(f"a write acknowledged through Service {db.name} after the kill",
                            lambda: _acked_after(kube, db, failed_at + 0.5), 300, 2)
    pod = kube.wait_until("the pod Ready again", lambda: next((p for p in _pods(kube, db) if _ready(p)), None), 120, 1)
    container = _container(pod)
    assert pod["metadata"]["name"] == name and container["restartCount"] == restarts + 1, container
    started = _since_epoch(container["state"]["running"]["startedAt"])
    ready = _since_epoch(next(c["lastTransitionTime"] for c in pod["status"]["conditions"] if c["type"] == "Ready"))
    log = kube.kubectl("-n", db.namespace, "logs", name, "-c", "omendb", timeout=60).stdout
    opened = re.search(r"opened \S+ at LSN (\d+): (\d+) records in the checkpoint, (\d+) WAL frames replayed in "
                       r"([0-9.]+)s", log)
    assert opened, log[-3000:]
    # The engine's own timeline, from its log's timestamps (the node's clock, which is this host's).
    stamps = {what: _log_time(log, pattern) for what, pattern in (
        ("process_started", "omendb.server starting omendb"), ("listening", "uvicorn.error Uvicorn running on"),
        ("database_open", "omendb.server database open"))}

    writes = _log(kube, db)
    acked = [k for e in writes if e["ok"] for k in range(e["k"], e["k"] + BATCH)]
    result = _check(kube, db, acked)
    assert result["primary"] == [], f"acknowledged writes lost in the restart: {result['primary'][:20]}"
    assert _load(kube, db, 0)["records"] >= RECORDS + len(set(acked))

    figures = {
        "records": int(opened.group(2)), "wal_frames_replayed": int(opened.group(3)),
        "engine_open_seconds": float(opened.group(4)),
        **{f"engine_{what}_after_seconds": round(t - failed_at, 2) for what, t in stamps.items()},
        # Kubernetes stamps these to the second.
        "container_running_after_seconds": round(started - failed_at, 1),
        "pod_ready_after_seconds": round(ready - failed_at, 1),
        "rto_seconds": round(first["t"] - failed_at, 2),
        "failed_writes": sum(1 for e in writes if not e["ok"] and e["t"] > failed_at),
        "acknowledged_total": len(acked),
    }
    print("RESTART-MEASURED " + json.dumps(figures), flush=True)
    assert figures["rto_seconds"] > figures["engine_open_seconds"]  # the figures are of this restart
