"""The multi-node journeys' parts (issue 16): an OmenDB spread over three nodes, a writer writing through
its Service from node 1, a checker, and the figures (RTO, RPO, failed writes) of each scenario.

The writer logs every batch it sends: when it started and ended, its first key, and whether it was
acknowledged. Keys are never reused and each value is ``key / 2``, so the checker can explain every record
the database holds: afterwards it scans the whole database through the primary Service and finds
- every acknowledged key present (missing ones are the RPO),
- no record whose key was never sent or whose value is not the one sent (unexplained).
A write that was not acknowledged may be there or not: both are explained.

The scenarios themselves are in e2e/tests/test_multinode.py; `make bench-nodes` runs them and prints the
table `report` makes.
"""

from __future__ import annotations

import calendar
import json
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from e2e.kube import Kube

NAME = "mn"
BATCH = 10  # keys per write
DELAY_SECONDS = 10  # spec.failover.delaySeconds: the engines fence after max(5, 10 / 2) = 5 s
FENCE_SECONDS = 5
# Pods leave a NotReady/unreachable node after 10 s rather than the default 300 s, so the journey of a node
# lost for good sees them Terminating (and then removed by the operator) within about two minutes. The other
# journeys end every outage within about 25 s, before the node turns NotReady (about 45 s).
EVICT_AFTER_SECONDS = 10
HOSTNAME = "kubernetes.io/hostname"
IMAGE = "omendb/omendb:0.1.0"


