"""Stuck children (plans/stuck.py, issue 18): pods that cannot pull their image, crash in a loop, cannot
be created or scheduled, and Jobs whose pods cannot start, found from hand-built objects; and what the
OmenDB, OmenDBBackup and OmenDBRestore statuses say about them (Degraded / Stalled, naming the object and
the reason) through the real planners."""

from __future__ import annotations

import copy
import datetime as dt
from typing import Any

from conftest import make_owner
from test_backup_restore_planners import _backup, _ctx, _job, _restore, _step, _view
from test_omendb_plan import _steady_world
from test_omendb_status import _sts

from omendb_operator.plans import backups
from omendb_operator.plans.omendb import plan_omendb
from omendb_operator.plans.status import Observation, build_status
from omendb_operator.plans.stuck import find_stuck, recheck_after, stuck_pod
from omendb_operator.spec import parse_spec
from omendb_operator.specs import jobs

NOW = dt.datetime(2026, 12, 4, 12, 0, tzinfo=dt.UTC)


def _waiting_pod(name: str, reason: str, message: str = "", job: str | None = None, init: bool = False,
                 **container: Any) -> dict[str, Any]:
    labels = {"app.kubernetes.io/instance": "db", "app.kubernetes.io/component": "database"}
    if job:
        labels = {"app.kubernetes.io/instance": "db", "app.kubernetes.io/component": "backup",
                  "batch.kubernetes.io/job-name": job}
    cs = {"name": "omendb", "image": "omendb/omendb:does-not-exist", "ready": False,
          "state": {"waiting": {"reason": reason, "message": message}}, **container}
    key = "initContainerStatuses" if init else "containerStatuses"
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "ns", "labels": labels,
                         "creationTimestamp": "2026-12-04T11:50:00Z"},
            "status": {"phase": "Pending", key: [cs]}}


def _unschedulable_pod(name: str, since: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "ns", "labels": {"app.kubernetes.io/instance": "db"},
                         "creationTimestamp": since},
            "status": {"phase": "Pending", "conditions": [{
                "type": "PodScheduled", "status": "False", "reason": "Unschedulable", "lastTransitionTime": since,
                "message": "0/1 nodes are available: 1 Insufficient memory."}]}}


def _pending_job(name: str, created: str) -> dict[str, Any]:
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": name, "namespace": "ns", "creationTimestamp": created,
                         "labels": {"app.kubernetes.io/instance": "db", "app.kubernetes.io/component": "backup"}},
            "spec": {}, "status": {}}


# ---- the pure finder ---------------------------------------------------------------------------------------


def test_each_waiting_reason_that_needs_a_human_is_stuck_with_the_container_and_image():
    for reason in ("ImagePullBackOff", "ErrImagePull", "InvalidImageName", "CreateContainerConfigError"):
        found = stuck_pod(_waiting_pod("db-0", reason, "Back-off pulling image"), NOW)
        assert found is not None and found[0] == reason, reason
        assert f"container omendb is waiting: {reason} (Back-off pulling image)" in found[1]
    pull = stuck_pod(_waiting_pod("db-0", "ImagePullBackOff"), NOW)
    assert pull is not None and pull[1].endswith("image omendb/omendb:does-not-exist")
    crash = stuck_pod(_waiting_pod("db-0", "CrashLoopBackOff", restartCount=4,
                                   lastState={"terminated": {"exitCode": 2, "reason": "Error"}}), NOW)
    assert crash == ("CrashLoopBackOff",
                     "container omendb is waiting: CrashLoopBackOff (restarted 4 times, last exit code 2 Error)")
    init = stuck_pod(_waiting_pod("db-0", "CreateContainerConfigError", 'secret "x" not found', init=True), NOW)
    assert init is not None and init[1].startswith("init container omendb is waiting")


def test_normal_waiting_finished_and_deleted_pods_are_not_stuck():
    assert stuck_pod(_waiting_pod("db-0", "ContainerCreating"), NOW) is None
    assert stuck_pod(_waiting_pod("db-0", "PodInitializing"), NOW) is None
    done = _waiting_pod("db-0", "ImagePullBackOff")
    done["status"]["phase"] = "Failed"
    assert stuck_pod(done, NOW) is None
    deleting = _waiting_pod("db-0", "ImagePullBackOff")
    deleting["metadata"]["deletionTimestamp"] = "2026-12-04T11:59:00Z"
    assert stuck_pod(deleting, NOW) is None


def test_an_unschedulable_pod_is_stuck_only_after_the_autoscaler_grace():
    fresh = _unschedulable_pod("db-1", "2026-12-04T11:59:30Z")  # 30 s: a node may be on its way
    assert stuck_pod(fresh, NOW) is None
    old = _unschedulable_pod("db-1", "2026-12-04T11:55:00Z")
    assert stuck_pod(old, NOW) == ("Unschedulable",
                                   "cannot be scheduled (0/1 nodes are available: 1 Insufficient memory.)")


