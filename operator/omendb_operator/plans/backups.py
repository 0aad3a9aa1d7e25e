"""OmenDBBackup: an on-demand backup as a Job, its phase and result in the resource's status.

``plan_backup`` is pure (one OmenDBBackup + what the reconcile saw -> Job to create + new status + events);
``reconcile_backups`` (operations.py calls it from the OmenDB's reconcile, so everything one OmenDB does
is decided by one worker at a time) reads the cluster, runs the plans in creation order and writes.

Phases: Pending (waiting: another backup Job of the cluster is running, a restore or bootstrap is in
progress; the Ready condition says which) -> Running (the Job exists) -> Succeeded | Failed. A backup of
an OmenDB that does not exist or has backups disabled (no backup volume) fails at once, saying so.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from omendb.backup.contract import BackupResult, UnreadableResult
from omendb_operator.plans.status import keep_finished, kstatus_conditions, set_condition
from omendb_operator.plans.stuck import find_stuck, summary
from omendb_operator.spec import OmenDBSpec
from omendb_operator.specs import jobs
from omendb_operator.times import timestamp

KIND = "OmenDBBackup"
PLURAL = "omendbbackups"
PENDING, RUNNING, SUCCEEDED, FAILED = "Pending", "Running", "Succeeded", "Failed"
FINISHED = (SUCCEEDED, FAILED)


@dataclass(frozen=True)
class BackupContext:
    """What the reconcile saw about the cluster the backups are for."""

    cluster: str
    namespace: str
    exists: bool
    spec: OmenDBSpec | None
    blocked_by: str | None = None  # why no backup may start now (a restore, bootstrap, another backup)
    spec_error: str | None = None


@dataclass
class BackupPlan:
    status: dict[str, Any]
    create_job: dict[str, Any] | None = None
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (type, reason, message)


def _ready(prev: dict[str, Any], status: str, reason: str, message: str, gen: int,
           now: dt.datetime) -> list[dict[str, Any]]:
    """Ready, and the kstatus pair: Reconciling while Pending or Running, Stalled once Failed (kstatus
    then says Failed, as Flux and Helm should: a failed backup never succeeds by waiting)."""
    conditions = list(prev.get("conditions") or [])
    stalled = (reason, message) if status == "False" and reason not in ("Waiting", "Running") else None
    # The phase leads Reconciling's message, as Flux and Argo CD show it alone.
    reconciling = (reason, f"{PENDING if reason == 'Waiting' else RUNNING}: {message}") \
        if not stalled and status != "True" else None
    return [set_condition(conditions, "Ready", status, reason, message, gen, now),
            *kstatus_conditions(conditions, stalled, reconciling, gen, now, ("Finished", message))]


def plan_backup(backup: dict[str, Any], ctx: BackupContext, owner: dict[str, Any] | None,
                job: dict[str, Any] | None, pods: list[dict[str, Any]], now: dt.datetime) -> BackupPlan:
    """The next step of one OmenDBBackup. ``owner`` is the OmenDB (for building the Job), ``job`` its Job if
    it exists and ``pods`` that Job's pods (their termination messages carry the result)."""
    prev = dict(backup.get("status") or {})
    gen = int(backup["metadata"].get("generation") or 0)
    name = backup["metadata"]["name"]
    status: dict[str, Any] = {**prev, "observedGeneration": gen}
    if prev.get("phase") in FINISHED:
        return BackupPlan(keep_finished(prev, gen, now))

    def fail(reason: str, error: str) -> BackupPlan:
        status.update(phase=FAILED, error=error, completedAt=timestamp(now),
                      conditions=_ready(prev, "False", reason, error, gen, now))
        return BackupPlan(status, events=[("Warning", "BackupFailed", error)])

    if job is None:
        if not ctx.exists:
            return fail("ClusterNotFound", f"OmenDB {ctx.cluster} does not exist in namespace {ctx.namespace}; "
                                           f"fix spec.cluster.name and apply a new OmenDBBackup")
        if ctx.spec is None:
            return fail("InvalidCluster", f"OmenDB {ctx.cluster} has an invalid spec ({ctx.spec_error}); fix it "
                                          f"and apply a new OmenDBBackup")
        if not ctx.spec.backup.enabled:
            return fail("BackupsDisabled", f"OmenDB {ctx.cluster} has backups disabled (spec.backup.enabled: "
                                           f"false), so it has no backup volume; set spec.backup.enabled: true "
                                           f"and apply a new OmenDBBackup")
        if prev.get("phase") == RUNNING:
            return fail("JobLost", f"the backup Job {jobs.job_name(name, 'backup')} disappeared before it "
                                   f"finished; apply a new OmenDBBackup")
        if ctx.blocked_by:
            message = f"waiting: {ctx.blocked_by}"
            status.update(phase=PENDING, conditions=_ready(prev, "False", "Waiting", message, gen, now))
            events = [] if prev.get("phase") == PENDING and _same_reason(prev, message) else [
                ("Normal", "BackupWaiting", message)]
            return BackupPlan(status, events=events)
        assert owner is not None
        manifest = jobs.backup_job(owner, ctx.spec, backup)
        message = f"Job {manifest['metadata']['name']} takes a {(backup.get('spec') or {}).get('type') or 'full'} " \
                  f"backup of {ctx.cluster}"
        status.update(phase=RUNNING, startedAt=timestamp(now),
                      conditions=_ready(prev, "False", "Running", message, gen, now))
        status.pop("error", None)
        return BackupPlan(status, create_job=manifest, events=[("Normal", "BackupStarted", message)])

    outcome = jobs.job_finished(job)
    ok_message, failed_message = jobs.termination_message(pods)
    status.setdefault("startedAt", (job.get("status") or {}).get("startTime") or timestamp(now))
    if outcome is None:
        stuck = find_stuck(pods, [job], now)
        if stuck:  # a pod that cannot start never fails by itself: say so now rather than wait for ever
            message = f"{summary(stuck)}; the backup waits until it is fixed (or delete this OmenDBBackup)"
            status.update(phase=RUNNING, conditions=_ready(prev, "False", stuck[0].reason, message, gen, now))
            events = [] if _same_reason(prev, message) else [("Warning", "BackupStuck", message)]
            return BackupPlan(status, events=events)
        message = f"Job {job['metadata']['name']} is running"
        status.update(phase=RUNNING, conditions=_ready(prev, "False", "Running", message, gen, now))
        return BackupPlan(status)
    completed = (job.get("status") or {}).get("completionTime") or timestamp(now)
    if outcome == "Failed":
        error = jobs.failure_text(job, failed_message)
        status.update(phase=FAILED, error=error, completedAt=timestamp(now),
                      conditions=_ready(prev, "False", "Failed", error, gen, now))
        return BackupPlan(status, events=[("Warning", "BackupFailed", f"Job {job['metadata']['name']}: {error}")])
    result = jobs.backup_result(ok_message)
    status.update(phase=SUCCEEDED, completedAt=completed)
    if isinstance(result, BackupResult):
        status["backupId"] = result.backup_id
        status["sizeBytes"] = result.size_bytes
        message = f"backup {status['backupId']} ({result.type}, LSN {result.start_lsn}.." \
                  f"{result.end_lsn}, {result.records} records, {status['sizeBytes']} bytes)"
        if result.notice:
            message += f"; {result.notice}"
    elif isinstance(result, UnreadableResult):  # the backup exists, its id is in `backup_tool list`
        message = f"Job {job['metadata']['name']} succeeded but its result cannot be read ({result.problem}); " \
                  f"the backup is the newest in the backup volume"
    else:  # the Job's pod is gone (deleted by hand): the backup exists, its id is in `backup_tool list`
        message = f"Job {job['metadata']['name']} succeeded but its result is gone (the pod was deleted); " \
                  f"the backup is the newest in the backup volume"
    status.update(conditions=_ready(prev, "True", "Succeeded", message, gen, now))
    return BackupPlan(status, events=[("Normal", "BackupSucceeded", message)])


