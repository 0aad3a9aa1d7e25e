"""Pods stuck Terminating on a lost node (plans/lost_pods.py): removed by force once their node has been
silent LOST_NODE_SECONDS, unless they are the primary. Against a real kube-apiserver: a pod bound to a node
stays Terminating after its grace period, as it does when its kubelet is gone."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

from kubernetes.config import new_client_from_config

from omendb_operator.controller.kube import Kube
from omendb_operator.controller.reconcile import Reconciler
from omendb_operator.plans import lost_pods
from omendb_operator.plans.world import World

API = "omendb.io/v1alpha1"
NOW = dt.datetime(2026, 12, 5, 1, 0, 0, tzinfo=dt.UTC)


def _node(name: str, ready: str, since: dt.datetime) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
            "status": {"conditions": [{"type": "Ready", "status": ready,
                                       "lastTransitionTime": since.strftime("%Y-%m-%dT%H:%M:%SZ")}]}}


def _pod(name: str, node: str, deleting: dt.datetime | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "uid": f"uid-{name}", "labels": {
        "app.kubernetes.io/instance": "db", "app.kubernetes.io/component": "database"}}
    if deleting is not None:
        meta["deletionTimestamp"] = deleting.strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": {"nodeName": node}}


def _world(pods: list[dict[str, Any]], nodes: dict[str, dict[str, Any] | None], primary: str = "db-0") -> World:
    world = World(namespace="ns", name="db", omendb={"apiVersion": API, "kind": "OmenDB",
                                                      "metadata": {"name": "db", "namespace": "ns"},
                                                      "spec": {}, "status": {"primaryPod": primary}})
    world.children["Pod"] = {p["metadata"]["name"]: p for p in pods}
    world.nodes = nodes
    return world


def test_only_a_terminating_replica_on_a_node_silent_long_enough_is_removed():
    silent = _node("lost", "Unknown", NOW - dt.timedelta(seconds=lost_pods.LOST_NODE_SECONDS + 5))
    recent = _node("flaky", "Unknown", NOW - dt.timedelta(seconds=10))
    fine = _node("fine", "True", NOW - dt.timedelta(hours=1))
    past = NOW - dt.timedelta(seconds=30)
    pods = [_pod("db-0", "lost", past),  # the primary: never
            _pod("db-1", "lost", past),  # removed
            _pod("db-2", "fine", past),  # its kubelet will confirm
            _pod("db-3", "flaky", past),  # not long enough yet
            _pod("db-4", "lost", NOW + dt.timedelta(seconds=20)),  # its grace period runs
            _pod("db-5", "gone", past),  # its Node was deleted
            _pod("db-6", "lost")]  # not terminating: Kubernetes has not decided it goes
    world = _world(pods, {"lost": silent, "flaky": recent, "fine": fine, "gone": None})
    found = lost_pods.stuck_on_lost_nodes(world, NOW)
    assert [p["metadata"]["name"] for p, _ in found] == ["db-1", "db-5"]
    assert "not the primary (db-0)" in found[0][1] and "has not reported since" in found[0][1]
    assert "which is gone" in found[1][1]
    # The next look: when db-4's grace period or db-3's node's silence ends, whichever comes first (+1 s).
    assert lost_pods.recheck_after(world, NOW) == 20 + 1


def test_the_operator_removes_a_pod_left_terminating_on_a_lost_node(apiserver, namespace):
    kube = Kube(new_client_from_config(config_file=str(apiserver.kubeconfig)))
    long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=10)
    nodes = {f"{namespace}-lost": "Unknown", f"{namespace}-fine": "True"}
    for name, ready in nodes.items():
        kube.resource("v1", "Node").create(body=_node(name, ready, long_ago))
        # Conditions are status: written through the status subresource, as a kubelet or the node controller.
        with apiserver.client() as http:
            r = http.patch(f"/api/v1/nodes/{name}/status", headers={"Content-Type": "application/merge-patch+json"},
                           json={"status": _node(name, ready, long_ago)["status"]})
            assert r.status_code == 200, r.text
    try:
        kube.resource("v1", "ServiceAccount").create(namespace=namespace, body={
            "apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}})
        kube.resource(API, "OmenDB").create(namespace=namespace, body={
            "apiVersion": API, "kind": "OmenDB", "metadata": {"name": "db"},
            "spec": {"replicas": 3, "tls": {"enabled": False}, "backup": {"enabled": False},
                     "failover": {"enabled": False},
                     "monitoring": {"prometheusRule": False, "serviceMonitor": False}}})
        placed = {"db-0": f"{namespace}-lost", "db-1": f"{namespace}-lost", "db-2": f"{namespace}-fine"}
        for pod, node in placed.items():
            body = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": pod, "labels": {
                "app.kubernetes.io/name": "omendb", "app.kubernetes.io/instance": "db",
                "app.kubernetes.io/component": "database", "app.kubernetes.io/managed-by": "omendb-operator"}},
                "spec": {"nodeName": node, "containers": [{"name": "omendb", "image": "omendb/omendb:0.1.0"}]}}
            kube.resource("v1", "Pod").create(namespace=namespace, body=body)
            # Bound to a node: the API server waits for that node's kubelet to confirm the deletion.
            kube.resource("v1", "Pod").delete(name=pod, namespace=namespace, body={"gracePeriodSeconds": 1})
        time.sleep(2)  # the grace period is over
        reconciler = Reconciler(kube, requeue=lambda ns, name, delay: None)
        reconciler.reconcile(namespace, "db")
        left = {p["metadata"]["name"] for p in kube.list("v1", "Pod", namespace, "app.kubernetes.io/instance=db")}
        # db-1 (a replica on the lost node) is gone; the primary db-0 and db-2 (its node reports) stay.
        assert left == {"db-0", "db-2"}, left
        with apiserver.client() as http:
            items = http.get(f"/api/v1/namespaces/{namespace}/events").json()["items"]
        removed = [e["message"] for e in items if e["reason"] == "PodOnLostNodeRemoved"]
        assert len(removed) == 1 and "pod db-1 has been terminating" in removed[0], removed
    finally:
        for name in nodes:
            kube.resource("v1", "Node").delete(name=name)