def test_the_operator_looks_again_when_a_grace_ends():
    # Nothing changes on a pod when its grace ends, so no event would wake the operator: it asks to
    # reconcile again then (1 s after), and not at all when nothing is in a grace period.
    assert recheck_after([_unschedulable_pod("db-1", "2026-12-04T11:59:30Z")], [], NOW) == 91.0
    assert recheck_after([], [_pending_job("db-backup-full-1", "2026-12-04T11:59:00Z")], NOW) == 61.0
    assert recheck_after([_unschedulable_pod("db-1", "2026-12-04T11:55:00Z")], [], NOW) is None
    world = _steady_world()
    world.children["Pod"]["db-2"] = _unschedulable_pod("db-2", "2026-12-04T11:59:30Z")
    assert plan_omendb(world, NOW).requeue == 91.0


def test_a_jobs_stuck_pod_is_reported_as_the_job_and_a_job_without_pods_after_the_grace():
    job = _pending_job("db-pre-upgrade-1-backup", "2026-12-04T11:50:00Z")
    pod = _waiting_pod("db-pre-upgrade-1-backup-x7", "ImagePullBackOff", job="db-pre-upgrade-1-backup")
    found = find_stuck([pod, _waiting_pod("db-pre-upgrade-1-backup-x8", "ErrImagePull",
                                          job="db-pre-upgrade-1-backup")], [job], NOW)
    assert [(s.kind, s.name, s.reason) for s in found] == [("Job", "db-pre-upgrade-1-backup", "ImagePullBackOff")]
    assert found[0].message.startswith("Job db-pre-upgrade-1-backup: pod db-pre-upgrade-1-backup-x7 container "
                                       "omendb is waiting: ImagePullBackOff")
    # No pod at all: refused by a quota or a policy; the message says where to look.
    quota = find_stuck([], [_pending_job("db-backup-full-1", "2026-12-04T11:55:00Z")], NOW)
    assert [(s.name, s.reason) for s in quota] == [("db-backup-full-1", "JobPodsNotCreated")]
    assert "kubectl describe job db-backup-full-1" in quota[0].message
    assert find_stuck([], [_pending_job("db-backup-full-1", "2026-12-04T11:59:30Z")], NOW) == []  # just made
    finished = _pending_job("db-backup-full-1", "2026-12-04T11:00:00Z")
    finished["status"] = {"failed": 1, "conditions": [{"type": "Failed", "status": "True"}]}
    assert find_stuck([], [finished], NOW) == []  # failed: its operation reports that (BackupHealthy, ...)


# ---- the OmenDB through plan_omendb ---------------------------------------------------------------------


def _conds(plan) -> dict[str, dict[str, Any]]:
    assert plan.status is not None
    return {c["type"]: c for c in plan.status.patch["conditions"]}


def test_a_database_pod_in_image_pull_back_off_stalls_the_omendb_naming_it():
    world = _steady_world()
    world.children["StatefulSet"]["db"]["status"]["readyReplicas"] = 2
    world.children["Pod"]["db-2"] = _waiting_pod("db-2", "ImagePullBackOff", 'Back-off pulling image '
                                                 '"omendb/omendb:does-not-exist"')
    world.omendb = copy.deepcopy(world.omendb)
    world.omendb["status"]["currentVersion"] = "0.1.0"  # it was Ready before
    c = _conds(plan_omendb(world, NOW))
    assert (c["Stalled"]["status"], c["Stalled"]["reason"]) == ("True", "ImagePullBackOff")
    assert c["Stalled"]["message"].startswith("pod db-2 container omendb is waiting: ImagePullBackOff")
    assert (c["Reconciling"]["status"], c["Reconciling"]["reason"]) == ("False", "Stalled")
    assert (c["Degraded"]["status"], c["Degraded"]["reason"]) == ("True", "ImagePullBackOff")
    assert "pod db-2" in c["Degraded"]["message"]


def test_a_stuck_backup_job_next_to_a_ready_database_degrades_it_but_does_not_stall_it():
    world = _steady_world()
    world.children["Job"] = {"db-backup-full-1": _pending_job("db-backup-full-1", "2026-12-04T11:50:00Z")}
    world.children["Pod"]["db-backup-full-1-x"] = _waiting_pod("db-backup-full-1-x", "ImagePullBackOff",
                                                               job="db-backup-full-1")
    c = _conds(plan_omendb(world, NOW))
    assert c["Ready"]["status"] == "True"
    assert (c["Degraded"]["status"], c["Degraded"]["reason"]) == ("True", "ImagePullBackOff")
    assert c["Degraded"]["message"].startswith("Job db-backup-full-1: pod db-backup-full-1-x")
    assert (c["Stalled"]["status"], c["Reconciling"]["status"]) == ("False", "False")  # kstatus: Current