def _same_reason(prev: dict[str, Any], message: str) -> bool:
    return any(c.get("type") == "Ready" and c.get("message") == message for c in prev.get("conditions") or [])


def for_cluster(items: list[dict[str, Any]], cluster: str) -> list[dict[str, Any]]:
    """The resources (OmenDBBackups or OmenDBRestores) naming ``cluster``, oldest first."""
    mine = [i for i in items if ((i.get("spec") or {}).get("cluster") or {}).get("name") == cluster]
    return sorted(mine, key=lambda i: (i["metadata"].get("creationTimestamp") or "", i["metadata"]["name"]))


def last_backup(backup_jobs: list[dict[str, Any]], pods_by_job: dict[str, list[dict[str, Any]]]
                ) -> dict[str, Any]:
    """status.lastBackup from the backup Jobs (scheduled and on demand): the newest succeeded one's id,
    type, time and size, and the time of the newest succeeded full and incremental backups."""
    out: dict[str, Any] = {}
    newest = ""
    for job in backup_jobs:
        if jobs.job_finished(job) != "Complete":
            continue
        when = str((job.get("status") or {}).get("completionTime") or "")
        kind = (job["metadata"].get("labels") or {}).get("omendb.io/backup-type", "")
        if kind in ("full", "incremental") and when > str(out.get(kind, "")):
            out[kind] = when
        if when > newest:
            result = jobs.backup_result(jobs.termination_message(pods_by_job.get(job["metadata"]["name"], []))[0])
            if isinstance(result, BackupResult):
                newest = when
                out.update(id=result.backup_id, type=result.type or kind, time=when, sizeBytes=result.size_bytes,
                           job=job["metadata"]["name"])
    return out


def failed_backup(backup_jobs: list[dict[str, Any]]) -> str | None:
    """When the newest finished scheduled backup Job (from a CronJob) failed: which and why, else None."""
    finished = []
    for job in backup_jobs:
        refs = job["metadata"].get("ownerReferences") or []
        outcome = jobs.job_finished(job)
        if outcome and any(r.get("kind") == "CronJob" for r in refs):
            st = job.get("status") or {}
            finished.append((str(st.get("completionTime") or st.get("startTime") or ""), outcome, job))
    if not finished:
        return None
    _, outcome, job = max(finished, key=lambda f: f[0])
    if outcome != "Failed":
        return None
    return f"the last scheduled backup Job {job['metadata']['name']} failed ({jobs.failure_text(job, None)})"
