"""Day-2 operations of one OmenDB, planned: rolling upgrades and pod template rollouts (upgrade.py,
rollout.py), hibernation (hibernation.py) and volume expansion (volumes.py).

:func:`plan_before` runs before the children are built (it decides the image, the pod count and whether
the StatefulSet may be applied now); :func:`plan_after` after (it replaces at most one pod, the primary
after a switchover). Both only use state kept in ``status``, so an operator restart anywhere resumes the
operation.
"""

from __future__ import annotations

import copy
import datetime as dt
import re
from dataclasses import dataclass, field, replace
from typing import Any

from omendb_operator import labels as L
from omendb_operator.plans import failover, hibernation, rollout, upgrade, volumes
from omendb_operator.plans import topology as T
from omendb_operator.plans.backups import KIND as BACKUP_KIND
from omendb_operator.plans.operations import backups_reading_pods
from omendb_operator.plans.plan import Delete, Event, Patch, Plan
from omendb_operator.plans.world import World
from omendb_operator.spec import OmenDBSpec
from omendb_operator.specs.statefulset import POD_MANAGEMENT_POLICY
from omendb_operator.times import timestamp

# How soon a reconcile with an operation in flight looks again (a pod's /health and an OmenDBBackup's
# phase are not watched).
ACTIVE_REQUEUE_SECONDS = 5.0
VOLUME_REQUEUE_SECONDS = 10.0


@dataclass
class Before:
    spec: OmenDBSpec  # what the children are built from
    replicas_override: int | None
    upgrade: upgrade.UpgradePlan
    volumes: volumes.VolumePlan
    active_backup_jobs: tuple[str, ...]
    watched_healthy: bool
    skip: set[tuple[str, str]] = field(default_factory=set)  # (kind, name) not to apply now
    requeue: float | None = None
    unreachable: str | None = None  # the replaced pod's /health could not be reached

    @property
    def skip_statefulset(self) -> bool:
        return any(kind == "StatefulSet" for kind, _ in self.skip)


@dataclass
class After:
    upgrade_state: dict[str, Any] | None
    waiting: str | None
    hibernation: str | None
    requeue: float | None = None
    # primaryPod, pods and failover as a switchover started here left them: the status carries these.
    replication: dict[str, Any] | None = None


def statefulset_after(live: dict[str, Any] | None, changes: bool) -> dict[str, Any] | None:
    """The StatefulSet as the API server will have it once this plan applied it: a changed spec bumps
    its generation, which the StatefulSet controller has not observed yet (so no rollout is "done", and
    no pod is replaced for a revision that is about to change)."""
    if live is None or not changes:
        return live
    out = copy.deepcopy(live)
    out["metadata"]["generation"] = int(out["metadata"].get("generation") or 0) + 1
    return out


def _claims(world: World) -> list[volumes.ClaimView]:
    pattern = re.compile(rf"^(data|wal)-{re.escape(world.name)}-\d+$")
    out = []
    for pvc in world.items("PersistentVolumeClaim"):
        if pattern.match(pvc["metadata"]["name"]):
            view = volumes.claim_view(pvc)
            if view:
                out.append(view)
    return out


