"""Backups, restores and bootstrap of one OmenDB, planned together: the collision rules between them.

Everything that can touch one OmenDB's data (OmenDBBackups, OmenDBRestores, spec.bootstrap) is decided
in that OmenDB's reconcile, which one worker runs at a time: a restore waits while a backup runs; no
backup starts, scheduled or on demand, while a restore or bootstrap runs; restores run one at a time,
oldest first. Each is then a plain check on one observation. The steps of each kind are the pure
planners in backups.py, restores.py and bootstrap.py.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, replace
from typing import Any

from omendb_operator import labels as L
from omendb_operator.plans import backups, bootstrap, restores
from omendb_operator.plans.plan import Plan, StatusWrite, merge_patch
from omendb_operator.plans.status import keep_finished
from omendb_operator.plans.world import World, component_of, pod_ready
from omendb_operator.spec import OmenDBSpec
from omendb_operator.specs import jobs

# Two facts about backup Jobs, each defined here only:
# - the backup volume is locked by a Job (a backup, scheduled, on demand or before an upgrade, or a
#   cleanup) that has not finished: also one created a moment ago whose pod has not started, so two
#   operations on the volume never both start in that gap;
# - a backup is reading the database pods while its Job has an active pod: an upgrade, a volume
#   expansion or a scale-down waits for it (older operators labelled the CronJobs' Jobs per kind).
LOCKS_BACKUP_VOLUME = ("backup", "backup-cleanup")
READS_DATABASE = ("backup", "backup-full", "backup-incremental")
REQUEUE_SECONDS = 5.0
OWNER_EVENTS = ("RestoreScaleDown", "RestoreSucceeded", "RestoreFailed", "RestoreFailing")


def backup_volume_lock(world: World) -> str | None:
    """The Job holding the backup volume, if any (the first by name)."""
    return next((str(j["metadata"]["name"]) for j in world.component("Job", *LOCKS_BACKUP_VOLUME)
                 if jobs.job_running(j)), None)


def backups_reading_pods(world: World) -> tuple[str, ...]:
    """Names of the backup Jobs with an active pod, sorted."""
    return tuple(sorted(str(j["metadata"]["name"]) for j in world.component("Job", *READS_DATABASE)
                        if ((j.get("status") or {}).get("active") or 0) > 0))


@dataclass
class Outcome:
    """What the OmenDB's plan needs from the operations: pod count, CronJob suspension, status."""

    replicas_override: int | None = None
    suspend_backups: bool = False
    restore_marker: dict[str, Any] | None = None  # status.restore
    bootstrap: dict[str, Any] | None = None  # status.bootstrap
    last_backup: dict[str, Any] = field(default_factory=dict)
    backup_failure: str | None = None
    requeue_after: float | None = None  # something is in progress: look again soon


def _status(plan: Plan, obj: dict[str, Any], new: dict[str, Any]) -> None:
    old = obj.get("status") or {}
    if old != new:
        meta = obj["metadata"]
        plan.statuses.append(StatusWrite(obj["apiVersion"], obj["kind"], meta["name"], meta["namespace"],
                                         merge_patch(old, new)))


def _keep_finished(plan: Plan, obj: dict[str, Any], now: dt.datetime) -> None:
    """A finished OmenDBBackup/OmenDBRestore never runs again; its status only follows an edited spec's
    generation and gains the kstatus conditions (status.keep_finished), written only when that changes."""
    _status(plan, obj, keep_finished(dict(obj.get("status") or {}), int(obj["metadata"].get("generation") or 0),
                                     now))


def plan_orphans(plan: Plan, world: World, now: dt.datetime) -> None:
    """Fail the unfinished OmenDBBackups/OmenDBRestores of an OmenDB that does not exist."""
    ctx = backups.BackupContext(world.name, world.namespace, exists=False, spec=None)
    for backup in world.backups:
        if (backup.get("status") or {}).get("phase") in backups.FINISHED:
            continue
        bplan = backups.plan_backup(backup, ctx, None, None, [], now)
        _status(plan, backup, bplan.status)
        plan.events_on(backup, bplan.events)
    view = restores.ClusterView(world.name, world.namespace, exists=False)
    for restore in world.restores:
        if (restore.get("status") or {}).get("phase") in restores.FINISHED:
            continue
        rplan = restores.plan_restore(restore, view, None, None, {}, {}, None, None, now)
        _status(plan, restore, rplan.status)
        plan.events_on(restore, rplan.events)


