"""The pure planners of OmenDBBackup, OmenDBRestore and spec.bootstrap.fromBackup. The restore Jobs'
program (omendb.backup.restore_job) is run for real in tests/backup/test_restore_job.py."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import replace
from typing import Any

import pytest
from conftest import make_owner
from operator_pss import restricted_violations

from omendb.backup.contract import RestoreResult
from omendb_operator.plans import backups, bootstrap, restores
from omendb_operator.plans.status import Observation, build_status
from omendb_operator.spec import SpecError, parse_spec
from omendb_operator.specs import jobs
from omendb_operator.specs.configmap import DATA_DIR, WAL_DIR

NOW = dt.datetime(2026, 11, 27, 8, 0, tzinfo=dt.UTC)
LATER = NOW + dt.timedelta(seconds=30)


def _backup(name: str = "nightly", kind: str = "full", status: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"apiVersion": "omendb.io/v1alpha1", "kind": "OmenDBBackup",
            "metadata": {"name": name, "namespace": "omendb-prod", "uid": "b-uid", "generation": 1,
                         "creationTimestamp": "2026-11-27T07:00:00Z"},
            "spec": {"cluster": {"name": "prod"}, "type": kind}, "status": status or {}}


def _restore(name: str = "r1", status: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "omendb.io/v1alpha1", "kind": "OmenDBRestore",
            "metadata": {"name": name, "namespace": "omendb-prod", "uid": f"{name}-uid", "generation": 1,
                         "creationTimestamp": "2026-11-27T07:00:00Z"},
            "spec": {"cluster": {"name": "prod"}, **spec}, "status": status or {}}


def _job(name: str, outcome: str | None, labels: dict[str, str] | None = None, kind: str = "OmenDBBackup",
         completed: str = "2026-11-27T07:59:00Z") -> dict[str, Any]:
    status: dict[str, Any] = {"startTime": "2026-11-27T07:58:00Z"}
    if outcome == "Complete":
        status.update(succeeded=1, completionTime=completed,
                      conditions=[{"type": "Complete", "status": "True"}])
    elif outcome == "Failed":
        status.update(failed=1, conditions=[{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                                             "message": "Job has reached the specified backoff limit"}])
    else:
        status["active"] = 1
    return {"metadata": {"name": name, "labels": labels or {}, "ownerReferences": [{"kind": kind}]},
            "status": status}


def _pod(exit_code: int, message: str, finished: str = "2026-11-27T07:59:00Z") -> dict[str, Any]:
    return {"metadata": {"name": "p"}, "status": {"containerStatuses": [{"state": {"terminated": {
        "exitCode": exit_code, "message": message, "finishedAt": finished}}}]}}


def _ctx(**kw: Any) -> backups.BackupContext:
    return backups.BackupContext("prod", "omendb-prod", exists=kw.pop("exists", True),
                                 spec=kw.pop("spec", parse_spec({})), **kw)


# ---- OmenDBBackup ----------------------------------------------------------------------------------------


def test_backup_of_a_missing_or_backupless_cluster_fails_saying_why(owner):
    plan = backups.plan_backup(_backup(), _ctx(exists=False, spec=None), None, None, [], NOW)
    assert plan.status["phase"] == "Failed" and "does not exist" in plan.status["error"]
    assert plan.events[0][:2] == ("Warning", "BackupFailed")
    off = parse_spec({"backup": {"enabled": False}})
    plan = backups.plan_backup(_backup(), _ctx(spec=off), owner, None, [], NOW)
    assert plan.status["phase"] == "Failed" and "spec.backup.enabled" in plan.status["error"]
    assert plan.create_job is None


def test_backup_waits_while_another_operation_runs(owner):
    plan = backups.plan_backup(_backup(), _ctx(blocked_by="restore r1 of prod is in progress"), owner, None, [],
                               NOW)
    assert plan.status["phase"] == "Pending" and plan.create_job is None
    ready, reconciling, stalled = plan.status["conditions"]
    assert ready["reason"] == "Waiting" and "restore r1" in ready["message"]
    assert (reconciling["type"], reconciling["status"], stalled["type"], stalled["status"]) == (
        "Reconciling", "True", "Stalled", "False")  # kstatus: InProgress
    # Still waiting, same reason: no new event.
    again = backups.plan_backup(_backup(status=plan.status), _ctx(blocked_by="restore r1 of prod is in progress"),
                                owner, None, [], LATER)
    assert again.events == [] and again.status["conditions"][0]["lastTransitionTime"] == ready[
        "lastTransitionTime"]


def test_backup_job_is_the_cronjobs_job_owned_by_the_backup(owner):
    plan = backups.plan_backup(_backup(kind="incremental"), _ctx(), owner, None, [], NOW)
    job = plan.create_job
    assert job is not None and plan.status["phase"] == "Running" and plan.status["startedAt"]
    assert job["metadata"]["name"] == "nightly-backup"
    labels = job["metadata"]["labels"]
    assert labels["app.kubernetes.io/instance"] == "prod"
    assert labels["app.kubernetes.io/component"] == "backup"
    assert labels["omendb.io/backup"] == "nightly" and labels["omendb.io/backup-type"] == "incremental"
    assert job["spec"]["template"]["metadata"]["labels"] == labels
    # Not selected by the database's Services, PodDisruptionBudget or StatefulSet.
    assert "app" not in labels
    (ref,) = job["metadata"]["ownerReferences"]
    assert (ref["kind"], ref["name"], ref["uid"], ref["controller"]) == ("OmenDBBackup", "nightly", "b-uid", True)
    pod = job["spec"]["template"]["spec"]
    assert restricted_violations(pod) == []
    command = pod["containers"][0]["command"]
    assert command[-3:] == ["incremental-backup", "--database", "omendb"]
    assert command[command.index("--result-file") + 1] == "/dev/termination-log"
    assert pod["containers"][0]["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert {v["name"] for v in pod["volumes"]} == {"backups", "tmp", "ca", "backup-key", "credentials"}


def test_backup_result_comes_from_the_termination_message(owner):
    running = _backup(status={"phase": "Running", "startedAt": "2026-11-27T07:58:00Z"})
    plan = backups.plan_backup(running, _ctx(), owner, _job("nightly-backup", None), [], NOW)
    assert plan.status["phase"] == "Running" and plan.create_job is None
    result = {"backupId": "omendb-20261127T075900000Z-full", "type": "full", "sizeBytes": 12345, "startLSN": 0,
              "endLSN": 42, "records": 100, "notice": None}
    plan = backups.plan_backup(running, _ctx(), owner, _job("nightly-backup", "Complete"),
                               [_pod(0, json.dumps(result))], NOW)
    assert plan.status["phase"] == "Succeeded"
    assert plan.status["backupId"] == result["backupId"] and plan.status["sizeBytes"] == 12345
    assert plan.status["completedAt"] == "2026-11-27T07:59:00Z"
    assert plan.status["conditions"][0]["status"] == "True"
    log_tail = "backup_tool: error: --source unusable: connection refused; is the server running?"
    plan = backups.plan_backup(running, _ctx(), owner, _job("nightly-backup", "Failed"), [_pod(7, log_tail)], NOW)
    assert plan.status["phase"] == "Failed" and plan.status["error"] == log_tail
    # Finished is final.
    assert backups.plan_backup(_backup(status=plan.status), _ctx(), owner, None, [], LATER).status == plan.status


def test_last_backup_and_backup_health_from_the_jobs():
    full = _job("prod-backup-full-1", "Complete", {"omendb.io/backup-type": "full"}, "CronJob",
                "2026-11-27T01:05:00Z")
    incr = _job("prod-backup-incremental-2", "Complete", {"omendb.io/backup-type": "incremental"}, "CronJob",
                "2026-11-27T02:05:00Z")
    result = {"backupId": "omendb-x-incr", "type": "incremental", "sizeBytes": 99}
    last = backups.last_backup([full, incr], {"prod-backup-incremental-2": [_pod(0, json.dumps(result))]})
    assert last["id"] == "omendb-x-incr" and last["type"] == "incremental" and last["sizeBytes"] == 99
    assert (last["full"], last["incremental"], last["time"]) == (
        "2026-11-27T01:05:00Z", "2026-11-27T02:05:00Z", "2026-11-27T02:05:00Z")
    assert backups.failed_backup([full, incr]) is None
    failed = _job("prod-backup-full-3", "Failed", {"omendb.io/backup-type": "full"}, "CronJob")
    failed["status"]["startTime"] = "2026-11-27T03:00:00Z"
    why = backups.failed_backup([full, incr, failed])
    assert why and "prod-backup-full-3" in why
    owner = make_owner()
    status = build_status(owner, parse_spec({}), Observation(last_backup=last, backup_failure=why), {}, NOW)
    healthy = {c["type"]: c for c in status["conditions"]}["BackupHealthy"]
    assert (healthy["status"], healthy["reason"]) == ("False", "BackupFailed")
    assert status["lastBackup"]["id"] == "omendb-x-incr"


# ---- OmenDBRestore -----------------------------------------------------------------------------------


def _view(owner: dict[str, Any], **kw: Any) -> restores.ClusterView:
    spec = kw.pop("spec", parse_spec({}))
    base = dict(exists=True, spec=spec, owner=owner, backups_volume=True, statefulset_replicas=1,
                database_pods=1, ready_pods=1)
    base.update(kw)
    return restores.ClusterView("prod", "omendb-prod", **base)


def _step(restore, view, jobs_=None, pods=None, stats=None, stats_error=None, holder=None, earlier=None, now=NOW):
    return restores.plan_restore(restore, view, holder, earlier, jobs_ or {}, pods or {}, stats, stats_error, now)


def test_restore_refuses_a_missing_cluster_or_backup_volume(owner):
    plan = _step(_restore(), restores.ClusterView("prod", "omendb-prod", exists=False))
    assert plan.status["phase"] == "Failed" and "does not exist" in plan.status["error"] and not plan.holds
    running = _restore(status={"phase": "Running", "step": "Restore"})
    plan = _step(running, restores.ClusterView("prod", "omendb-prod", exists=False))
    assert plan.status["phase"] == "Failed" and "deleted" in plan.status["error"] and "step" not in plan.status
    plan = _step(_restore(), _view(owner, backups_volume=False))
    assert plan.status["phase"] == "Failed" and "prod-backups" in plan.status["error"]


@pytest.mark.parametrize(("kw", "expect"), [
    ({"holder": "r0"}, "restore r0 of prod is in progress"),
    ({"earlier": "r0"}, "restore r0 of prod was created earlier"),
    ({"view": {"backup_running": "prod-backup-full-9"}}, "backup Job prod-backup-full-9 is running"),
    ({"view": {"bootstrapping": True}}, "bootstrapping"),
])
def test_restore_waits_for_other_operations(owner, kw, expect):
    view = _view(owner, **kw.pop("view", {}))
    plan = _step(_restore(), view, **kw)
    assert plan.status["phase"] == "Pending" and not plan.holds and plan.replicas_override is None
    assert expect in plan.status["conditions"][0]["message"]


def _done(name: str, pods: list[dict[str, Any]] | None = None, outcome: str = "Complete") -> dict[str, Any]:
    return _job(name, outcome, {jobs.RESTORE_LABEL: "r1"}, "OmenDBRestore")


def test_restore_walks_the_disaster_recovery_procedure(owner):
    spec = parse_spec({"replicas": 2})
    r = _restore(backupId="omendb-x-full", pointInTime={"lsn": 40})
    # Pending -> ScaleDown: holds the cluster at 0 pods.
    plan = _step(r, _view(owner, spec=spec, statefulset_replicas=2, database_pods=2, ready_pods=2))
    assert (plan.status["phase"], plan.status["step"]) == ("Running", "ScaleDown")
    assert plan.holds and plan.replicas_override == 0 and plan.status["startedAt"]
    r["status"] = plan.status
    plan = _step(r, _view(owner, spec=spec, statefulset_replicas=0, database_pods=1, ordinals=(0, 1)))
    assert plan.status["step"] == "ScaleDown" and plan.replicas_override == 0 and not plan.create_jobs
    # Pods gone -> Restore: pod 0 restores, pod 1 sets its data aside (it re-seeds from the primary).
    down = _view(owner, spec=spec, statefulset_replicas=0, database_pods=0, ready_pods=0, ordinals=(0, 1))
    plan = _step(r, down)
    assert plan.status["step"] == "Restore"
    names = {j["metadata"]["name"]: j for j in plan.create_jobs}
    assert set(names) == {"r1-restore-0", "r1-set-aside-1"}
    restore_job = names["r1-restore-0"]
    pod = restore_job["spec"]["template"]["spec"]
    assert restricted_violations(pod) == []
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"]
              if "persistentVolumeClaim" in v}
    assert claims == {"data": "data-prod-0", "wal": "wal-prod-0", "backups": "prod-backups"}
    # No credentials, no CA; the backup key (a file, never on the backup volume) authenticates the backup.
    assert {v["name"] for v in pod["volumes"]} == {"data", "wal", "backups", "tmp", "backup-key"}
    key = next(v for v in pod["volumes"] if v["name"] == "backup-key")["secret"]
    assert key["secretName"] == "prod-backup-key" and "optional" not in key
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["OMENDB_BACKUP_KEY_FILE"] == "/etc/omendb/backup-key/key"
    command = pod["containers"][0]["command"]
    assert command[:8] == ["python", "-m", "omendb.backup.restore_job", "restore", "--data-dir", DATA_DIR,
                           "--wal-dir", WAL_DIR]
    assert command[8:] == ["--", "backup_tool", "--data-dir", DATA_DIR, "--wal-dir", WAL_DIR, "--backup-dir",
                           "/var/backups/omendb", "--result-file", "/dev/termination-log", "--lock-timeout", "60",
                           "restore", "--backup-id", "omendb-x-full", "--to-lsn", "40", "--force"]
    assert restore_job["metadata"]["labels"]["app.kubernetes.io/component"] == "restore"
    assert restore_job["metadata"]["ownerReferences"][0]["kind"] == "OmenDBRestore"
    r["status"] = plan.status
    live = {"r1-restore-0": _done("r1-restore-0", outcome=None), "r1-set-aside-1": _done("r1-set-aside-1")}
    plan = _step(r, down, live)
    assert plan.status["step"] == "Restore" and not plan.create_jobs
    result = {"backupId": "omendb-x-full", "lsn": 40, "term": 1, "records": 77, "backupEndLSN": 90,
              "backupRecords": 120}
    live["r1-restore-0"] = _done("r1-restore-0")
    plan = _step(r, down, live, {"r1-restore-0": [_pod(0, json.dumps(result))]})
    assert plan.status["step"] == "ScaleUp" and plan.replicas_override is None and plan.holds
    assert (plan.status["restoredLSN"], plan.status["recordCount"]) == (40, 77)
    r["status"] = plan.status
    up = _view(owner, spec=spec, statefulset_replicas=2, database_pods=2, ready_pods=1, ordinals=(0, 1))
    assert _step(r, up, live, now=LATER).status["step"] == "ScaleUp"
    plan = _step(r, _view(owner, spec=spec, statefulset_replicas=2, database_pods=2, ready_pods=2,
                          ordinals=(0, 1)), live, now=LATER)
    assert plan.status["step"] == "Verify"
    r["status"] = plan.status
    ready = _view(owner, spec=spec, statefulset_replicas=2, database_pods=2, ready_pods=2, ordinals=(0, 1))
    plan = _step(r, ready, live, stats_error="ConnectError: refused", now=LATER)
    assert plan.status["step"] == "Verify" and "refused" in plan.status["conditions"][0]["message"]
    plan = _step(r, ready, live, stats={"lsn": 40, "records": 77}, now=LATER)
    assert plan.status["step"] == "Discard"
    assert {j["metadata"]["name"] for j in plan.create_jobs} == {"r1-discard-0", "r1-discard-1"}
    affinity = plan.create_jobs[0]["spec"]["template"]["spec"]["affinity"]["podAffinity"]
    assert affinity["requiredDuringSchedulingIgnoredDuringExecution"][0]["labelSelector"] == {
        "matchLabels": {"statefulset.kubernetes.io/pod-name": "prod-0"}}
    r["status"] = plan.status
    live.update({"r1-discard-0": _done("r1-discard-0"), "r1-discard-1": _done("r1-discard-1")})
    plan = _step(r, ready, live, now=LATER)
    assert plan.status["phase"] == "Succeeded" and "step" not in plan.status and not plan.holds
    assert plan.events[0][1] == "RestoreSucceeded"


def test_a_failed_restore_puts_the_previous_data_back(owner):
    r = _restore(backupId="nope", status={"phase": "Running", "step": "Restore",
                                          "stepStartedAt": "2026-11-27T07:59:00Z"})
    down = _view(owner, statefulset_replicas=0, database_pods=0, ready_pods=0)
    failed = _done("r1-restore-0", outcome="Failed")
    message = "backup_tool: error: no backup 'nope' in /var/backups/omendb"
    plan = _step(r, down, {"r1-restore-0": failed}, {"r1-restore-0": [_pod(4, message)]})
    assert plan.status["step"] == "PutBack" and plan.replicas_override == 0
    assert "no backup 'nope'" in plan.status["error"]
    r["status"] = plan.status
    plan = _step(r, down, {"r1-restore-0": failed})
    assert [j["metadata"]["name"] for j in plan.create_jobs] == ["r1-put-back-0"]
    r["status"] = plan.status
    live = {"r1-restore-0": failed, "r1-put-back-0": _done("r1-put-back-0")}
    plan = _step(r, down, live)
    assert plan.status["phase"] == "Failed" and not plan.holds and plan.replicas_override is None
    assert "previous data is back in place" in plan.status["error"] and "no backup 'nope'" in plan.status["error"]


def test_verification_failures_and_timeouts_put_back(owner):
    r = _restore(status={"phase": "Running", "step": "Verify", "stepStartedAt": "2026-11-27T07:50:00Z",
                         "restoredLSN": 40, "recordCount": 77})
    ready = _view(owner)
    assert _step(r, ready, stats={"lsn": 40, "records": 70}).status["step"] == "PutBack"
    assert _step(r, ready, stats={"lsn": 39, "records": 77}).status["step"] == "PutBack"
    # Writes since the restore: the LSN moved on; only "not behind" can be checked.
    assert _step(r, ready, stats={"lsn": 45, "records": 80}).status["step"] == "Discard"
    assert _step(r, ready, stats_error="timeout").status["step"] == "PutBack"  # 10 min > VERIFY_TIMEOUT
    r["status"].update(step="ScaleUp", stepStartedAt="2026-11-27T07:45:00Z")
    plan = _step(r, _view(owner, ready_pods=0))
    assert plan.status["step"] == "PutBack" and "not Ready" in plan.status["error"]


def test_restore_result_is_checked_against_the_manifest_or_target():
    whole = jobs.RestoreTarget("x")
    ok = RestoreResult("x", lsn=90, term=1, records=120, backup_end_lsn=90, backup_records=120)
    assert restores.check_result(ok, whole) is None
    assert "ends at LSN 90" in str(restores.check_result(replace(ok, records=119), whole))
    assert restores.check_result(replace(ok, lsn=40, records=3), jobs.RestoreTarget("x", lsn=40)) is None
    assert "past the requested" in str(restores.check_result(replace(ok, lsn=41), jobs.RestoreTarget("x", lsn=40)))
    # Continued by the WAL archive: past the backup, where the archived WAL ends.
    archived = replace(ok, lsn=97, records=130, archived_lsn=97)
    assert restores.check_result(archived, whole) is None
    assert "archived WAL end at LSN 97" in str(restores.check_result(replace(archived, lsn=95), whole))


def test_a_restore_result_of_an_unknown_version_puts_back_saying_why(owner):
    r = _restore(status={"phase": "Running", "step": "Restore", "stepStartedAt": "2026-11-27T07:59:00Z"})
    down = _view(owner, statefulset_replicas=0, database_pods=0, ready_pods=0)
    result = {"version": 99, "kind": "restore", "backupId": "b", "lsn": 9, "term": 1, "records": 3,
              "backupEndLSN": 9, "backupRecords": 3}
    plan = _step(r, down, {"r1-restore-0": _done("r1-restore-0")}, {"r1-restore-0": [_pod(0, json.dumps(result))]})
    assert plan.status["step"] == "PutBack"
    assert "result of version 99" in plan.status["error"] and "reads version 1" in plan.status["error"]


# ---- bootstrap ----------------------------------------------------------------------------------------


def test_bootstrap_spec_is_parsed_and_checked():
    spec = parse_spec({"bootstrap": {"fromBackup": {"cluster": {"name": "src"}, "pointInTime": {"lsn": 5}}}})
    assert spec.bootstrap is not None
    assert (spec.bootstrap.source_cluster, spec.bootstrap.backup_id, spec.bootstrap.lsn) == ("src", "latest", 5)
    with pytest.raises(SpecError, match="cluster.name"):
        parse_spec({"bootstrap": {"fromBackup": {"backupId": "x"}}})
    assert parse_spec({}).bootstrap is None


def test_bootstrap_runs_once_before_any_pod(owner):
    owner = make_owner(name="copy", spec={"bootstrap": {"fromBackup": {"cluster": {"name": "prod"}}}})
    spec = parse_spec(owner["spec"])
    plan = bootstrap.plan_bootstrap(owner, spec, {}, False, set(), None, [], NOW)
    assert plan.status and plan.status["phase"] == "Pending" and plan.running and "prod-backups" in plan.status[
        "message"]
    plan = bootstrap.plan_bootstrap(owner, spec, {}, True, {"wal-copy-0"}, None, [], NOW)
    assert plan.running and [c["kind"] for c in plan.create] == ["PersistentVolumeClaim", "Job"]
    claim, job = plan.create
    assert claim["metadata"]["name"] == "data-copy-0" and claim["spec"]["resources"]["requests"]["storage"] == "10Gi"
    assert job["metadata"]["name"] == "copy-bootstrap-restore-0"
    assert job["metadata"]["ownerReferences"][0]["kind"] == "OmenDB"
    backups_claim = [v for v in job["spec"]["template"]["spec"]["volumes"] if v["name"] == "backups"]
    assert backups_claim[0]["persistentVolumeClaim"]["claimName"] == "prod-backups"
    # The source's backups are authenticated with the source's key.
    key = [v for v in job["spec"]["template"]["spec"]["volumes"] if v["name"] == "backup-key"][0]["secret"]
    assert key["secretName"] == "prod-backup-key" and key["optional"] is True
    previous = {"bootstrap": plan.status}
    failed = _job(job["metadata"]["name"], "Failed", kind="OmenDB")
    plan = bootstrap.plan_bootstrap(owner, spec, previous, True, {"data-copy-0", "wal-copy-0"}, failed,
                                    [_pod(4, "backup_tool: error: no backups")], NOW)
    assert plan.status and plan.status["phase"] == "Failed" and plan.running
    assert "kubectl delete job copy-bootstrap-restore-0" in plan.status["message"]
    result = {"backupId": "b", "lsn": 9, "records": 3, "backupEndLSN": 9, "backupRecords": 3}
    plan = bootstrap.plan_bootstrap(owner, spec, previous, True, set(), _job("j", "Complete", kind="OmenDB"),
                                    [_pod(0, json.dumps(result))], NOW)
    assert plan.status and plan.status["phase"] == "Succeeded" and not plan.running
    assert (plan.status["restoredLSN"], plan.status["recordCount"]) == (9, 3)
    done = bootstrap.plan_bootstrap(owner, spec, {"bootstrap": plan.status}, True, set(), None, [], LATER)
    assert done.status == plan.status and not done.create and not done.running
    # An OmenDB that already ran never bootstraps.
    skipped = bootstrap.plan_bootstrap(owner, spec, {"currentVersion": "0.1.0"}, True, set(), None, [], NOW)
    assert skipped.status and skipped.status["phase"] == "Skipped" and not skipped.running


def test_a_restore_in_progress_is_progress_not_degradation():
    owner = make_owner()
    previous = {"currentVersion": "0.1.0", "conditions": [{"type": "Ready", "status": "True"}]}
    sts = {"metadata": {"generation": 2}, "status": {"observedGeneration": 2, "replicas": 0, "readyReplicas": 0}}
    held = Observation(statefulset=sts, restore={"name": "r1", "step": "Restore"})
    status = build_status(owner, parse_spec({}), held, previous, NOW)
    assert status["phase"] == "Updating" and status["restore"] == {"name": "r1", "step": "Restore"}
    progressing = {c["type"]: c for c in status["conditions"]}["Progressing"]
    assert (progressing["reason"], progressing["message"]) == ("Restoring", "OmenDBRestore r1: step Restore")
    assert "restore" not in build_status(owner, parse_spec({}), Observation(statefulset=sts), previous, NOW)


def test_status_patch_nulls_fields_gone_from_an_object():
    from omendb_operator.plans.status import status_changed, status_patch

    old = {"restore": {"name": "r1", "step": "Restore", "message": "deleted"}, "bootstrap": {"phase": "Failed",
                                                                                         "error": "x"}}
    new = {"restore": {"name": "r2", "step": "ScaleDown"}, "bootstrap": {"phase": "Succeeded"}}
    patch = status_patch(old, new)
    assert patch["restore"] == {"message": None, "name": "r2", "step": "ScaleDown"}
    assert patch["bootstrap"] == {"error": None, "phase": "Succeeded"}
    assert not status_changed(new, new)
