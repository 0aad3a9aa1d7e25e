"""The I/O shell of backups, restores and bootstrap, run from the OmenDB's reconcile.

Everything that can touch one OmenDB's data (OmenDBBackups, OmenDBRestores, spec.bootstrap) is decided
in that OmenDB's reconcile, which one worker runs at a time: the collision rules (a restore waits while a
backup runs; no backup starts, scheduled or on demand, while a restore or bootstrap runs; restores run
one at a time, oldest first) are then plain checks on one consistent set of reads. The decisions are the
pure planners in backups.py, restores.py and bootstrap.py; this module reads, calls them and writes.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import ssl
from dataclasses import dataclass, field
from typing import Any

import httpx

from omendb_operator import labels as L
from omendb_operator.controller.kube import Kube
from omendb_operator.plans import backups, bootstrap, restores
from omendb_operator.spec import OmenDBSpec
from omendb_operator.specs import jobs
from omendb_operator.specs.secrets import PASSWORD_KEY, USERNAME_KEY, decode_secret_data

log = logging.getLogger(__name__)

COMPONENTS_THAT_LOCK_BACKUPS = ("backup", "backup-cleanup")  # Jobs holding the backup volume's lock
REQUEUE_SECONDS = 5.0


@dataclass
class OpsOutcome:
    """What the OmenDB's reconcile needs from the operations: pod count, CronJob suspension, status."""

    replicas_override: int | None = None
    suspend_backups: bool = False
    restore_marker: dict[str, Any] | None = None  # status.restore
    bootstrap: dict[str, Any] | None = None  # status.bootstrap
    last_backup: dict[str, Any] = field(default_factory=dict)
    backup_failure: str | None = None
    requeue_after: float | None = None  # something is in progress: look again soon


def _component(obj: dict[str, Any]) -> str:
    return str((obj["metadata"].get("labels") or {}).get(L.COMPONENT_LABEL, ""))


