"""Failover, switchover and role labels as a plan: topology.py decides, this module turns the decision
into what the act module writes.

The decision (``status.failover``, ``status.primaryPod``) goes into ``Plan.status_first``: it is on record
before the engines are told to promote or follow. While the failover moves on (engines acted, or the
decision says look again) the reconcile observes again at once; the rest of the plan (children, status)
is made once the failover is quiet, from where the primary ended up.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass
from typing import Any

from omendb_operator import labels as L
from omendb_operator.plans import topology as T
from omendb_operator.plans.plan import Patch, Plan, StatusWrite, merge_patch
from omendb_operator.plans.world import World
from omendb_operator.spec import OmenDBSpec, fence_after_seconds
from omendb_operator.specs.services import ROLE_LABEL  # `role=primary|replica`; omendb.io/role says the same

SWITCHOVER_ANNOTATION = f"{L.GROUP}/switchover-to"


def pod_selector(name: str) -> str:
    return f"app.kubernetes.io/instance={name},{L.COMPONENT_LABEL}=database"


def peer_url(name: str, namespace: str, tls: bool, pod: str) -> str:
    """How the pods reach one another's API (the headless Service's per-pod DNS names)."""
    return f"{'https' if tls else 'http'}://{pod}.{L.Names(name).headless_service}.{namespace}.svc:{L.API_PORT}"


def peer_url_template(name: str, namespace: str, tls: bool) -> str:
    return peer_url(name, namespace, tls, "{pod}")


@dataclass
class Result:
    """Where the primary is after this decision, for the pod count and the OmenDB's status."""

    primary_pod: str
    decision: T.Decision
    quiet: bool  # nothing to do on the engines and nothing moved on: the rest may be planned now
    status: dict[str, Any]  # primaryPod, pods, podsObservedAt, failover: for build_status
    replicas_hold: int | None = None  # hold the StatefulSet at this size (a scale-down waits on a switchover)


def requested_switchover(world: World) -> str | None:
    """The pod named by the omendb.io/switchover-to annotation ("" for the best replica), else None."""
    value = (((world.omendb or {}).get("metadata") or {}).get("annotations") or {}).get(SWITCHOVER_ANNOTATION)
    return None if value is None else value.strip()


def drain_target(world: World, primary: str, replicas: int) -> T.PodView | None:
    """When the primary's Node is cordoned (a drain; its budget holds the eviction back), the replica to hand
    the primary to: the best ready one on a Node that is not cordoned. None when no switchover is due."""
    pod = world.pods.get(primary)
    if pod is None or not pod.ready or not world.cordoned(pod.node):
        return None
    elsewhere = {name: p for name, p in world.pods.items()
                 if name == primary or (p.node and not world.cordoned(p.node))}
    return T.best_replica(elsewhere, primary, replicas, require_ready=True)


def drain_warning(world: World, replicas: int) -> str | None:
    """Why a drain of the primary's Node waits (a status warning), or None."""
    primary = str(world.status.get("primaryPod") or world.names.pod(0))
    pod = world.pods.get(primary)
    if world.node_error:
        return world.node_error
    if pod is None or not world.cordoned(pod.node) or drain_target(world, primary, replicas) is not None:
        return None
    return (f"node {pod.node} of the primary {primary} is cordoned, but no ready replica runs on another "
            "node: its budget holds a drain back until one does (or switch over by hand)")


def decide(world: World, spec: OmenDBSpec, now: dt.datetime, *, switchover_to: str | None,
           paused: bool) -> Result:
    """One failover decision from the observed pods and engines (topology.decide)."""
    status = world.status
    primary = str(status.get("primaryPod") or world.names.pod(0))
    failover = dict(status.get("failover") or {"phase": T.IDLE})
    inputs = T.Inputs(now=now, primary_pod=primary, failover=failover, pods=world.pods,
                      peer_urls={p: world.peer_urls.get(p, "") for p in {*world.pods, primary}},
                      replicas=spec.replicas, enabled=spec.failover.enabled,
                      delay_seconds=spec.failover.delay_seconds, switchover_to=switchover_to, paused=paused,
                      fence_seconds=fence_after_seconds(spec))
    drain = None
    if switchover_to is None and T.ordinal(primary) >= spec.replicas and failover.get("phase") == T.IDLE:
        # A scale-down would remove the primary: switch over to a pod that stays first.
        inputs = dataclasses.replace(inputs, switchover_to="")
    elif switchover_to is None and failover.get("phase") == T.IDLE and not paused:
        drain = drain_target(world, primary, spec.replicas)
        if drain is not None:
            inputs = dataclasses.replace(inputs, switchover_to=drain.name)
    decision = T.decide(inputs)
    if drain is not None and decision.failover.get("phase") == T.DEMOTING:
        node = world.pods[primary].node
        decision.events.append(("Normal", "DrainSwitchover", f"node {node} of the primary {primary} is cordoned "
                                f"(a drain): switching over to {drain.name} on node {drain.node} before the "
                                "primary is evicted"))
    phase = str(decision.failover.get("phase"))
    rows, observed_at = T.refresh_pods(status.get("pods"), status.get("podsObservedAt"),
                                       T.pod_statuses(world.pods, decision.primary_pod), now)
    return Result(primary_pod=decision.primary_pod, decision=decision,
                  quiet=not (decision.actions or decision.again),
                  status={"primaryPod": decision.primary_pod, "pods": rows, "podsObservedAt": observed_at,
                          "failover": decision.failover},
                  replicas_hold=T.scale_hold(spec.replicas, decision.primary_pod, world.live_replicas, phase))


def record(plan: Plan, world: World, owner: dict[str, Any], result: Result) -> None:
    """The decision's part of the plan: status first when it moved, the engine actions, its events."""
    status = world.status
    decision = result.decision
    old = dict(status.get("failover") or {"phase": T.IDLE})
    if decision.failover != old or decision.primary_pod != str(status.get("primaryPod") or world.names.pod(0)):
        plan.status_first.append(StatusWrite(L.API_VERSION, L.KIND, world.name, world.namespace, {
            "primaryPod": decision.primary_pod, "failover": merge_patch(old, decision.failover)}))
    plan.engine_actions += decision.actions
    plan.events_on(owner, decision.events)
    plan.again = plan.again or not result.quiet
    plan.requeue_within(decision.requeue_after)


def consume_annotation(plan: Plan, world: World, owner: dict[str, Any], requested: str,
                       finished: str) -> None:
    """A switchover asked for by annotation is done or refused: remove the annotation (metadata only,
    never spec) and say which in an event."""
    plan.patches.append(Patch(L.API_VERSION, L.KIND, world.name, world.namespace,
                              {"metadata": {"annotations": {SWITCHOVER_ANNOTATION: None}}}))
    refused = finished.startswith("refused")
    plan.event(owner, "Warning" if refused else "Normal", "SwitchoverRefused" if refused else "SwitchoverDone",
               f"{SWITCHOVER_ANNOTATION}={requested}: {finished}")


def label_pods(plan: Plan, world: World, primary: str) -> None:
    """Role labels follow status.primaryPod; the Services select on them."""
    for pod, role in T.role_labels(world.pods, primary).items():
        plan.patches.append(Patch("v1", "Pod", pod, world.namespace,
                                  {"metadata": {"labels": {ROLE_LABEL: role, L.ROLE_LABEL: role}}}))
