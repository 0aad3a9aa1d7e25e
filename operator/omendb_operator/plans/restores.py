"""OmenDBRestore: the guide's disaster-recovery procedure as a resumable state machine.

The state lives in the OmenDBRestore's status (``phase``, ``step``, ``stepStartedAt``, results), so an
operator restart resumes where it stopped; the OmenDB's status carries a marker (``status.restore``:
name and step) while one runs. ``plan_restore`` is pure: observations in, the next status, Jobs to create,
the pod-count override and events out. operations.py runs it from the OmenDB's reconcile.

Steps (phase Running unless said):
  (Pending)  wait while another restore of the cluster runs or was created earlier (restores run one at a
             time, oldest first), while a backup Job runs, or while the OmenDB bootstraps.
  ScaleDown  block writes: scheduled backups suspended, the StatefulSet held at 0 pods; wait until no
             database pod is left.
  Restore    one Job per pod: pod 0's sets its data and WAL aside (``.restore-saved/`` in each volume) and
             runs ``backup_tool restore``; every other pod's sets its data aside, so replicas start empty
             and re-seed from the restored primary instead of keeping a divergent timeline.
  ScaleUp    the StatefulSet back at spec.replicas; wait until every pod is Ready.
  Verify     /v1/stats of the primary: its LSN and record count must be what the restore wrote (which
             the restore checked against the backup's manifest or the point-in-time target).
  Discard    delete the set-aside data -> Succeeded.
  PutBack    on any failure after ScaleDown: back at 0 pods, the set-aside data put back in place of
             whatever the restore wrote -> Failed; the cluster then runs on its previous data as before.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from omendb.backup.contract import RestoreResult, UnreadableResult
from omendb_operator import labels as L
from omendb_operator.plans.status import keep_finished, kstatus_conditions, set_condition
from omendb_operator.plans.stuck import find_stuck, summary
from omendb_operator.spec import OmenDBSpec
from omendb_operator.specs import jobs
from omendb_operator.times import parse_time, timestamp

KIND = "OmenDBRestore"
PLURAL = "omendbrestores"
PENDING, RUNNING, SUCCEEDED, FAILED = "Pending", "Running", "Succeeded", "Failed"
FINISHED = (SUCCEEDED, FAILED)
SCALE_DOWN, RESTORE, SCALE_UP, VERIFY, DISCARD, PUT_BACK = (
    "ScaleDown", "Restore", "ScaleUp", "Verify", "Discard", "PutBack")
HOLDS_ZERO = (SCALE_DOWN, RESTORE, PUT_BACK)  # steps during which no database pod may run
MOVING = ("Waiting", SCALE_DOWN, RESTORE, SCALE_UP, VERIFY, DISCARD)  # Ready reasons of a restore at work

READY_TIMEOUT = dt.timedelta(minutes=10)  # ScaleUp: every pod Ready within this, else PutBack
VERIFY_TIMEOUT = dt.timedelta(minutes=2)  # Verify: /v1/stats answers within this, else PutBack


@dataclass(frozen=True)
class ClusterView:
    """What the reconcile saw of the OmenDB a restore is for."""

    name: str
    namespace: str
    exists: bool
    spec: OmenDBSpec | None = None
    owner: dict[str, Any] | None = None
    backups_volume: bool = False  # the PVC NAME-backups exists
    backup_running: str | None = None  # the name of a running backup (or cleanup) Job
    bootstrapping: bool = False
    statefulset_replicas: int = 0  # status.replicas of the StatefulSet
    database_pods: int = 0  # database pods that exist (any phase)
    ready_pods: int = 0
    ordinals: tuple[int, ...] = (0,)  # pods whose volumes the restore handles (data-NAME-i exists)


@dataclass
class RestorePlan:
    status: dict[str, Any]
    create_jobs: list[dict[str, Any]] = field(default_factory=list)
    holds: bool = False  # this restore holds the cluster (marker in the OmenDB status, backups suspended)
    replicas_override: int | None = None
    events: list[tuple[str, str, str]] = field(default_factory=list)


def target_of(restore: dict[str, Any]) -> jobs.RestoreTarget:
    spec = restore.get("spec") or {}
    pit = spec.get("pointInTime") or {}
    return jobs.RestoreTarget(backup_id=str(spec.get("backupId") or "latest"), lsn=pit.get("lsn"),
                              time=pit.get("time"),
                              allow_unkeyed=bool(spec.get("allowUnkeyed", False)))


def job_labels(restore_name: str) -> dict[str, str]:
    return {jobs.RESTORE_LABEL: restore_name}


def expected_jobs(restore: dict[str, Any], view: ClusterView, action: str) -> list[dict[str, Any]]:
    """The Jobs of ``action`` for this restore: for Restore, pod 0 restores and the others set aside."""
    assert view.owner is not None and view.spec is not None
    name = restore["metadata"]["name"]
    out = []
    for ordinal in view.ordinals:
        act = action
        if action == "restore" and ordinal != 0:
            act = "set-aside"
        out.append(jobs.restore_job(view.owner, view.spec, restore, name, act, ordinal, target_of(restore),
                                    job_labels(name)))
    return out


def plan_restore(restore: dict[str, Any], view: ClusterView, holder: str | None, earlier: str | None,
                 live_jobs: dict[str, dict[str, Any]], pods_by_job: dict[str, list[dict[str, Any]]],
                 stats: dict[str, Any] | None, stats_error: str | None, now: dt.datetime) -> RestorePlan:
    """The next step of OmenDBRestore ``restore``. ``holder``: the restore now holding the cluster (None if
    none); ``earlier``: an unfinished restore of the cluster created before this one; ``live_jobs``: this
    restore's Jobs by name; ``stats``: /v1/stats of the primary (read by the shell in step Verify)."""
    prev = dict(restore.get("status") or {})
    meta = restore["metadata"]
    name = meta["name"]
    gen = int(meta.get("generation") or 0)
    status: dict[str, Any] = {**prev, "observedGeneration": gen}
    phase, step = prev.get("phase"), prev.get("step")
    if phase in FINISHED:
        return RestorePlan(keep_finished(prev, gen, now))
    conditions = list(prev.get("conditions") or [])

    def cond(status_: str, reason: str, message: str) -> list[dict[str, Any]]:
        """Ready and the kstatus pair: Reconciling while waiting or at a step that moves on; Stalled from
        PutBack on (the restore has failed and will not succeed), for a restore that cannot start, and
        while one of its Jobs is stuck."""
        stalled = (reason, message) if status_ == "False" and reason not in MOVING else None
        # The phase and step lead Reconciling's message, as Flux and Argo CD show it alone.
        where = PENDING if reason == "Waiting" else f"{RUNNING} (step {reason})"
        reconciling = (reason, f"{where}: {message}") if not stalled and status_ != "True" else None
        return [set_condition(conditions, "Ready", status_, reason, message, gen, now),
                *kstatus_conditions(conditions, stalled, reconciling, gen, now, ("Finished", message))]

    def goto(new_step: str, message: str, plan: RestorePlan | None = None) -> RestorePlan:
        status.update(phase=RUNNING, step=new_step, stepStartedAt=timestamp(now),
                      conditions=cond("False", new_step, message))
        plan = plan or RestorePlan(status)
        plan.status = status
        plan.holds = True
        plan.replicas_override = 0 if new_step in HOLDS_ZERO else None
        plan.events.append(("Normal", f"Restore{new_step}", message))
        return plan

    def stay(message: str, reason: str | None = None) -> RestorePlan:
        unfinished = [j for j in live_jobs.values() if jobs.job_finished(j) is None]
        stuck = find_stuck([p for j in unfinished for p in pods_by_job.get(j["metadata"]["name"], [])],
                           unfinished, now)
        if stuck:  # a Job whose pod cannot start never finishes: say which and why now
            message, reason = f"{message}; {summary(stuck)}", stuck[0].reason
        status.update(conditions=cond("False", reason or str(step), message))
        return RestorePlan(status, holds=True, replicas_override=0 if step in HOLDS_ZERO else None)

    def fail_early(reason: str, error: str) -> RestorePlan:
        status.update(phase=FAILED, error=error, completedAt=timestamp(now), conditions=cond("False", reason, error))
        status.pop("step", None)
        return RestorePlan(status, events=[("Warning", "RestoreFailed", error)])

    def put_back(error: str) -> RestorePlan:
        status["error"] = error
        plan = goto(PUT_BACK, f"{error}; putting the previous data back")
        plan.events[-1] = ("Warning", "RestoreFailing", f"{error}; putting the previous data back")
        return plan

    def jobs_of(action: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(expected manifests, their live Jobs or missing ones' manifests to create)."""
        wanted = expected_jobs(restore, view, action)
        missing = [m for m in wanted if m["metadata"]["name"] not in live_jobs]
        return wanted, missing

    since = parse_time(prev.get("stepStartedAt")) or now

    # ---- not started: may it start? ----------------------------------------------------------------
    if phase in (None, PENDING) or not step:
        if not view.exists:
            return fail_early("ClusterNotFound", f"OmenDB {view.name} does not exist in namespace "
                                                 f"{view.namespace}; fix spec.cluster.name and apply a new "
                                                 f"OmenDBRestore")
        if view.spec is None or view.owner is None:
            return fail_early("InvalidCluster", f"OmenDB {view.name} has an invalid spec; fix it and apply a "
                                                f"new OmenDBRestore")
        if not view.backups_volume:
            return fail_early("NoBackupVolume", f"OmenDB {view.name} has no backup volume "
                                                f"{L.Names(view.name).backup_volume} to restore from (backups "
                                                f"were never enabled); nothing can be restored")
        waiting = None
        if holder and holder != name:
            waiting = f"restore {holder} of {view.name} is in progress; this one starts after it"
        elif earlier:
            waiting = f"restore {earlier} of {view.name} was created earlier and runs first"
        elif view.bootstrapping:
            waiting = f"OmenDB {view.name} is bootstrapping from a backup"
        elif view.backup_running:
            waiting = f"backup Job {view.backup_running} is running; the restore starts when it finishes"
        if waiting:
            message = f"waiting: {waiting}"
            same = any(c.get("message") == message for c in conditions)
            status.update(phase=PENDING, conditions=cond("False", "Waiting", message))
            return RestorePlan(status, events=[] if same else [("Normal", "RestoreWaiting", message)])
        status["startedAt"] = timestamp(now)
        status.pop("error", None)
        target = target_of(restore)
        what = f"backup {target.backup_id}" + (f" to LSN {target.lsn}" if target.lsn is not None else "") + \
            (f" to time {target.time}" if target.time else "")
        return goto(SCALE_DOWN, f"restoring {view.name} from {what}: writes blocked, scheduled backups "
                                f"suspended, scaling to 0 pods")

    if not view.exists or view.spec is None:  # the OmenDB was deleted mid-restore: nothing to restore into
        return fail_early("ClusterNotFound", f"OmenDB {view.name} was deleted (or its spec became invalid) "
                                             f"during the restore, at step {step}")

    # ---- running -------------------------------------------------------------------------------------
    if step == SCALE_DOWN:
        if view.database_pods == 0 and view.statefulset_replicas == 0:
            plan = RestorePlan(status)
            plan.create_jobs, _ = jobs_of("restore")
            ordinals = ", ".join(str(o) for o in view.ordinals)
            return goto(RESTORE, f"no database pod runs; restore Jobs for the volumes of pod(s) {ordinals} "
                                 f"(previous data set aside)", plan)
        return stay(f"waiting for {view.database_pods} database pod(s) to stop")

    if step == RESTORE:
        wanted, missing = jobs_of("restore")
        live = [live_jobs[m["metadata"]["name"]] for m in wanted if m["metadata"]["name"] in live_jobs]
        for job in live:
            if jobs.job_finished(job) == "Failed":
                _, failed_message = jobs.termination_message(pods_by_job.get(job["metadata"]["name"], []))
                return put_back(f"restore Job {job['metadata']['name']} failed: "
                                f"{jobs.failure_text(job, failed_message)}")
        if missing:  # (re)created: a Job deleted by hand reruns, which is safe (omendb.backup.restore_job)
            plan = stay("restore Jobs created")
            plan.create_jobs = missing
            return plan
        if any(jobs.job_finished(j) is None for j in live):
            return stay("restore Jobs are running")
        primary_job = wanted[0]["metadata"]["name"]
        ok_message, _ = jobs.termination_message(pods_by_job.get(primary_job, []))
        result = jobs.restore_result(ok_message)
        if isinstance(result, UnreadableResult):
            return put_back(f"restore Job {primary_job} succeeded but its result cannot be read: {result.problem}")
        if result is None:
            return put_back(f"restore Job {primary_job} succeeded but reported no result")
        problem = check_result(result, target_of(restore))
        if problem:
            return put_back(problem)
        status.update(backupId=result.backup_id, restoredLSN=result.lsn, recordCount=result.records)
        return goto(SCALE_UP, f"restored backup {result.backup_id} to LSN {result.lsn} "
                              f"({result.records} records); starting {view.spec.replicas} pod(s)")

    if step == SCALE_UP:
        if view.ready_pods >= view.spec.replicas and view.statefulset_replicas == view.spec.replicas:
            return goto(VERIFY, "every pod is Ready; checking the restored LSN and record count")
        if now - since > READY_TIMEOUT:
            return put_back(f"the restored database was not Ready within {READY_TIMEOUT} "
                            f"({view.ready_pods}/{view.spec.replicas} pods Ready)")
        return stay(f"waiting for {view.spec.replicas - view.ready_pods} pod(s) to become Ready")

    if step == VERIFY:
        if stats is None:
            if now - since > VERIFY_TIMEOUT:
                return put_back(f"could not read /v1/stats of the restored database: {stats_error}")
            return stay(f"reading /v1/stats: {stats_error or 'not yet'}")
        problem = check_stats(stats, int(status["restoredLSN"]), int(status["recordCount"]))
        if problem:
            return put_back(problem)
        plan = RestorePlan(status)
        plan.create_jobs, _ = jobs_of("discard")
        return goto(DISCARD, f"verified: LSN {stats['lsn']}, {stats['records']} records; deleting the "
                             f"set-aside data", plan)

    if step == DISCARD:
        wanted, missing = jobs_of("discard")
        if any(jobs.job_finished(live_jobs[m["metadata"]["name"]]) is None
               for m in wanted if m["metadata"]["name"] in live_jobs):
            return stay("deleting the set-aside data")
        warnings = [m["metadata"]["name"] for m in wanted if m["metadata"]["name"] not in live_jobs
                    or jobs.job_finished(live_jobs[m["metadata"]["name"]]) == "Failed"]
        message = (f"restored backup {status.get('backupId')} to LSN {status.get('restoredLSN')} "
                   f"({status.get('recordCount')} records), verified")
        if warnings:
            message += (f"; Job(s) {', '.join(warnings)} could not delete the set-aside data (it stays in "
                        f"{jobs.SET_ASIDE}/ of the volumes; delete it by hand)")
        status.update(phase=SUCCEEDED, completedAt=timestamp(now), conditions=cond("True", "Succeeded", message))
        status.pop("step", None)
        status.pop("stepStartedAt", None)
        return RestorePlan(status, events=[("Normal", "RestoreSucceeded", message)])

    if step == PUT_BACK:
        if view.database_pods or view.statefulset_replicas:
            return stay(f"{status.get('error')}; waiting for {view.database_pods} database pod(s) to stop "
                        f"before putting the previous data back", PUT_BACK)
        busy = [n for n, j in live_jobs.items() if jobs.job_finished(j) is None
                and (j["metadata"].get("labels") or {}).get(jobs.ACTION_LABEL) != "put-back"]
        if busy:
            return stay(f"{status.get('error')}; waiting for Job(s) {', '.join(sorted(busy))} to finish before "
                        f"putting the previous data back", PUT_BACK)
        wanted, missing = jobs_of("put-back")
        if missing:
            plan = stay(f"{status.get('error')}; putting the previous data back", PUT_BACK)
            plan.create_jobs = missing
            return plan
        live = [live_jobs[m["metadata"]["name"]] for m in wanted]
        if any(jobs.job_finished(j) is None for j in live):
            return stay(f"{status.get('error')}; putting the previous data back", PUT_BACK)
        broken = [j["metadata"]["name"] for j in live if jobs.job_finished(j) == "Failed"]
        error = str(status.get("error"))
        if broken:
            error += (f"; putting the previous data back FAILED in Job(s) {', '.join(broken)}: the previous "
                      f"data is in {jobs.SET_ASIDE}/ of the data and WAL volumes (see "
                      f"docs/operations/backup-and-restore.md)")
        else:
            error += "; the previous data is back in place and the cluster runs on it as before"
        status.update(phase=FAILED, error=error, completedAt=timestamp(now),
                      conditions=cond("False", "Failed", error))
        status.pop("step", None)
        status.pop("stepStartedAt", None)
        return RestorePlan(status, events=[("Warning", "RestoreFailed", error)])

    return fail_early("UnknownStep", f"unknown step {step!r} in status (edited by hand?)")


def check_result(result: RestoreResult, target: jobs.RestoreTarget) -> str | None:
    """The restore Job's result against the backup manifest (no target) or the point-in-time target. A restore
    continued by archived WAL (result.archived_lsn) ends where that WAL does, past the backup."""
    lsn, records = result.lsn, result.records
    if target.lsn is not None:
        if lsn > target.lsn:
            return f"the restore reached LSN {lsn}, past the requested LSN {target.lsn}"
    elif result.archived_lsn is not None:
        if lsn != result.archived_lsn or lsn < result.backup_end_lsn:
            return (f"the restore wrote LSN {lsn}, but backup {result.backup_id} (ending at LSN "
                    f"{result.backup_end_lsn}) and the archived WAL end at LSN {result.archived_lsn}")
    elif not target.time and (lsn != result.backup_end_lsn or records != result.backup_records):
        return (f"the restore wrote LSN {lsn} with {records} records, but backup {result.backup_id} "
                f"ends at LSN {result.backup_end_lsn} with {result.backup_records} records")
    return None


def check_stats(stats: dict[str, Any], lsn: int, records: int) -> str | None:
    """The running database against what the restore wrote. A database that took writes since (its LSN is
    past the restored one) can only be checked for not being behind."""
    got_lsn, got_records = int(stats.get("lsn", -1)), int(stats.get("records", -1))
    if got_lsn < lsn:
        return f"the restored database serves LSN {got_lsn}, behind the restored LSN {lsn}"
    if got_lsn == lsn and got_records != records:
        return f"the restored database serves {got_records} records at LSN {lsn}; the restore wrote {records}"
    return None