def _ready(pod: dict[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


def status_merge_patch(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    patch = dict(new)
    for key in old:
        if key not in new:
            patch[key] = None
    return patch


def fetch_stats(kube: Kube, name: str, namespace: str, spec: OmenDBSpec) -> dict[str, Any]:
    """GET /v1/stats of the primary, as the generated admin user, trusting NAME-ca (or the user's CA)."""
    names = L.Names(name)
    scheme = "https" if spec.tls.enabled else "http"
    url = f"{scheme}://{names.primary_service}.{namespace}.svc:{L.API_PORT}/v1/stats"
    verify: ssl.SSLContext | bool = True
    if spec.tls.enabled:
        secret = names.ca if spec.tls.generate else str(spec.tls.secret_name)
        ca = decode_secret_data(kube.get("v1", "Secret", secret, namespace)).get("ca.crt")
        verify = ssl.create_default_context(cadata=ca) if ca else ssl.create_default_context()
    auth = None
    if spec.auth.enabled:
        users = decode_secret_data(kube.get("v1", "Secret", names.users, namespace))
        auth = (users.get(USERNAME_KEY, ""), users.get(PASSWORD_KEY, ""))
    response = httpx.get(url, auth=auth, verify=verify, timeout=10.0)
    response.raise_for_status()
    value = response.json()
    if not isinstance(value, dict):
        raise ValueError(f"{url} answered {value!r}")
    return value


class Operations:
    def __init__(self, kube: Kube) -> None:
        self.kube = kube
        # Replaced in tests (no database is reachable from there).
        self.stats = fetch_stats

    # ---- writes ------------------------------------------------------------------------------------

    def _create(self, manifest: dict[str, Any]) -> None:
        meta = manifest["metadata"]
        if self.kube.get(manifest["apiVersion"], manifest["kind"], meta["name"], meta["namespace"]) is None:
            self.kube.apply(manifest)

    def _patch(self, kind: str, obj: dict[str, Any], new: dict[str, Any]) -> None:
        old = obj.get("status") or {}
        if old != new:
            self.kube.patch_status(L.API_VERSION, kind, obj["metadata"]["name"], obj["metadata"]["namespace"],
                                   status_merge_patch(old, new))

    def _events(self, obj: dict[str, Any], events: list[tuple[str, str, str]],
                also: dict[str, Any] | None = None) -> None:
        for type_, reason, message in events:
            self.kube.event(obj, type_, reason, message)
            if also is not None:
                self.kube.event(also, type_, reason, f"{obj['kind']} {obj['metadata']['name']}: {message}")

    def _list(self, kind: str, namespace: str) -> list[dict[str, Any]]:
        items = self.kube.list(L.API_VERSION, kind, namespace=namespace)
        for item in items:
            item.setdefault("apiVersion", L.API_VERSION)
            item.setdefault("kind", kind)
        return items

    # ---- the OmenDB is gone --------------------------------------------------------------------------

    def orphans(self, namespace: str, name: str, now: dt.datetime) -> None:
        """Fail the unfinished OmenDBBackups/OmenDBRestores of an OmenDB that does not exist."""
        ctx = backups.BackupContext(name, namespace, exists=False, spec=None)
        for backup in backups.for_cluster(self._list(backups.KIND, namespace), name):
            if (backup.get("status") or {}).get("phase") in backups.FINISHED:
                continue
            plan = backups.plan_backup(backup, ctx, None, None, [], now)
            self._patch(backups.KIND, backup, plan.status)
            self._events(backup, plan.events)
        view = restores.ClusterView(name, namespace, exists=False)
        for restore in backups.for_cluster(self._list(restores.KIND, namespace), name):
            if (restore.get("status") or {}).get("phase") in restores.FINISHED:
                continue
            rplan = restores.plan_restore(restore, view, None, None, {}, {}, None, None, now)
            self._patch(restores.KIND, restore, rplan.status)
            self._events(restore, rplan.events)

    # ---- one reconcile -------------------------------------------------------------------------------

    def step(self, owner: dict[str, Any], spec: OmenDBSpec, previous: dict[str, Any],
             now: dt.datetime) -> OpsOutcome:
        name, namespace = owner["metadata"]["name"], owner["metadata"]["namespace"]
        names = L.Names(name)
        out = OpsOutcome()
        selector = f"app.kubernetes.io/instance={name}"
        all_jobs = {j["metadata"]["name"]: j for j in self.kube.list("batch/v1", "Job", namespace, selector)}
        pods = self.kube.list("v1", "Pod", namespace, selector)
        pods_by_job: dict[str, list[dict[str, Any]]] = {}
        for pod in pods:
            job_name = (pod["metadata"].get("labels") or {}).get(jobs.JOB_NAME_LABEL) or \
                (pod["metadata"].get("labels") or {}).get("job-name")
            if job_name:
                pods_by_job.setdefault(job_name, []).append(pod)
        backup_jobs = [j for j in all_jobs.values() if _component(j) == "backup"]
        lock_holder = next((n for n, j in sorted(all_jobs.items())
                            if _component(j) in COMPONENTS_THAT_LOCK_BACKUPS and jobs.job_running(j)), None)
        claims = {c["metadata"]["name"] for c in self.kube.list("v1", "PersistentVolumeClaim", namespace,
                                                                 selector)}

        # ---- bootstrap -----------------------------------------------------------------------------
        boot_running = False
        if spec.bootstrap is not None or previous.get("bootstrap"):
            source_volume = spec.bootstrap is not None and self.kube.get(
                "v1", "PersistentVolumeClaim", L.Names(spec.bootstrap.source_cluster).backup_volume,
                namespace) is not None
            job_name = jobs.job_name(bootstrap.job_base(name), "restore-0")
            boot = bootstrap.plan_bootstrap(owner, spec, previous, source_volume, claims, all_jobs.get(job_name),
                                            pods_by_job.get(job_name, []), now)
            for manifest in boot.create:
                self._create(manifest)
            self._events(owner, boot.events)
            out.bootstrap = boot.status
            if boot.running:
                boot_running = True
                out.replicas_override = 0
                out.suspend_backups = True
                out.requeue_after = REQUEUE_SECONDS

        # ---- restores --------------------------------------------------------------------------------
        all_restores = backups.for_cluster(self._list(restores.KIND, namespace), name)
        unfinished = [r for r in all_restores if (r.get("status") or {}).get("phase") not in restores.FINISHED]
        marker = (previous.get("restore") or {}).get("name")
        holder = next((r["metadata"]["name"] for r in unfinished if r["metadata"]["name"] == marker), None) or \
            next((r["metadata"]["name"] for r in unfinished if (r.get("status") or {}).get("step")), None)
        if unfinished:
            sts = self.kube.get("apps/v1", "StatefulSet", names.statefulset, namespace) or {}
            db_pods = [p for p in pods if _component(p) == "database"]
            ordinals = {0}
            for claim in claims:
                m = re.fullmatch(rf"data-{re.escape(name)}-(\d+)", claim)
                if m:
                    ordinals.add(int(m.group(1)))
            view = restores.ClusterView(
                name, namespace, exists=True, spec=spec, owner=owner,
                backups_volume=names.backup_volume in claims or self.kube.get(
                    "v1", "PersistentVolumeClaim", names.backup_volume, namespace) is not None,
                backup_running=lock_holder, bootstrapping=boot_running,
                statefulset_replicas=int((sts.get("status") or {}).get("replicas") or 0),
                database_pods=len(db_pods), ready_pods=len([p for p in db_pods if _ready(p)]),
                ordinals=tuple(sorted(ordinals)))
            restore_jobs: dict[str, dict[str, dict[str, Any]]] = {}
            for job_name, job in all_jobs.items():
                owner_restore = (job["metadata"].get("labels") or {}).get(jobs.RESTORE_LABEL)
                if owner_restore and _component(job) == jobs.COMPONENT_RESTORE:
                    restore_jobs.setdefault(owner_restore, {})[job_name] = job
            earlier: str | None = None
            for restore in unfinished:
                rname = restore["metadata"]["name"]
                stats = stats_error = None
                if (restore.get("status") or {}).get("step") == restores.VERIFY:
                    try:
                        stats = self.stats(self.kube, name, namespace, spec)
                    except Exception as exc:  # noqa: BLE001 - reported in the status, retried until a timeout
                        stats_error = f"{type(exc).__name__}: {exc}"
                rplan = restores.plan_restore(restore, view, holder, earlier, restore_jobs.get(rname, {}),
                                              pods_by_job, stats, stats_error, now)
                for manifest in rplan.create_jobs:
                    self._create(manifest)
                self._patch(restores.KIND, restore, rplan.status)
                self._events(restore, rplan.events, also=owner if rplan.events and rplan.events[0][1] in (
                    "RestoreScaleDown", "RestoreSucceeded", "RestoreFailed", "RestoreFailing") else None)
                if rplan.holds:
                    holder = rname
                    out.restore_marker = {"name": rname, "step": rplan.status.get("step")}
                    out.suspend_backups = True
                    out.requeue_after = REQUEUE_SECONDS
                    if rplan.replicas_override is not None:
                        out.replicas_override = rplan.replicas_override
                elif holder == rname:
                    holder = None  # finished in this step
                if rplan.status.get("phase") not in restores.FINISHED and earlier is None:
                    earlier = rname

        # A restore deleted while its Jobs had the data moved aside (steps Restore, PutBack): the data
        # directory may hold nothing usable, so the pods stay at 0 until a new OmenDBRestore (which finds
        # the set-aside data and keeps it until it succeeds, or puts it back) takes over.
        marker_step = (previous.get("restore") or {}).get("step")
        if (out.restore_marker is None and marker and marker_step in (restores.RESTORE, restores.PUT_BACK)
                and all(r["metadata"]["name"] != marker for r in all_restores)):
            message = (f"OmenDBRestore {marker} was deleted at step {marker_step}: the pods stay at 0 (the "
                       f"previous data is in {jobs.SET_ASIDE}/ of the volumes); apply a new OmenDBRestore")
            if (previous.get("restore") or {}).get("message") != message:
                self.kube.event(owner, "Warning", "RestoreDeleted", message)
            out.restore_marker = {"name": marker, "step": marker_step, "message": message}
            out.replicas_override, out.suspend_backups = 0, True
            holder = marker

        # ---- backups ---------------------------------------------------------------------------------
        blocked = None
        if holder:
            blocked = f"restore {holder} of {name} is in progress"
        elif boot_running:
            blocked = f"OmenDB {name} is bootstrapping from a backup"
        elif lock_holder:
            blocked = f"backup Job {lock_holder} of {name} is running"
        pending = [b for b in backups.for_cluster(self._list(backups.KIND, namespace), name)
                   if (b.get("status") or {}).get("phase") not in backups.FINISHED]
        for backup in pending:
            ctx = backups.BackupContext(name, namespace, exists=True, spec=spec, blocked_by=blocked)
            job_name = jobs.job_name(backup["metadata"]["name"], "backup")
            plan = backups.plan_backup(backup, ctx, owner, all_jobs.get(job_name), pods_by_job.get(job_name, []), now)
            if plan.create_job is not None:
                self._create(plan.create_job)
                blocked = f"backup Job {plan.create_job['metadata']['name']} of {name} is running"
                all_jobs[job_name] = plan.create_job
                backup_jobs.append(plan.create_job)
            self._patch(backups.KIND, backup, plan.status)
            self._events(backup, plan.events)
            if plan.status.get("phase") not in backups.FINISHED:
                out.requeue_after = out.requeue_after or REQUEUE_SECONDS

        out.last_backup = backups.last_backup(backup_jobs, pods_by_job)
        out.backup_failure = backups.failed_backup(backup_jobs)
        return out