def plan_before(plan: Plan, world: World, spec: OmenDBSpec, owner: dict[str, Any], now: dt.datetime) -> Before:
    previous = world.status
    live_sts = world.statefulset
    running = backups_reading_pods(world) if live_sts else ()
    state = previous.get("upgrade")

    watched_ok, watched_healthy, unreachable = True, True, None
    if state and state.get("pod") and live_sts:
        pod = world.child("Pod", state["pod"])
        revision = rollout.update_revision(live_sts)
        view = rollout.pod_view(pod) if pod else None
        ready = bool(view and view.ready and not view.terminating and view.revision == revision)
        answer = world.watched_health if ready else False
        watched_healthy = answer is True
        # Unreachable (None): the operator cannot check, which says nothing about the new version, so it
        # waits (with a message) instead of rolling back.
        watched_ok = ready and answer is not False
        if ready and answer is None:
            unreachable = (f"cannot reach pod {state['pod']} at its IP for /health: run the operator in "
                           "the cluster (docs/operations/upgrades.md)")

    backup_phase, backup_error = None, ""
    if state and state.get("backupName") and state.get("phase") in upgrade.ACTIVE:
        backup = next((b for b in world.backups if b["metadata"]["name"] == state["backupName"]), None)
        if backup is not None:
            st = backup.get("status") or {}
            backup_phase, backup_error = str(st.get("phase") or "Pending"), str(st.get("error") or "")

    uplan = upgrade.plan_upgrade(upgrade.UpgradeInputs(
        name=world.name, spec_image=spec.container_image, spec_version=spec.image or spec.version,
        live_image=world.running_image, current_version=previous.get("currentVersion"), previous=state,
        now=now, hibernated=spec.hibernate,
        backup_wanted=spec.upgrade.backup_before_upgrade and spec.backup.enabled,
        backup_phase=backup_phase, backup_error=backup_error, active_backup_jobs=running,
        watched_ok=watched_ok, timeout_seconds=spec.upgrade.timeout_seconds))
    if uplan.create_backup and all(b["metadata"]["name"] != uplan.create_backup for b in world.backups):
        plan.creates.append({"apiVersion": L.API_VERSION, "kind": BACKUP_KIND,
                             "metadata": L.metadata(owner, uplan.create_backup, "backup"),
                             "spec": {"cluster": {"name": world.name}, "type": "full"}})

    build = spec if uplan.image == spec.container_image else replace(spec, image=uplan.image)
    build = hibernation.spec_for_children(build)

    claims = _claims(world) if live_sts else []
    vplan = volumes.plan_volumes(
        {"data": spec.storage.data.size, "wal": spec.storage.wal.size}, claims, world.expandable,
        volumes.template_sizes(live_sts), running, previous.get("storage"))
    before = Before(spec=build, replicas_override=hibernation.replicas_override(spec), upgrade=uplan,
                    volumes=vplan, active_backup_jobs=running, watched_healthy=watched_healthy,
                    unreachable=unreachable)
    plan.events_on(owner, uplan.events)
    _expand(plan, world, owner, live_sts, vplan, previous.get("storage"), before)
    if state and state.get("phase") in upgrade.ACTIVE or (uplan.state or {}).get("phase") in upgrade.ACTIVE:
        before.requeue = min(before.requeue or ACTIVE_REQUEUE_SECONDS, ACTIVE_REQUEUE_SECONDS)
    plan.requeue_within(before.requeue)
    return before


def _expand(plan: Plan, world: World, owner: dict[str, Any], live_sts: dict[str, Any] | None,
            vplan: volumes.VolumePlan, previous: dict[str, Any] | None, before: Before) -> None:
    events: list[Event] = []
    for claim, size in vplan.patches:
        plan.patches.append(Patch("v1", "PersistentVolumeClaim", claim, world.namespace,
                                  {"spec": {"resources": {"requests": {"storage": size}}}}))
        events.append(("Normal", "VolumeExpansion", f"claim {claim} requested to grow to {size}"))
    if vplan.status and vplan.status.get("phase") == volumes.BLOCKED and (previous or {}).get(
            "message") != vplan.status.get("message"):
        events.append(("Warning", "VolumeExpansionBlocked", str(vplan.status["message"])))
    if vplan.status and vplan.status.get("phase") in (volumes.WAITING, volumes.EXPANDING):
        before.requeue = VOLUME_REQUEUE_SECONDS  # claims' capacity and Jobs ending are not watched
    if vplan.waiting:
        before.upgrade.waiting = before.upgrade.waiting or vplan.waiting
    if live_sts and live_sts["metadata"].get("deletionTimestamp"):
        before.skip.add(("StatefulSet", world.names.statefulset))
        before.requeue = 2.0
    elif live_sts and (vplan.recreate_statefulset or (live_sts.get("spec") or {}).get(
            "podManagementPolicy", "OrderedReady") != POD_MANAGEMENT_POLICY):
        # Claim templates and the pod management policy (older operators made OrderedReady StatefulSets)
        # are immutable: delete the StatefulSet but not its pods (they are adopted by the new one, whose
        # template is the same) and apply it again once it is gone.
        plan.deletes.append(Delete("apps/v1", "StatefulSet", live_sts["metadata"]["name"], world.namespace,
                                   orphan=True))
        why = ("new pods get the new volume sizes" if vplan.recreate_statefulset
               else f"all pods start at once (podManagementPolicy {POD_MANAGEMENT_POLICY})")
        events.append(("Normal", "StatefulSetRecreated", f"recreating the StatefulSet (pods kept) so {why}"))
        before.skip.add(("StatefulSet", world.names.statefulset))
        before.requeue = 2.0
    plan.events_on(owner, events)


