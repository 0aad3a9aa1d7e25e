"""Which database pod to replace next: the pure planner behind every rollout (version or pod template).

The StatefulSet uses ``updateStrategy: OnDelete``, so the controller only creates pods from the current
template when one is missing; the operator decides when a pod goes. Order (the guide's rolling update,
made safe for a primary/replica cluster): first any outdated pod that is not Ready (it serves nothing),
then the outdated replicas, highest ordinal first, then the primary, after a switchover when there is
another pod to take over. One pod at a time: nothing is deleted while a pod is missing, terminating, or
on the new revision but not yet Ready and healthy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omendb_operator.plans.world import pod_ready

REVISION_LABEL = "controller-revision-hash"


@dataclass(frozen=True)
class PodView:
    """What the planner needs of one database pod."""

    name: str
    ordinal: int
    revision: str | None
    ready: bool
    terminating: bool = False


@dataclass(frozen=True)
class RolloutStep:
    """``action`` is one of: ``wait`` (``reason`` says for what), ``delete`` / ``switchover`` (``pod``), or
    ``done`` (every pod runs the StatefulSet's update revision and is Ready)."""

    action: str
    pod: str | None = None
    reason: str = ""
    target: str | None = None  # switchover: the replica to promote (updated, Ready, lowest ordinal)


def pod_view(pod: dict[str, Any]) -> PodView:
    meta = pod.get("metadata") or {}
    name = str(meta.get("name", ""))
    ready = pod_ready(pod)
    try:
        ordinal = int(name.rsplit("-", 1)[1])
    except (IndexError, ValueError):
        ordinal = -1
    return PodView(name=name, ordinal=ordinal, revision=(meta.get("labels") or {}).get(REVISION_LABEL),
                   ready=ready, terminating=bool(meta.get("deletionTimestamp")))


def update_revision(sts: dict[str, Any] | None) -> str | None:
    """The revision new pods get, once the controller has seen the StatefulSet's latest spec; else None."""
    if not sts:
        return None
    st = sts.get("status") or {}
    if st.get("observedGeneration") != (sts.get("metadata") or {}).get("generation"):
        return None
    return st.get("updateRevision") or None


def plan_rollout(revision: str | None, pods: list[PodView], replicas: int, primary_pod: str | None,
                 watched_pod: str | None = None, watched_healthy: bool = True) -> RolloutStep:
    """The next step towards every pod running ``revision``.

    ``watched_pod`` is the pod replaced last (from status.upgrade.pod); the rollout moves on only when it
    is back, on ``revision``, Ready and ``watched_healthy`` (its /health answered)."""
    if revision is None:
        return RolloutStep("wait", reason="the StatefulSet controller has not seen the latest template yet")
    live = sorted((p for p in pods if not p.terminating), key=lambda p: p.ordinal)
    if any(p.terminating for p in pods):
        names = ", ".join(p.name for p in pods if p.terminating)
        return RolloutStep("wait", reason=f"pod {names} is terminating")
    if len(live) < replicas:
        present = {p.name for p in live}
        return RolloutStep("wait", reason=f"{replicas - len(present)} pod(s) not created yet")
    if watched_pod:
        watched = next((p for p in live if p.name == watched_pod), None)
        if watched is None:
            return RolloutStep("wait", reason=f"pod {watched_pod} is being recreated")
        if watched.revision == revision and not (watched.ready and watched_healthy):
            what = "Ready" if not watched.ready else "healthy (/health)"
            return RolloutStep("wait", pod=watched.name, reason=f"waiting for pod {watched.name} to be {what}")
    outdated = [p for p in live if p.revision != revision]
    unready_new = [p for p in live if p.revision == revision and not p.ready]
    if unready_new:
        return RolloutStep("wait", pod=unready_new[0].name,
                           reason=f"waiting for pod {unready_new[0].name} to be Ready")
    if not outdated:
        return RolloutStep("done", reason=f"all {len(live)} pod(s) run revision {revision}")
    broken = [p for p in outdated if not p.ready]
    if broken:
        return RolloutStep("delete", pod=max(broken, key=lambda p: p.ordinal).name,
                           reason="an outdated pod that is not Ready goes first")
    replicas_first = [p for p in outdated if p.name != primary_pod]
    if replicas_first:
        return RolloutStep("delete", pod=max(replicas_first, key=lambda p: p.ordinal).name,
                           reason="replicas first, highest ordinal first")
    primary = outdated[0]
    if len(live) > 1:
        # An explicit, deterministic target keeps the switchover idempotent across operator restarts;
        # every other pod is already updated and Ready here.
        target = next(p.name for p in live if p.name != primary.name)
        return RolloutStep("switchover", pod=primary.name, target=target,
                           reason=f"moving the primary from {primary.name} to {target} before replacing it")
    return RolloutStep("delete", pod=primary.name, reason="the primary last")