def omendb(synchronous: bool) -> dict[str, Any]:
    """Three pods over three nodes (the default spread), TLS and auth on, one synchronous replica."""
    return {"apiVersion": "omendb.io/v1alpha1", "kind": "OmenDB", "metadata": {"name": NAME},
            "spec": {"version": "0.1.0", "replicas": 3,
                     "storage": {"data": {"size": "256Mi"}, "wal": {"size": "256Mi"}},
                     "resources": {"requests": {"cpu": "50m", "memory": "200Mi"}, "limits": {"memory": "768Mi"}},
                     "replication": {"synchronousReplicas": 1 if synchronous else 0},
                     "failover": {"delaySeconds": DELAY_SECONDS},
                     "scheduling": {"tolerations": [
                         {"key": taint, "operator": "Exists", "effect": "NoExecute",
                          "tolerationSeconds": EVICT_AFTER_SECONDS}
                         for taint in ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable")]},
                     "backup": {"enabled": False},
                     "monitoring": {"prometheusRule": False, "serviceMonitor": False}}}


WRITER = """
import json, sys, time
import httpx

url, auth = "https://__NAME__:3000", (open("/u/username").read(), open("/u/password").read())
key = 0
while True:
    body = {"records": [{"key": k, "value": k / 2} for k in range(key, key + __BATCH__)]}
    started = time.time()
    try:
        # A new connection per write: each goes through the Service to whichever pod it selects now.
        with httpx.Client(base_url=url, auth=auth, verify="/ca/ca.crt", timeout=3) as c:
            r = c.post("/v1/records", json=body)
        ok, err = r.status_code == 200, ("" if r.status_code == 200 else f"{r.status_code} {r.text[:120]}")
    except Exception as exc:
        ok, err = False, repr(exc)[:160]
    print(json.dumps({"s": started, "t": time.time(), "k": key, "ok": ok, "err": err}), flush=True)
    key += __BATCH__
    time.sleep(0.05)
"""

CHECK = """
import json
import httpx

auth = (open("/u/username").read(), open("/u/password").read())
records, cursor = {}, None
with httpx.Client(base_url="https://__NAME__:3000", auth=auth, verify="/ca/ca.crt", timeout=60) as c:
    while True:
        r = c.get("/v1/records", params={"limit": 10000, **({"cursor": cursor} if cursor else {})})
        r.raise_for_status()
        page = r.json()
        records.update((rec["key"], rec["value"]) for rec in page["records"])
        cursor = page["next_cursor"]
        if not cursor:
            break
print(json.dumps(sorted(records.items())))
"""


def _script(text: str, name: str) -> str:
    return text.replace("__NAME__", name).replace("__BATCH__", str(BATCH))


def writer_pod(node: str, name: str = NAME) -> dict[str, Any]:
    """The writer, on `node` (node 1: it must see the failures from outside)."""
    return {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "writer", "labels": {"app": "writer"}},
        "spec": {
            "nodeSelector": {HOSTNAME: node},
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "writer", "image": IMAGE, "command": ["python", "-c", _script(WRITER, name)],
                "volumeMounts": [{"name": "u", "mountPath": "/u", "readOnly": True},
                                 {"name": "ca", "mountPath": "/ca", "readOnly": True}],
                "resources": {"requests": {"cpu": "20m", "memory": "64Mi"}},
                "securityContext": {"runAsNonRoot": True, "allowPrivilegeEscalation": False}}],
            "volumes": [
                {"name": "u", "secret": {"secretName": f"{name}-users",
                                         "items": [{"key": "username", "path": "username"},
                                                   {"key": "password", "path": "password"}]}},
                {"name": "ca", "secret": {"secretName": f"{name}-ca", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            ],
        },
    }


@dataclass(frozen=True)
class Write:
    started: float
    ended: float
    first_key: int
    ok: bool
    error: str

    @property
    def keys(self) -> range:
        return range(self.first_key, self.first_key + BATCH)


def writes(kube: Kube, namespace: str) -> list[Write]:
    out = kube.kubectl("-n", namespace, "logs", "writer", timeout=60).stdout
    return [Write(e["s"], e["t"], e["k"], e["ok"], e["err"])
            for e in (json.loads(line) for line in out.splitlines() if line.startswith("{"))]


def scan(kube: Kube, namespace: str, name: str = NAME) -> dict[int, float]:
    """Every record of the database, read through the primary Service from the writer pod."""
    res = kube.kubectl("-n", namespace, "exec", "-i", "writer", "--", "python", "-c", _script(CHECK, name),
                       timeout=180)
    return {int(k): float(v) for k, v in json.loads(res.stdout.strip().splitlines()[-1])}


@dataclass
class Check:
    lost: list[int] = field(default_factory=list)  # acknowledged, not there
    unexplained: list[tuple[int, float]] = field(default_factory=list)  # never sent, or not the value sent
    acknowledged: int = 0
    present: int = 0


def check(before: list[Write], records: dict[int, float], after: list[Write]) -> Check:
    """`before`: the writer's log read before the scan, `after`: read after it (the writer goes on writing
    meanwhile). Every write acknowledged before the scan started must be in it; every record must have been
    sent by the time the scan ended, except the one batch that may have been on its way (the writer logs a
    write once it is answered)."""
    sent = {k for w in after for k in w.keys}
    last = max((w.first_key for w in after), default=-BATCH)
    in_flight = range(last + BATCH, last + 2 * BATCH)
    acked = [k for w in before if w.ok for k in w.keys]
    return Check(lost=sorted(k for k in acked if k not in records),
                 unexplained=sorted((k, v) for k, v in records.items()
                                    if (k not in sent and k not in in_flight) or v != k / 2),
                 acknowledged=len(acked), present=len(records))


@dataclass
class Figures:
    scenario: str
    rto_seconds: float | None  # the failure -> the first write acknowledged that started after it
    rpo_writes: int  # acknowledged keys missing afterwards
    rpo_window_seconds: float  # how long before the failure the oldest lost write was acknowledged (0: none)
    rpo_last_seconds: float  # how long after the failure the newest lost write was acknowledged (0: none)
    failed_writes: int  # attempts not acknowledged after the failure (the clients' retry window)
    longest_gap_seconds: float  # the longest time between two acknowledged writes around the failure
    unexplained: int
    old_primary: str
    new_primary: str
    how: str = ""  # what moved the primary (the FailoverStarted / SwitchoverStarted event's reason)


def figures(scenario: str, failed_at: float, log: list[Write], result: Check, old_primary: str,
            new_primary: str, how: str = "") -> Figures:
    after = [w for w in log if w.started >= failed_at]
    first = next((w for w in after if w.ok), None)
    lost = set(result.lost)
    lost_at = [w.ended for w in log if w.ok and any(k in lost for k in w.keys)]
    acked = sorted(w.ended for w in log if w.ok and w.ended >= failed_at - 5)
    gaps = [b - a for a, b in zip(acked, acked[1:], strict=False)]
    if acked and acked[0] > failed_at:
        gaps.append(acked[0] - failed_at)
    return Figures(scenario=scenario, rto_seconds=round(first.ended - failed_at, 2) if first else None,
                   rpo_writes=len(lost), rpo_window_seconds=round(failed_at - min(lost_at), 3) if lost_at else 0.0,
                   rpo_last_seconds=round(max(lost_at) - failed_at, 3) if lost_at else 0.0,
                   failed_writes=sum(1 for w in after if not w.ok and (first is None or w.started < first.ended)),
                   longest_gap_seconds=round(max(gaps), 2) if gaps else 0.0,
                   unexplained=len(result.unexplained), old_primary=old_primary, new_primary=new_primary, how=how)


def report(rows: Iterable[Figures]) -> str:
    """The table `make bench-nodes` prints and docs/operations/failover-and-scaling.md records."""
    lines = ["| scenario | RTO s | RPO: acknowledged writes lost | lost, acknowledged from .. to (s from the "
             "failure) | failed writes | longest gap between acknowledged writes s | unexplained records | "
             "moved by |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lost = f"{-r.rpo_window_seconds:+.1f} .. {r.rpo_last_seconds:+.1f}" if r.rpo_writes else "-"
        lines.append(f"| {r.scenario} | {r.rto_seconds} | {r.rpo_writes} | {lost} | "
                     f"{r.failed_writes} | {r.longest_gap_seconds} | {r.unexplained} | {r.how} |")
    return "\n".join(lines)


def as_json(rows: Iterable[Figures]) -> str:
    return json.dumps([asdict(r) for r in rows])


# ---- observing the OmenDB ------------------------------------------------------------------------------

def pods(kube: Kube, namespace: str, name: str = NAME) -> list[dict[str, Any]]:
    out = kube.kubectl("-n", namespace, "get", "pods", "-l", f"app.kubernetes.io/instance={name}",
                       "-l", "app.kubernetes.io/component=database", "-o", "json").stdout
    items: list[dict[str, Any]] = json.loads(out)["items"]
    return items


def ready(pod: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod.get("status", {}).get("conditions", []))


def status(kube: Kube, namespace: str, name: str = NAME) -> dict[str, Any]:
    st: dict[str, Any] = kube.get(namespace, "omendb", name).get("status") or {}
    return st


def placement(kube: Kube, namespace: str, name: str = NAME) -> dict[str, str]:
    """pod -> node."""
    return {p["metadata"]["name"]: p["spec"].get("nodeName", "") for p in pods(kube, namespace, name)}


def settled(kube: Kube, namespace: str, name: str = NAME) -> dict[str, Any] | None:
    """The status once 3 pods are ready, exactly one is labelled primary (status.primaryPod), every other
    engine is a replica (ready: it reached its primary and is within max_lag_seconds), and no failover
    moves; else None."""
    st = status(kube, namespace, name)
    primary = st.get("primaryPod")
    live = [p for p in pods(kube, namespace, name) if not p["metadata"].get("deletionTimestamp")]
    roles = {p["metadata"]["name"]: (p["metadata"].get("labels") or {}).get("role") for p in live}
    rows = {r["name"]: r for r in st.get("pods") or []}
    if len([p for p in live if ready(p)]) != 3 or len(rows) != 3 or \
            [n for n, r in roles.items() if r == "primary"] != [primary]:
        return None
    for pod, row in rows.items():
        want = "primary" if pod == primary else "replica"
        if row.get("engineRole") != want or not row.get("ready"):
            return None
    return st if (st.get("failover") or {}).get("phase") == "Idle" else None


def events(kube: Kube, namespace: str, reasons: tuple[str, ...]) -> list[tuple[float, str, str]]:
    """(time, reason, message) of the OmenDB's events with these reasons, oldest first."""
    out = json.loads(kube.kubectl("-n", namespace, "get", "events", "-o", "json").stdout)["items"]
    found = []
    for e in out:
        if e.get("reason") in reasons and e["involvedObject"].get("kind") == "OmenDB":
            stamp = e.get("lastTimestamp") or e.get("eventTime") or e["metadata"]["creationTimestamp"]
            found.append((calendar.timegm(time.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S")),
                          str(e["reason"]), str(e.get("message", ""))))
    return sorted(found)
