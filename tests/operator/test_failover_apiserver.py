"""Failover and switchover by the reconcile, against a real kube-apiserver and real engines.

There is no kubelet here: the test creates the pods of an OmenDB itself and sets their readiness through
the pods' status subresource, and each pod's engine is a real ``omendb serve`` process on loopback (the
replication tests' cluster), which the reconcile reaches through an ``Engines`` pointed at loopback
instead of the pods' DNS names. Everything else (status, labels, the ConfigMap key, events, the
annotation) is the real API server's.
"""

from __future__ import annotations

import datetime as dt
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes.config import new_client_from_config

from omendb_operator.controller import engines as E
from omendb_operator.controller import metrics
from omendb_operator.controller.act import act
from omendb_operator.controller.engines import PodHealth, fetch_stats
from omendb_operator.controller.heartbeat import Heartbeat
from omendb_operator.controller.kube import Kube
from omendb_operator.controller.observe import Observer, secret_names
from omendb_operator.controller.reconcile import Reconciler
from omendb_operator.plans import failover
from omendb_operator.plans.omendb import owner_of
from omendb_operator.plans.plan import Plan
from omendb_operator.spec import parse_spec

# tests/operator is not a package (its helpers import by file name); the replication tests' cluster is.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.replication.cluster import ADMIN, Cluster, api, caught_up, info, lookup, wait_until  # noqa: E402
from tests.server.harness import Server  # noqa: E402

API = "omendb.io/v1alpha1"


@pytest.fixture(scope="module")
def kube(apiserver):
    return Kube(new_client_from_config(config_file=str(apiserver.kubeconfig)))


def _pod(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": {"app": "omendb", "app.kubernetes.io/name": "omendb",
                                                  "app.kubernetes.io/instance": "db",
                                                  "app.kubernetes.io/component": "database",
                                                  "app.kubernetes.io/managed-by": "omendb-operator"}},
            "spec": {"containers": [{"name": "omendb", "image": "omendb/omendb:0.1.0"}]}}


def _set_ready(apiserver, namespace: str, pod: str, ready: bool, since: dt.datetime) -> None:
    with apiserver.client() as http:
        r = http.patch(f"/api/v1/namespaces/{namespace}/pods/{pod}/status",
                       headers={"Content-Type": "application/merge-patch+json"},
                       json={"status": {
                           "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}],
                           "containerStatuses": [{"name": "omendb", "image": "omendb/omendb:0.1.0", "imageID": "",
                                                  "ready": ready, "restartCount": 0,
                                                  "state": {"running": {"startedAt": "2026-11-27T07:00:00Z"}}}],
                           "conditions": [{"type": "Ready", "status": "True" if ready else "False",
                                           "lastTransitionTime": since.strftime("%Y-%m-%dT%H:%M:%SZ")}]}})
        assert r.status_code == 200, r.text


def _write(server: Server, keys: range) -> None:
    with api(server) as c:
        c.post("/v1/records", json={"records": [{"key": k, "value": k / 4} for k in keys]}).raise_for_status()


def _labels(kube: Kube, namespace: str) -> dict[str, str | None]:
    return {p["metadata"]["name"]: (p["metadata"].get("labels") or {}).get("role")
            for p in kube.list("v1", "Pod", namespace, failover.pod_selector("db"))}


def _counts(counter: Any) -> dict[tuple[str, str], float]:
    return {(s.labels["kind"], s.labels["verb"]): s.value for m in counter.collect() for s in m.samples
            if s.name.endswith("_total")}


def _world_and_spec(reconciler: Reconciler, namespace: str) -> tuple[Any, Any]:
    world, _ = reconciler.observer.observe(namespace, "db")
    return world, world.parsed_spec()[0]


def _events(apiserver, namespace: str) -> list[tuple[str, str, str]]:
    with apiserver.client() as http:
        items = http.get(f"/api/v1/namespaces/{namespace}/events").json()["items"]
    return [(e["type"], e["reason"], e["message"]) for e in items if e["involvedObject"]["name"] == "db"]