def plan_after(plan: Plan, world: World, spec: OmenDBSpec, owner: dict[str, Any], before: Before,
               sts: dict[str, Any] | None, repl: failover.Result, requested: str | None,
               now: dt.datetime) -> After:
    """The rollout's next pod. ``sts``: the StatefulSet as it will be after this plan (None: it is being
    recreated); ``repl``: the failover decision already made in this plan; ``requested``: a switchover
    asked for by annotation (then the rollout does not start another)."""
    uplan = before.upgrade
    live_replicas = int(((sts or {}).get("status") or {}).get("replicas") or 0)
    after = After(upgrade_state=uplan.state, waiting=uplan.waiting or before.volumes.waiting,
                  hibernation=hibernation.hibernation_state(spec, live_replicas), requeue=before.requeue)
    if sts is None or spec.hibernate:
        return after
    views = [rollout.pod_view(p) for p in world.database_pods()]
    revision = rollout.update_revision(sts)
    primary = repl.primary_pod
    state = uplan.state or {}
    step = rollout.plan_rollout(revision, views, spec.replicas, primary, state.get("pod"), before.watched_healthy)
    acts = upgrade.plan_after_rollout(uplan.state, step, revision, before.spec.container_image, uplan.version,
                                      now, uplan.rollout_allowed, before.active_backup_jobs)
    plan.events_on(owner, acts.events)
    after.upgrade_state = acts.state
    after.waiting = acts.waiting or after.waiting
    if before.unreachable and acts.state and acts.state.get("phase") in (upgrade.ROLLING_OUT,
                                                                         upgrade.ROLLING_BACK):
        acts.state["message"] = after.waiting = before.unreachable
    delete = acts.delete_pod
    if acts.switchover_pod and acts.state is not None:
        # The primary's pod goes last, once a switchover moved the primary to an updated replica. One
        # switchover at a time: none starts while the failover is busy or one was asked for by annotation.
        if spec.replicas < 2:  # nobody to hand over to
            delete = acts.switchover_pod
            acts.state.update(pod=delete, podReplacedAt=timestamp(now),
                              message=f"replacing pod {delete} (the primary last; a single pod)")
            plan.event(owner, "Normal", "ReplacingPod", str(acts.state["message"]))
        elif repl.decision.failover.get("phase", T.IDLE) == T.IDLE and requested is None:
            switch = failover.decide(world, spec, now, switchover_to=acts.switchover_target, paused=False)
            finished = switch.decision.switchover_finished or ""
            if finished.startswith("refused"):
                after.waiting = finished
            else:
                failover.record(plan, world, owner, switch)
                after.replication = switch.status
    if delete:
        pod = world.child("Pod", delete)
        if pod is not None:
            # The uid precondition: never delete a pod that was already replaced by a newer one.
            plan.deletes.append(Delete("v1", "Pod", delete, world.namespace, uid=pod["metadata"].get("uid")))
    if (after.upgrade_state or {}).get("phase") in upgrade.ACTIVE:
        after.requeue = min(after.requeue or ACTIVE_REQUEUE_SECONDS, ACTIVE_REQUEUE_SECONDS)
    return after