def plan_operations(plan: Plan, world: World, spec: OmenDBSpec, owner: dict[str, Any],
                    now: dt.datetime) -> Outcome:
    name = world.name
    names = world.names
    previous = world.status
    out = Outcome()
    # backup_tool Jobs run the version the database runs, not the one the spec asks for: an upgrade's
    # backup must not depend on the new image (a typo in spec.version would block the very backup that
    # protects the upgrade), and a backup or restore reads and writes the running version's files.
    running = world.running_image
    if running and running != spec.container_image:
        spec = replace(spec, image=running)
    all_jobs = {j["metadata"]["name"]: j for j in world.items("Job")}
    pods_by_job = world.pods_by_job()
    backup_jobs = world.component("Job", "backup")
    lock_holder = backup_volume_lock(world)
    claims = set(world.children.get("PersistentVolumeClaim", {}))

    # ---- bootstrap ---------------------------------------------------------------------------------
    boot_running = False
    if spec.bootstrap is not None or previous.get("bootstrap"):
        source_volume = spec.bootstrap is not None and spec.bootstrap.object_store is None and world.claims.get(
            L.Names(spec.bootstrap.source_cluster).backup_volume) is not None
        job_name = jobs.job_name(bootstrap.job_base(name), "restore-0")
        boot = bootstrap.plan_bootstrap(owner, spec, previous, source_volume, claims, all_jobs.get(job_name),
                                        pods_by_job.get(job_name, []), now)
        plan.creates += boot.create
        plan.events_on(owner, boot.events)
        out.bootstrap = boot.status
        if boot.running:
            boot_running = True
            out.replicas_override = 0
            out.suspend_backups = True
            out.requeue_after = REQUEUE_SECONDS

    # ---- restores ----------------------------------------------------------------------------------
    unfinished = [r for r in world.restores if (r.get("status") or {}).get("phase") not in restores.FINISHED]
    for restore in world.restores:
        if restore not in unfinished:
            _keep_finished(plan, restore, now)
    marker = (previous.get("restore") or {}).get("name")
    holder = next((r["metadata"]["name"] for r in unfinished if r["metadata"]["name"] == marker), None) or \
        next((r["metadata"]["name"] for r in unfinished if (r.get("status") or {}).get("step")), None)
    if unfinished:
        db_pods = world.database_pods()
        view = restores.ClusterView(
            name, world.namespace, exists=True, spec=spec, owner=owner,
            # With spec.backup.objectStore the backups are in the bucket: there is no volume to wait for.
            backups_volume=(spec.backup.object_store is not None or names.backup_volume in claims
                            or world.claims.get(names.backup_volume) is not None),
            backup_running=lock_holder, bootstrapping=boot_running,
            statefulset_replicas=int(((world.statefulset or {}).get("status") or {}).get("replicas") or 0),
            database_pods=len(db_pods), ready_pods=len([p for p in db_pods if pod_ready(p)]),
            ordinals=world.claim_ordinals())
        restore_jobs: dict[str, dict[str, dict[str, Any]]] = {}
        for job_name, job in all_jobs.items():
            owner_restore = (job["metadata"].get("labels") or {}).get(jobs.RESTORE_LABEL)
            if owner_restore and component_of(job) == jobs.COMPONENT_RESTORE:
                restore_jobs.setdefault(owner_restore, {})[job_name] = job
        stats, stats_error = world.restore_stats
        earlier: str | None = None
        for restore in unfinished:
            rname = restore["metadata"]["name"]
            verifying = (restore.get("status") or {}).get("step") == restores.VERIFY
            rplan = restores.plan_restore(restore, view, holder, earlier, restore_jobs.get(rname, {}),
                                          pods_by_job, stats if verifying else None,
                                          stats_error if verifying else None, now)
            plan.creates += rplan.create_jobs
            _status(plan, restore, rplan.status)
            plan.events_on(restore, rplan.events)
            if rplan.events and rplan.events[0][1] in OWNER_EVENTS:
                plan.events_on(owner, [(t, r, f"{restore['kind']} {rname}: {m}") for t, r, m in rplan.events])
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
            and all(r["metadata"]["name"] != marker for r in world.restores)):
        message = (f"OmenDBRestore {marker} was deleted at step {marker_step}: the pods stay at 0 (the "
                   f"previous data is in {jobs.SET_ASIDE}/ of the volumes); apply a new OmenDBRestore")
        if (previous.get("restore") or {}).get("message") != message:
            plan.event(owner, "Warning", "RestoreDeleted", message)
        out.restore_marker = {"name": marker, "step": marker_step, "message": message}
        out.replicas_override, out.suspend_backups = 0, True
        holder = marker

    # ---- backups -----------------------------------------------------------------------------------
    blocked = None
    if holder:
        blocked = f"restore {holder} of {name} is in progress"
    elif boot_running:
        blocked = f"OmenDB {name} is bootstrapping from a backup"
    elif lock_holder:
        blocked = f"backup Job {lock_holder} of {name} is running"
    for backup in world.backups:
        if (backup.get("status") or {}).get("phase") in backups.FINISHED:
            _keep_finished(plan, backup, now)
            continue
        ctx = backups.BackupContext(name, world.namespace, exists=True, spec=spec, blocked_by=blocked)
        job_name = jobs.job_name(backup["metadata"]["name"], "backup")
        bplan = backups.plan_backup(backup, ctx, owner, all_jobs.get(job_name), pods_by_job.get(job_name, []),
                                    now)
        if bplan.create_job is not None:
            plan.creates.append(bplan.create_job)
            blocked = f"backup Job {bplan.create_job['metadata']['name']} of {name} is running"
            all_jobs[job_name] = bplan.create_job
            backup_jobs.append(bplan.create_job)
        _status(plan, backup, bplan.status)
        plan.events_on(backup, bplan.events)
        if bplan.status.get("phase") not in backups.FINISHED:
            out.requeue_after = out.requeue_after or REQUEUE_SECONDS

    out.last_backup = backups.last_backup(backup_jobs, pods_by_job)
    out.backup_failure = backups.failed_backup(backup_jobs)
    return out
