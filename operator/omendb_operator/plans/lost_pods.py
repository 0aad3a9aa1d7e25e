"""Pods stuck on a lost node, removed once that is safe.

A node that stops reporting (powered off, cut off) keeps its pods in the API. After their tolerationSeconds
(300 s by default) Kubernetes marks them for deletion, but a pod that is bound to a node is removed only
when its kubelet confirms that its containers are gone. So they stay Terminating for as long as the node is
lost, and the StatefulSet does not make that pod again: it never runs two pods of one identity, because it
cannot know that the first one has stopped. The database runs a replica short until someone deletes the pod
by force (`kubectl delete pod --force --grace-period=0`), as the StatefulSet documentation describes.

The operator does that for its own pods, when all of these hold:

1. the pod is Terminating and its grace period is over (Kubernetes, or a person, already decided it goes);
2. its Node is gone, or its Ready condition has been Unknown (its kubelet stopped reporting) for at least
   LOST_NODE_SECONDS;
3. it is not the primary (status.primaryPod).

Why that is safe. The StatefulSet's guarantee protects against two live processes of one pod writing the
same data. The old pod's process, if it still runs on a cut-off node, is not the primary: a failover
replaced it only once neither the operator nor any replica could reach it for its fence time and 2 s more,
and from then on it has refused writes (the engine's server/fencing.py), gets no heartbeat and no replica
polls, so it stays fenced until the operator tells it to follow. A replica never accepts client writes.
Its volume: a ReadWriteOnce network disk is attached to the new node only once it is detached from the
lost one (the attach/detach controller force-detaches it after 6 minutes, or at once when the node is
tainted `node.kubernetes.io/out-of-service`); a local volume is bound to the lost node, so the new pod
waits there until the node returns (or its claim is deleted, and it re-seeds from the primary). Either
way the new pod never shares its data with the old process. A primary stuck this way is left alone: with
failover off, or no replica to promote, deleting it would not bring the database back, only risk two
writers.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from omendb_operator.plans.plan import Delete, Plan
from omendb_operator.plans.world import World
from omendb_operator.times import parse_time

LOST_NODE_SECONDS = 60.0  # a Node's Ready condition Unknown this long: its kubelet is not coming back soon


def node_lost_since(node: dict[str, Any] | None, now: dt.datetime) -> dt.datetime | None:
    """Since when the Node has not been reporting (its Ready condition Unknown), or ``now`` when it is gone;
    None while it reports."""
    if node is None:
        return now
    for cond in (node.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready" and cond.get("status") == "Unknown":
            return parse_time(cond.get("lastTransitionTime") or cond.get("last_transition_time")) or now
    return None


def stuck_on_lost_nodes(world: World, now: dt.datetime) -> list[tuple[dict[str, Any], str]]:
    """The database pods to remove by force, each with why."""
    primary = str(world.status.get("primaryPod") or world.names.pod(0))
    out = []
    for pod in world.database_pods():
        meta = pod["metadata"]
        deleting = parse_time(meta.get("deletionTimestamp") or meta.get("deletion_timestamp"))
        node = (pod.get("spec") or {}).get("nodeName") or (pod.get("spec") or {}).get("node_name")
        if deleting is None or deleting > now or not node or meta["name"] == primary or node not in world.nodes:
            continue
        lost = node_lost_since(world.nodes[node], now)
        if lost is None or (world.nodes[node] is not None and (now - lost).total_seconds() < LOST_NODE_SECONDS):
            continue
        state = "is gone" if world.nodes[node] is None else f"has not reported since {lost:%H:%M:%S}Z"
        out.append((pod, f"pod {meta['name']} has been terminating since {deleting:%H:%M:%S}Z on node {node}, "
                         f"which {state}; it is not the primary ({primary}), so it is removed without its "
                         "kubelet's confirmation and the StatefulSet makes it again"))
    return out


def plan_lost_pods(plan: Plan, world: World, owner: dict[str, Any], now: dt.datetime) -> None:
    for pod, why in stuck_on_lost_nodes(world, now):
        meta = pod["metadata"]
        plan.deletes.append(Delete("v1", "Pod", meta["name"], world.namespace, uid=meta.get("uid"),
                                   grace_seconds=0))
        plan.event(owner, "Warning", "PodOnLostNodeRemoved", why)


def recheck_after(world: World, now: dt.datetime) -> float | None:
    """Seconds until a Terminating pod's grace period ends, or until its node has been lost
    LOST_NODE_SECONDS: nothing changes in the API then, so no watch event would wake the operator."""
    ends = []
    for pod in world.database_pods():
        meta, spec = pod["metadata"], pod.get("spec") or {}
        deleting = parse_time(meta.get("deletionTimestamp") or meta.get("deletion_timestamp"))
        node = spec.get("nodeName") or spec.get("node_name")
        if deleting is None or node not in world.nodes or world.nodes[node] is None:
            continue
        lost = node_lost_since(world.nodes[node], now)
        if lost is None:
            continue
        ends.append(max((deleting - now).total_seconds(), LOST_NODE_SECONDS - (now - lost).total_seconds()))
    ends = [e for e in ends if e > 0]
    return max(1.0, min(ends) + 1) if ends else None