def test_failover_relabels_rejoins_the_old_primary_and_switches_over_without_loss(apiserver, namespace, kube,
                                                                                   tmp_path: Path):
    cluster = Cluster(tmp_path)
    nodes: dict[str, Server] = {}
    try:
        nodes["db-0"] = cluster.node("db-0")
        nodes.update(zip(("db-1", "db-2"), cluster.replicas(nodes["db-0"], "db-1", "db-2"), strict=True))

        def engines(_kube: Kube, name: str, ns: str, spec: Any) -> E.Engines:
            def url(pod: str) -> str:
                return nodes[pod].url
            return E.Engines(url, url, ADMIN)

        requeues: list[float] = []
        reconciler = Reconciler(kube, engines=engines,
                                requeue=lambda ns, name, delay: requeues.append(delay))
        spec = {"replicas": 3, "tls": {"enabled": False}, "backup": {"enabled": False},
                "monitoring": {"prometheusRule": False, "serviceMonitor": False},
                "failover": {"delaySeconds": 5}}
        kube.resource(API, "OmenDB").create(namespace=namespace, body={
            "apiVersion": API, "kind": "OmenDB", "metadata": {"name": "db"}, "spec": spec})
        now = dt.datetime.now(dt.UTC)
        # No controller manager makes the namespace's default ServiceAccount, which pod admission needs.
        kube.resource("v1", "ServiceAccount").create(namespace=namespace, body={
            "apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}})
        for i in range(3):
            kube.resource("v1", "Pod").create(namespace=namespace, body=_pod(f"db-{i}"))
            _set_ready(apiserver, namespace, f"db-{i}", True, now)

        # 1. Steady state: one primary, labelled; Services select by role; status lists LSNs.
        _write(nodes["db-0"], range(0, 500))
        caught_up(nodes["db-1"], nodes["db-0"])
        caught_up(nodes["db-2"], nodes["db-0"])
        reconciler.reconcile(namespace, "db")
        assert _labels(kube, namespace) == {"db-0": "primary", "db-1": "replica", "db-2": "replica"}
        status = kube.get(API, "OmenDB", "db", namespace)["status"]
        assert status["primaryPod"] == "db-0" and status["failover"] == {"phase": "Idle"}
        lsn = info(nodes["db-0"])["lsn"]
        assert [(p["name"], p["role"], p["lsn"]) for p in status["pods"]] == [
            ("db-0", "primary", lsn), ("db-1", "replica", lsn), ("db-2", "replica", lsn)]
        assert kube.get("v1", "ConfigMap", "db-config", namespace)["data"]["primary-pod"] == "db-0\n"
        assert kube.get("v1", "Service", "db", namespace)["spec"]["selector"]["role"] == "primary"
        assert kube.get("v1", "Service", "db-ro", namespace)["spec"]["selector"]["role"] == "replica"

        # A steady reconcile of 3 replicas reads each kind at most once and writes nothing; Secrets are read
        # by name (the operator may not list them), each once. Before the observe/plan/act split: 29 reads.
        reconciler.reconcile(namespace, "db")
        reads, writes = _counts(metrics.API_READS), _counts(metrics.API_WRITES)
        reconciler.reconcile(namespace, "db")
        read = {k: v - reads.get(k, 0) for k, v in _counts(metrics.API_READS).items() if v - reads.get(k, 0)}
        assert {k: v for k, v in _counts(metrics.API_WRITES).items() if v != writes.get(k, 0)} == {}
        secrets = read.pop(("Secret", "get"))
        assert secrets <= len(secret_names(*_world_and_spec(reconciler, namespace)))
        assert all(v == 1 for v in read.values()), read
        assert reconciler.reconcile(namespace, "db") == "unchanged"

        # 2. The primary dies. Within the delay nothing moves (a requeue is asked for the rest of it).
        nodes["db-0"].stop(signal.SIGKILL)
        down_at = dt.datetime.now(dt.UTC)
        _set_ready(apiserver, namespace, "db-0", False, down_at)
        reconciler.reconcile(namespace, "db")
        status = kube.get(API, "OmenDB", "db", namespace)["status"]
        assert status["primaryPod"] == "db-0" and status["failover"]["primaryNotReadySince"]
        assert requeues and 0 < requeues[-1] <= 5
        # After the delay: the most advanced replica (a tie: the lowest ordinal) is promoted, the other
        # follows it, labels and the ConfigMap key move, and status says what happened.
        _set_ready(apiserver, namespace, "db-0", False, down_at - dt.timedelta(seconds=30))
        reconciler.reconcile(namespace, "db")
        status = kube.get(API, "OmenDB", "db", namespace)["status"]
        assert status["primaryPod"] == "db-1", status
        assert status["failover"]["phase"] == "Idle" and status["failover"]["last"]["from"] == "db-0"
        assert info(nodes["db-1"])["role"] == "primary"
        assert info(nodes["db-2"])["primary"] == nodes["db-1"].url
        assert _labels(kube, namespace) == {"db-0": "replica", "db-1": "primary", "db-2": "replica"}
        assert kube.get("v1", "ConfigMap", "db-config", namespace)["data"]["primary-pod"] == "db-1\n"
        reasons = [e[1] for e in _events(apiserver, namespace)]
        assert "FailoverStarted" in reasons and "FailoverCompleted" in reasons
        started = next(e for e in _events(apiserver, namespace) if e[1] == "FailoverStarted")
        assert f"db-1 LSN {lsn}" in started[2] and "db-0 unreachable" in started[2]
        _write(nodes["db-1"], range(500, 600))

        # 3. The old primary returns as a primary (a stale primary-pod file): it is told to follow.
        nodes["db-0"] = cluster.node("db-0")
        _set_ready(apiserver, namespace, "db-0", True, dt.datetime.now(dt.UTC))
        reconciler.reconcile(namespace, "db")
        assert info(nodes["db-0"])["role"] == "replica"
        caught_up(nodes["db-0"], nodes["db-1"])
        assert lookup(nodes["db-0"], [599]) == [599 / 4]
        assert _labels(kube, namespace) == {"db-0": "replica", "db-1": "primary", "db-2": "replica"}

        # 4. Planned switchover by annotation: no acknowledged write is lost, the annotation is consumed.
        _write(nodes["db-1"], range(600, 700))
        kube.patch(API, "OmenDB", "db", namespace,
                   {"metadata": {"annotations": {failover.SWITCHOVER_ANNOTATION: "db-2"}}})

        def switched() -> bool:
            reconciler.reconcile(namespace, "db")
            return kube.get(API, "OmenDB", "db", namespace)["status"]["primaryPod"] == "db-2"

        wait_until(switched, 60, "the switchover to db-2")
        body = kube.get(API, "OmenDB", "db", namespace)
        assert failover.SWITCHOVER_ANNOTATION not in (body["metadata"].get("annotations") or {})
        assert body["status"]["failover"]["last"]["reason"] == "switchover"
        assert info(nodes["db-2"])["role"] == "primary" and info(nodes["db-1"])["role"] == "replica"
        assert lookup(nodes["db-2"], list(range(700))) == [k / 4 for k in range(700)]
        reconciler.reconcile(namespace, "db")  # repoint db-0 (it followed db-1)
        assert info(nodes["db-0"])["primary"] == nodes["db-2"].url
        assert _labels(kube, namespace) == {"db-0": "replica", "db-1": "replica", "db-2": "primary"}
        reasons = [e[1] for e in _events(apiserver, namespace)]
        assert {"SwitchoverStarted", "PrimaryDemoted", "SwitchoverCompleted", "SwitchoverDone"} <= set(reasons)

        # 5. An operator that restarts mid-failover resumes from status: a failover recorded as Promoting
        # db-0 is carried out by a new Reconciler.
        kube.patch_status(API, "OmenDB", "db", namespace, {"failover": {
            "phase": "Promoting", "reason": "failover", "from": "db-2", "to": "db-0",
            "startedAt": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}})
        _write(nodes["db-2"], range(700, 705))  # a write of db-2's term, so db-0 learns the new timeline
        caught_up(nodes["db-0"], nodes["db-2"])
        Reconciler(kube, engines=engines).reconcile(namespace, "db")
        status = kube.get(API, "OmenDB", "db", namespace)["status"]
        assert status["primaryPod"] == "db-0" and status["failover"]["phase"] == "Idle"
        assert info(nodes["db-0"])["role"] == "primary"
        assert info(nodes["db-2"])["role"] == "replica"  # the previous primary follows (nothing to rewind)

        # 6. The contract an upgrade's rollout uses (plans/day2.py): a failover decision with a switchover
        # target, acted on, observed again, until the target is the primary and the failover is Idle.
        observer = Observer(kube, engines, PodHealth(), fetch_stats)
        result = None
        for _ in range(60):
            world, reached = observer.observe(namespace, "db")
            spec = parse_spec(world.omendb["spec"])
            busy = (world.status.get("failover") or {}).get("phase", "Idle") != "Idle"
            result = failover.decide(world, spec, dt.datetime.now(dt.UTC),
                                     switchover_to=None if busy else "db-1", paused=False)
            if result.quiet and result.primary_pod == "db-1" and result.decision.failover["phase"] == "Idle":
                break
            plan = Plan()
            failover.record(plan, world, owner_of(world.omendb), result)
            act(kube, reached, plan, owner_of(world.omendb))
        assert result is not None and result.primary_pod == "db-1", result
        assert info(nodes["db-1"])["role"] == "primary"
        _write(nodes["db-1"], range(705, 710))
        assert lookup(nodes["db-1"], list(range(710))) == [k / 4 for k in range(710)]
    finally:
        cluster.stop_all()


def test_scale_down_switches_over_before_removing_the_primary(apiserver, namespace, kube, tmp_path: Path):
    cluster = Cluster(tmp_path)
    nodes: dict[str, Server] = {}
    try:
        # The primary is the highest ordinal (after an earlier failover); the spec goes from 3 pods to 1.
        nodes["db-2"] = cluster.node("db-2")
        nodes.update(zip(("db-0", "db-1"), cluster.replicas(nodes["db-2"], "db-0", "db-1"), strict=True))

        def engines(_kube: Kube, name: str, ns: str, spec: Any) -> E.Engines:
            def url(pod: str) -> str:
                return nodes[pod].url
            return E.Engines(url, url, ADMIN)

        reconciler = Reconciler(kube, engines=engines)
        kube.resource("v1", "ServiceAccount").create(namespace=namespace, body={
            "apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}})
        kube.resource(API, "OmenDB").create(namespace=namespace, body={
            "apiVersion": API, "kind": "OmenDB", "metadata": {"name": "db"},
            "spec": {"replicas": 3, "tls": {"enabled": False}, "backup": {"enabled": False},
                     "storage": {"deleteClaimsOnScaleDown": True},
                     "monitoring": {"prometheusRule": False, "serviceMonitor": False}}})
        now = dt.datetime.now(dt.UTC)
        for i in range(3):
            kube.resource("v1", "Pod").create(namespace=namespace, body=_pod(f"db-{i}"))
            _set_ready(apiserver, namespace, f"db-{i}", True, now)
        kube.patch_status(API, "OmenDB", "db", namespace, {"primaryPod": "db-2"})
        _write(nodes["db-2"], range(0, 300))
        reconciler.reconcile(namespace, "db")
        sts = kube.get("apps/v1", "StatefulSet", "db", namespace)
        assert sts["spec"]["replicas"] == 3
        assert sts["spec"]["persistentVolumeClaimRetentionPolicy"]["whenScaled"] == "Delete"

        # db-0, the one pod that stays, is down: the StatefulSet is held at 3 pods, the primary stays.
        nodes["db-0"].stop(signal.SIGTERM)
        _set_ready(apiserver, namespace, "db-0", False, dt.datetime.now(dt.UTC))
        kube.patch(API, "OmenDB", "db", namespace, {"spec": {"replicas": 1}})
        for _ in range(2):
            reconciler.reconcile(namespace, "db")
            assert kube.get("apps/v1", "StatefulSet", "db", namespace)["spec"]["replicas"] == 3
            assert kube.get(API, "OmenDB", "db", namespace)["status"]["primaryPod"] == "db-2"
        assert info(nodes["db-2"])["role"] == "primary"
        # db-0 is back: the primary moves there (a switchover: nothing lost), then the StatefulSet shrinks.
        nodes["db-0"] = cluster.node("db-0", nodes["db-2"])
        _set_ready(apiserver, namespace, "db-0", True, dt.datetime.now(dt.UTC))

        def moved() -> bool:
            reconciler.reconcile(namespace, "db")
            body = kube.get(API, "OmenDB", "db", namespace)
            sts = kube.get("apps/v1", "StatefulSet", "db", namespace)
            return body["status"]["primaryPod"] == "db-0" and sts["spec"]["replicas"] == 1

        wait_until(moved, 60, "the primary on db-0 and the StatefulSet at 1 pod")
        assert info(nodes["db-0"])["role"] == "primary"
        assert lookup(nodes["db-0"], list(range(300))) == [k / 4 for k in range(300)]
        reasons = [e[1] for e in _events(apiserver, namespace)]
        assert "SwitchoverStarted" in reasons and "SwitchoverCompleted" in reasons
        # One pod left: the read Service selects it whatever its role.
        assert "role" not in kube.get("v1", "Service", "db-ro", namespace)["spec"]["selector"]
    finally:
        cluster.stop_all()


def test_a_ready_primary_nobody_reaches_is_replaced_after_its_fence_and_one_only_the_operator_misses_is_not(
        apiserver, namespace, kube, tmp_path: Path):
    """A dead or cut-off node keeps its pods Ready for ~40 s. The heartbeat wakes the operator on the first
    missed beat; the primary is replaced once the operator *and* every replica lost it, no sooner than the
    engines' fence (5 s here) plus 2 s after the replicas last heard from it. When only the operator cannot
    reach it (the replicas still stream), nothing moves."""
    cluster = Cluster(tmp_path)
    nodes: dict[str, Server] = {}
    blind: set[str] = set()  # pods the operator's requests cannot reach (a partition between the two)
    try:
        nodes["db-0"] = cluster.node("db-0")
        nodes.update(zip(("db-1", "db-2"), cluster.replicas(nodes["db-0"], "db-1", "db-2"), strict=True))

        def engines(_kube: Kube, name: str, ns: str, spec: Any) -> E.Engines:
            def url(pod: str) -> str:
                return "http://127.0.0.1:9" if pod in blind else nodes[pod].url  # nothing listens on 9

            def peer(pod: str) -> str:
                return nodes[pod].url
            return E.Engines(url, peer, ADMIN)

        woken: list[tuple[str, str]] = []
        beat = Heartbeat(woken.append)
        reconciler = Reconciler(kube, engines=engines, requeue=lambda ns, name, delay: None, heartbeat=beat)
        spec = {"replicas": 3, "tls": {"enabled": False}, "backup": {"enabled": False},
                "monitoring": {"prometheusRule": False, "serviceMonitor": False},
                "failover": {"delaySeconds": 2}}  # the engines fence after max(5, 2/2) = 5 s
        kube.resource(API, "OmenDB").create(namespace=namespace, body={
            "apiVersion": API, "kind": "OmenDB", "metadata": {"name": "db"}, "spec": spec})
        kube.resource("v1", "ServiceAccount").create(namespace=namespace, body={
            "apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}})
        for i in range(3):
            kube.resource("v1", "Pod").create(namespace=namespace, body=_pod(f"db-{i}"))
            _set_ready(apiserver, namespace, f"db-{i}", True, dt.datetime.now(dt.UTC))
        _write(nodes["db-0"], range(0, 100))
        caught_up(nodes["db-1"], nodes["db-0"])
        caught_up(nodes["db-2"], nodes["db-0"])
        reconciler.reconcile(namespace, "db")
        assert beat.watched() == {(namespace, "db"): "db-0"}
        assert beat.beat_once() == []

        # 1. Only the operator loses the primary: the replicas still hear from it, so it stays the primary.
        blind.add("db-0")
        assert beat.beat_once() == [(namespace, "db")]  # the first missed beat wakes the OmenDB
        assert beat.beat_once() == []  # ... once (then every REMIND_SECONDS), not every second
        for _ in range(4):
            reconciler.reconcile(namespace, "db")
            time.sleep(2)
        status = kube.get(API, "OmenDB", "db", namespace)["status"]
        assert status["primaryPod"] == "db-0" and status["failover"]["phase"] == "Idle", status
        assert "primaryNotReadySince" not in status["failover"]
        blind.clear()
        assert beat.beat_once() == [(namespace, "db")]  # back: woken again

        # 2. The primary freezes (its pod stays Ready): operator and replicas lose it.
        assert nodes["db-0"].proc is not None
        nodes["db-0"].proc.send_signal(signal.SIGSTOP)
        frozen_at = dt.datetime.now(dt.UTC)

        def replaced() -> bool:
            reconciler.reconcile(namespace, "db")
            return kube.get(API, "OmenDB", "db", namespace)["status"]["primaryPod"] != "db-0"

        wait_until(replaced, 60, "a replica promoted in place of the unreachable primary")
        status = kube.get(API, "OmenDB", "db", namespace)["status"]
        last = status["failover"]["last"]
        assert last["from"] == "db-0" and last["reason"] == "failover", status
        started = next(e for e in _events(apiserver, namespace) if e[1] == "FailoverStarted")
        assert "unreachable (operator and replicas)" in started[2], started
        # Never before the fence (5 s) + 2 s since the replicas last heard from it: frozen_at is later
        # than that, so the promotion is at least 7 s after it, less the replicas' last poll (<= 0.5 s).
        promoted_at = dt.datetime.strptime(last["at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
        assert (promoted_at - frozen_at).total_seconds() >= 7 - 0.5 - 1, (promoted_at, frozen_at)
        new = status["primaryPod"]
        assert info(nodes[new])["role"] == "primary"
        assert beat.watched() == {(namespace, "db"): new}  # the heartbeat follows the new primary
        assert _labels(kube, namespace)["db-0"] == "replica"

        # 3. The old primary thaws: told to follow, it rejoins as a replica with every write.
        nodes["db-0"].proc.send_signal(signal.SIGCONT)
        _write(nodes[new], range(100, 200))

        def rejoined() -> bool:
            reconciler.reconcile(namespace, "db")
            return info(nodes["db-0"])["role"] == "replica"

        wait_until(rejoined, 60, "the old primary to follow the new one")
        caught_up(nodes["db-0"], nodes[new])
        assert lookup(nodes["db-0"], list(range(200))) == [k / 4 for k in range(200)]
    finally:
        for server in nodes.values():
            if server.proc is not None and server.proc.poll() is None:
                server.proc.send_signal(signal.SIGCONT)
        cluster.stop_all()