def test_a_stuck_pre_upgrade_backup_job_stalls_the_upgrade_that_waits_for_it():
    # Issue 18's case: every pod Ready, the upgrade waits for its backup, whose Job cannot pull its image.
    job = _pending_job("db-pre-upgrade-1a2b3c4d-backup", "2026-12-04T11:50:00Z")
    pod = _waiting_pod("db-pre-upgrade-1a2b3c4d-backup-x", "ImagePullBackOff", job=job["metadata"]["name"])
    obs = Observation(statefulset=_sts(3), tls_not_after=NOW, stuck=find_stuck([pod], [job], NOW),
                      operation_waiting="waiting for the pre-upgrade backup db-pre-upgrade-1a2b3c4d (Running)",
                      upgrade_condition=("True", "UpgradeInProgress", "taking the pre-upgrade backup"))
    c = {x["type"]: x for x in build_status(make_owner(spec={"replicas": 3}), parse_spec({"replicas": 3}), obs,
                                            None, NOW)["conditions"]}
    assert (c["Stalled"]["status"], c["Stalled"]["reason"]) == ("True", "ImagePullBackOff")
    assert c["Stalled"]["message"].startswith("Job db-pre-upgrade-1a2b3c4d-backup: pod "
                                              "db-pre-upgrade-1a2b3c4d-backup-x container omendb is waiting")
    assert c["Degraded"]["status"] == "True"  # no longer "no problems found"


def test_a_steady_omendb_is_neither_reconciling_nor_stalled():
    c = _conds(plan_omendb(_steady_world(), NOW))
    assert [(c[t]["status"], c[t]["reason"]) for t in ("Reconciling", "Stalled", "Degraded")] == [
        ("False", "ReconcileComplete"), ("False", "NotStalled"), ("False", "AsExpected")]


# ---- OmenDBBackup and OmenDBRestore ---------------------------------------------------------------------


def test_a_backup_whose_job_cannot_pull_its_image_is_stalled_with_the_job_and_pod():
    owner = make_owner()
    started = backups.plan_backup(_backup(), _ctx(), owner, None, [], NOW).status
    job = _job(jobs.job_name("nightly", "backup"), None)
    job["status"] = {}  # no pod started
    pod = _waiting_pod("nightly-backup-abc", "ImagePullBackOff", job=job["metadata"]["name"])
    plan = backups.plan_backup(_backup(status=started), _ctx(), owner, job, [pod], NOW)
    c = {x["type"]: x for x in plan.status["conditions"]}
    assert plan.status["phase"] == "Running"
    assert (c["Stalled"]["status"], c["Stalled"]["reason"]) == ("True", "ImagePullBackOff")
    assert c["Stalled"]["message"].startswith(f"Job {job['metadata']['name']}: pod nightly-backup-abc")
    assert plan.events[0][:2] == ("Warning", "BackupStuck")
    again = backups.plan_backup(_backup(status=plan.status), _ctx(), owner, job, [pod], NOW)
    assert again.events == []  # said once


def test_a_restore_job_that_cannot_start_stalls_the_restore():
    owner = make_owner()
    down = _view(owner, statefulset_replicas=0, database_pods=0, ready_pods=0)
    running = _restore(status={"phase": "Running", "step": "Restore", "stepStartedAt": "2026-12-04T11:59:00Z"})
    job = _job("r1-restore-0", None, {jobs.RESTORE_LABEL: "r1"}, "OmenDBRestore")
    pod = _waiting_pod("r1-restore-0-abc", "CreateContainerConfigError", 'secret "prod-backup-key" not found',
                       job="r1-restore-0")
    plan = _step(running, down, {"r1-restore-0": job}, {"r1-restore-0": [pod]}, now=NOW)
    c = {x["type"]: x for x in plan.status["conditions"]}
    assert (c["Stalled"]["status"], c["Stalled"]["reason"]) == ("True", "CreateContainerConfigError")
    assert "Job r1-restore-0: pod r1-restore-0-abc" in c["Stalled"]["message"]
    assert 'secret "prod-backup-key" not found' in c["Stalled"]["message"]
    fine = _step(running, down, {"r1-restore-0": job}, {"r1-restore-0": []}, now=NOW)
    c = {x["type"]: x for x in fine.status["conditions"]}
    assert (c["Stalled"]["status"], c["Reconciling"]["status"]) == ("False", "True")
