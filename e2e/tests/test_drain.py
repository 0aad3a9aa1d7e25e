"""Drains on the one-node cluster: the real eviction API and disruption controller against the two budgets
(docs/operations/failover-and-scaling.md, "Node drains"). A 2-pod OmenDB: a replica may be evicted, the
primary may not (429 from its own budget); cordoning the node of the primary, with no replica on another
node to switch over to, leaves the primary where it is and says why in the status. The switchover itself
needs a second node (the multi-node journeys)."""

from __future__ import annotations

import json
from typing import Any

from e2e import layout as L
from e2e.kube import Kube

NAME = "dr"


def _omendb() -> dict[str, Any]:
    return {"apiVersion": "omendb.io/v1alpha1", "kind": "OmenDB", "metadata": {"name": NAME},
            "spec": {"version": "0.1.0", "replicas": 2,
                     "storage": {"data": {"size": "128Mi"}, "wal": {"size": "128Mi"}},
                     "resources": {"requests": {"cpu": "50m", "memory": "200Mi"}, "limits": {"memory": "768Mi"}},
                     "backup": {"enabled": False}, "monitoring": {"prometheusRule": False, "serviceMonitor": False}}}


def _evict(kube: Kube, namespace: str, pod: str) -> tuple[int, str]:
    """POST the pod's eviction as `kubectl drain` does: (0, "") when accepted, else (exit code, message)."""
    body = json.dumps({"apiVersion": "policy/v1", "kind": "Eviction",
                       "metadata": {"name": pod, "namespace": namespace}})
    res = kube.kubectl("create", "--raw", f"/api/v1/namespaces/{namespace}/pods/{pod}/eviction", "-f", "-",
                       stdin=body, check=False)
    return res.returncode, res.stderr


def _status(kube: Kube, namespace: str) -> dict[str, Any]:
    return kube.get(namespace, "omendb", NAME).get("status") or {}


def _budget_allows(kube: Kube, namespace: str, name: str) -> int | None:
    pdb = kube.get_or_none(namespace, "pdb", name)
    return None if pdb is None else (pdb.get("status") or {}).get("disruptionsAllowed")


def test_the_primarys_budget_refuses_its_eviction_and_a_cordon_with_nowhere_to_go_is_reported(
        kube: Kube, operator: str, namespace: str) -> None:
    kube.apply(namespace, _omendb())
    kube.wait_condition(namespace, "omendb", NAME, "Ready", timeout=420)
    primary = kube.wait_until("status.primaryPod", lambda: _status(kube, namespace).get("primaryPod"), 60)
    replica = next(p for p in (f"{NAME}-0", f"{NAME}-1") if p != primary)
    # Two disjoint budgets on the role label; the disruption controller computes what each allows.
    kube.wait_until("the replicas' budget to allow one eviction", lambda: _budget_allows(kube, namespace, NAME) == 1,
                    120, interval=2)
    kube.wait_until("the primary's budget to allow none",
                    lambda: _budget_allows(kube, namespace, f"{NAME}-primary") == 0, 120, interval=2)

    code, message = _evict(kube, namespace, primary)
    assert code != 0 and "disruption budget" in message, message  # 429: the drain would wait here
    before = kube.get(namespace, "pod", replica)["metadata"]["uid"]
    assert _evict(kube, namespace, replica) == (0, "")

    def replica_back() -> bool:
        pod = kube.get_or_none(namespace, "pod", replica)
        return pod is not None and pod["metadata"]["uid"] != before and any(
            c["type"] == "Ready" and c["status"] == "True" for c in (pod.get("status") or {}).get("conditions", []))

    kube.wait_until("the evicted replica to come back ready", replica_back, 300, interval=2)
    assert _status(kube, namespace)["primaryPod"] == primary

    kube.kubectl("cordon", L.NODE_NAME)
    try:
        def warned() -> str | None:
            degraded: dict[str, Any] = next(
                (c for c in _status(kube, namespace).get("conditions", []) if c["type"] == "Degraded"), {})
            message = str(degraded.get("message", ""))
            return message if "cordoned, but no ready replica runs on another node" in message else None

        message = kube.wait_until("the status to say the drain waits", warned, 120, interval=2)
        assert f"node {L.NODE_NAME} of the primary {primary}" in message
        assert _status(kube, namespace)["primaryPod"] == primary  # nowhere to switch over to: it stays
    finally:
        kube.kubectl("uncordon", L.NODE_NAME)
    events = json.loads(kube.kubectl("-n", namespace, "get", "events", "-o", "json").stdout)["items"]
    assert "DrainSwitchover" not in {e["reason"] for e in events}
