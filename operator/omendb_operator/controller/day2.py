"""The I/O shell of the day-2 operations this module's callers run on every reconcile: rolling upgrades
and pod template rollouts (upgrade.py, rollout.py), hibernation (hibernation.py) and volume expansion
(volumes.py). It reads what the pure planners need, runs them, and executes what they decide.

``Reconciler._reconcile`` calls :meth:`Day2.before_build` before building the children (it decides the
image, the pod count and whether the StatefulSet may be applied now) and :meth:`Day2.after_apply` after
applying them (it replaces at most one pod). Both only use state kept in ``status``, so an operator
restart anywhere resumes the operation.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from kubernetes.dynamic.exceptions import NotFoundError

from omendb_operator import labels as L
from omendb_operator import metrics
from omendb_operator.controller import failover
from omendb_operator.controller.kube import Kube
from omendb_operator.plans import hibernation, rollout, upgrade, volumes
from omendb_operator.plans.status import timestamp
from omendb_operator.spec import OmenDBSpec
from omendb_operator.specs.statefulset import POD_MANAGEMENT_POLICY

log = logging.getLogger(__name__)

BACKUP_KIND = "OmenDBBackup"
# Jobs that take a backup of the cluster (team contract: component=backup; the CronJobs' Jobs are
# labelled per kind until the backups work unifies them).
BACKUP_COMPONENTS = ("backup", "backup-full", "backup-incremental")
# How soon a reconcile with an operation in flight looks again (a pod's /health and an OmenDBBackup's
# phase are not watched).
ACTIVE_REQUEUE_SECONDS = 5.0
VOLUME_REQUEUE_SECONDS = 10.0

# True: /health answered 200; False: it answered otherwise; None: the pod could not be reached at all.
HealthCheck = Callable[[dict[str, Any], str, OmenDBSpec], "bool | None"]
Event = tuple[str, str, str]


@dataclass
class Before:
    spec: OmenDBSpec  # what the children are built from
    replicas_override: int | None
    upgrade: upgrade.UpgradePlan
    volumes: volumes.VolumePlan
    active_backup_jobs: tuple[str, ...]
    watched_healthy: bool
    skip_statefulset: bool = False
    events: list[Event] = field(default_factory=list)
    requeue: float | None = None
    unreachable: str | None = None  # the replaced pod's /health could not be reached


@dataclass
class After:
    upgrade_state: dict[str, Any] | None
    waiting: str | None
    hibernation: str | None
    events: list[Event] = field(default_factory=list)
    requeue: float | None = None
    # primaryPod, pods and failover as a switchover step left them (it writes status itself): the reconcile's
    # status write must carry these, not what it observed before the switchover.
    replication: dict[str, Any] | None = None


def switchover(kube: Kube, owner: dict[str, Any], spec: OmenDBSpec, status: dict[str, Any],
               target: str | None, engines: failover.Engines | None = None
               ) -> tuple[bool, str, dict[str, Any] | None]:
    """Move the primary to ``target`` before the primary's pod is replaced: (done, message, the status
    fragment of the switchover, None when none ran).

    failover.py does the work; a single pod has no replica to hand over to."""
    if spec.replicas < 2:
        return True, "a single pod: nothing to switch over", None
    progress = failover.switchover_step(kube, owner, spec, status, target, engines=engines)
    return progress.done, progress.message, progress.status


def _pod_policy_drift(live_sts: dict[str, Any]) -> bool:
    return (live_sts.get("spec") or {}).get("podManagementPolicy", "OrderedReady") != POD_MANAGEMENT_POLICY


class Day2:
    def __init__(self, kube: Kube, health: HealthCheck,
                 engines: Callable[[Kube, str, str, OmenDBSpec], failover.Engines] | None = None) -> None:
        self.kube = kube
        self.health = health
        self.engines = engines or failover.cluster_engines  # how a switchover reaches the engines

    # ------------------------------------------------------------------ reads
    def active_backup_jobs(self, name: str, namespace: str) -> tuple[str, ...]:
        selector = (f"app.kubernetes.io/instance={name},"
                    f"{L.COMPONENT_LABEL} in ({','.join(BACKUP_COMPONENTS)})")
        jobs = self.kube.list("batch/v1", "Job", namespace=namespace, label_selector=selector)
        running = [j for j in jobs if ((j.get("status") or {}).get("active") or 0) > 0]
        return tuple(sorted(str(j["metadata"]["name"]) for j in running))

    def pods(self, name: str, namespace: str) -> list[dict[str, Any]]:
        selector = f"app.kubernetes.io/instance={name},{L.COMPONENT_LABEL}=database"
        return self.kube.list("v1", "Pod", namespace=namespace, label_selector=selector)

    def claims(self, name: str, namespace: str) -> list[volumes.ClaimView]:
        pattern = re.compile(rf"^(data|wal)-{re.escape(name)}-\d+$")
        out = []
        for pvc in self.kube.list("v1", "PersistentVolumeClaim", namespace=namespace,
                                  label_selector=f"app.kubernetes.io/instance={name}"):
            if pattern.match(pvc["metadata"]["name"]):
                view = volumes.claim_view(pvc)
                if view:
                    out.append(view)
        return out

    def expandable(self, classes: set[str]) -> dict[str, bool]:
        out = {}
        for sc in classes:
            obj = self.kube.get("storage.k8s.io/v1", "StorageClass", sc, None)
            out[sc] = bool(obj and obj.get("allowVolumeExpansion"))
        return out

    # ------------------------------------------------------------------ before the children are built
    def before_build(self, owner: dict[str, Any], spec: OmenDBSpec, previous: dict[str, Any],
                     live_sts: dict[str, Any] | None, now: dt.datetime) -> Before:
        name, namespace = owner["metadata"]["name"], owner["metadata"]["namespace"]
        jobs = self.active_backup_jobs(name, namespace) if live_sts else ()
        state = previous.get("upgrade")
        live_image = _image(live_sts)

        watched_ok, watched_healthy, unreachable = True, True, None
        if state and state.get("pod") and live_sts:
            pod = self.kube.get("v1", "Pod", state["pod"], namespace)
            revision = rollout.update_revision(live_sts)
            view = rollout.pod_view(pod) if pod else None
            ready = bool(view and view.ready and not view.terminating and view.revision == revision)
            answer = self.health(pod, name, spec) if ready and pod else False
            watched_healthy = answer is True
            # Unreachable (None): the operator cannot check, which says nothing about the new version, so
            # it waits (with a message) instead of rolling back.
            watched_ok = ready and answer is not False
            if ready and answer is None:
                unreachable = (f"cannot reach pod {state['pod']} at its IP for /health: run the operator in "
                               "the cluster (docs/operations/upgrades.md)")

        backup_phase, backup_error = None, ""
        if state and state.get("backupName") and state.get("phase") in upgrade.ACTIVE:
            backup = self.kube.get(L.API_VERSION, BACKUP_KIND, state["backupName"], namespace)
            if backup is not None:
                st = backup.get("status") or {}
                backup_phase, backup_error = str(st.get("phase") or "Pending"), str(st.get("error") or "")

        plan = upgrade.plan_upgrade(upgrade.UpgradeInputs(
            name=name, spec_image=spec.container_image, spec_version=spec.image or spec.version,
            live_image=live_image, current_version=previous.get("currentVersion"), previous=state, now=now,
            hibernated=spec.hibernate, backup_wanted=spec.upgrade.backup_before_upgrade and spec.backup.enabled,
            backup_phase=backup_phase, backup_error=backup_error, active_backup_jobs=jobs,
            watched_ok=watched_ok, timeout_seconds=spec.upgrade.timeout_seconds))
        if plan.create_backup:
            self._create_backup(owner, plan.create_backup)

        build = spec if plan.image == spec.container_image else replace(spec, image=plan.image)
        build = hibernation.spec_for_children(build)

        claims = self.claims(name, namespace) if live_sts else []
        vplan = volumes.plan_volumes(
            {"data": spec.storage.data.size, "wal": spec.storage.wal.size}, claims,
            self.expandable({c.storage_class for c in claims if c.storage_class}),
            volumes.template_sizes(live_sts), jobs, previous.get("storage"))
        before = Before(spec=build, replicas_override=hibernation.replicas_override(spec), upgrade=plan,
                        volumes=vplan, active_backup_jobs=jobs, watched_healthy=watched_healthy,
                        events=list(plan.events), unreachable=unreachable)
        self._expand(owner, live_sts, vplan, previous.get("storage"), before)
        if state and state.get("phase") in upgrade.ACTIVE or (plan.state or {}).get("phase") in upgrade.ACTIVE:
            before.requeue = min(before.requeue or ACTIVE_REQUEUE_SECONDS, ACTIVE_REQUEUE_SECONDS)
        return before

    def _create_backup(self, owner: dict[str, Any], backup: str) -> None:
        name = owner["metadata"]["name"]
        manifest = {
            "apiVersion": L.API_VERSION, "kind": BACKUP_KIND,
            "metadata": L.metadata(owner, backup, "backup"),
            "spec": {"cluster": {"name": name}, "type": "full"},
        }
        self.kube.apply(manifest)

    def _expand(self, owner: dict[str, Any], live_sts: dict[str, Any] | None, plan: volumes.VolumePlan,
                previous: dict[str, Any] | None, before: Before) -> None:
        namespace = owner["metadata"]["namespace"]
        res = self.kube.resource("v1", "PersistentVolumeClaim")
        for claim, size in plan.patches:
            res.patch(body={"spec": {"resources": {"requests": {"storage": size}}}}, name=claim,
                      namespace=namespace, content_type="application/merge-patch+json")
            metrics.API_WRITES.labels(kind="PersistentVolumeClaim", verb="patch").inc()
            before.events.append(("Normal", "VolumeExpansion", f"claim {claim} requested to grow to {size}"))
        if plan.status and plan.status.get("phase") == volumes.BLOCKED and (previous or {}).get(
                "message") != plan.status.get("message"):
            before.events.append(("Warning", "VolumeExpansionBlocked", str(plan.status["message"])))
        if plan.status and plan.status.get("phase") in (volumes.WAITING, volumes.EXPANDING):
            before.requeue = VOLUME_REQUEUE_SECONDS  # claims' capacity and Jobs ending are not watched
        if plan.waiting:
            before.upgrade.waiting = before.upgrade.waiting or plan.waiting
        if live_sts and live_sts["metadata"].get("deletionTimestamp"):
            before.skip_statefulset, before.requeue = True, 2.0
        elif live_sts and (plan.recreate_statefulset or _pod_policy_drift(live_sts)):
            # Claim templates and the pod management policy (older operators made OrderedReady StatefulSets)
            # are immutable: delete the StatefulSet but not its pods (they are adopted by the new one, whose
            # template is the same) and apply it again once it is gone.
            try:
                self.kube.resource("apps/v1", "StatefulSet").delete(
                    name=live_sts["metadata"]["name"], namespace=namespace, body={"propagationPolicy": "Orphan"})
                metrics.API_WRITES.labels(kind="StatefulSet", verb="delete").inc()
            except NotFoundError:
                pass
            why = ("new pods get the new volume sizes" if plan.recreate_statefulset
                   else f"all pods start at once (podManagementPolicy {POD_MANAGEMENT_POLICY})")
            before.events.append(("Normal", "StatefulSetRecreated", f"recreating the StatefulSet (pods kept) so {why}"))
            before.skip_statefulset, before.requeue = True, 2.0

    # ------------------------------------------------------------------ after the children are applied
    def after_apply(self, owner: dict[str, Any], spec: OmenDBSpec, previous: dict[str, Any], before: Before,
                    now: dt.datetime) -> After:
        name, namespace = owner["metadata"]["name"], owner["metadata"]["namespace"]
        plan = before.upgrade
        sts = None if before.skip_statefulset else self.kube.get("apps/v1", "StatefulSet", name, namespace)
        live_replicas = int(((sts or {}).get("status") or {}).get("replicas") or 0)
        after = After(upgrade_state=plan.state, waiting=plan.waiting or before.volumes.waiting,
                      hibernation=hibernation.hibernation_state(spec, live_replicas), requeue=before.requeue)
        if sts is None or spec.hibernate:
            return after
        pods = self.pods(name, namespace)
        views = [rollout.pod_view(p) for p in pods]
        revision = rollout.update_revision(sts)
        primary = previous.get("primaryPod") or L.Names(name).pod(0)
        state = plan.state or {}
        step = rollout.plan_rollout(revision, views, spec.replicas, primary, state.get("pod"),
                                    before.watched_healthy)
        acts = upgrade.plan_after_rollout(plan.state, step, revision, before.spec.container_image,
                                          plan.version, now, plan.rollout_allowed, before.active_backup_jobs)
        after.events += acts.events
        after.upgrade_state = acts.state
        after.waiting = acts.waiting or after.waiting
        if before.unreachable and acts.state and acts.state.get("phase") in (upgrade.ROLLING_OUT,
                                                                             upgrade.ROLLING_BACK):
            acts.state["message"] = after.waiting = before.unreachable
        delete = acts.delete_pod
        if acts.switchover_pod and acts.state is not None:
            meta = owner["metadata"]
            done, message, after.replication = switchover(
                self.kube, owner, spec, previous, acts.switchover_target,
                self.engines(self.kube, meta["name"], meta["namespace"], spec))
            if done and after.replication is not None:
                # The pod goes on the next reconcile, as a replica: by then the ConfigMap's primary-pod key
                # (read by the pod at start) names the new primary, so it cannot come back as a primary.
                acts.state["message"] = f"switched over from {acts.switchover_pod} ({message}); replacing it next"
            elif done:
                delete = acts.switchover_pod
                acts.state.update(pod=delete, podReplacedAt=timestamp(now),
                                  message=f"replacing pod {delete} (the primary last; {message or 'switched over'})")
                after.events.append(("Normal", "ReplacingPod", str(acts.state["message"])))
            else:
                after.waiting = message or after.waiting
        if delete:
            pod = next((p for p in pods if p["metadata"]["name"] == delete), None)
            if pod is not None:
                self._delete_pod(pod)
        if (after.upgrade_state or {}).get("phase") in upgrade.ACTIVE:
            after.requeue = min(after.requeue or ACTIVE_REQUEUE_SECONDS, ACTIVE_REQUEUE_SECONDS)
        return after

    def _delete_pod(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        try:
            # The uid precondition: never delete a pod that was already replaced by a newer one.
            self.kube.resource("v1", "Pod").delete(name=meta["name"], namespace=meta["namespace"],
                                                   body={"preconditions": {"uid": meta["uid"]}})
            metrics.API_WRITES.labels(kind="Pod", verb="delete").inc()
            log.info("deleted pod %s/%s for the rollout", meta["namespace"], meta["name"])
        except NotFoundError:
            pass


def _image(sts: dict[str, Any] | None) -> str | None:
    """The image the operator last put in the StatefulSet (its annotation; the template's for a StatefulSet
    made before the annotation existed)."""
    if not sts:
        return None
    from omendb_operator.specs.statefulset import CONTAINER_NAME, IMAGE_ANNOTATION

    annotated = (sts["metadata"].get("annotations") or {}).get(IMAGE_ANNOTATION)
    if annotated:
        return str(annotated)
    for c in sts.get("spec", {}).get("template", {}).get("spec", {}).get("containers") or []:
        if c.get("name") == CONTAINER_NAME:
            return str(c.get("image"))
    return None
