"""kstatus (issue 18, item 1): the real sigs.k8s.io/cli-utils kstatus library (the e2e/go/kstatus checker,
built by `python -m e2e.binaries build`) on statuses made by the operator's own pure builders
(status.build_status, backups.plan_backup, restores.plan_restore). kstatus is what Flux, Helm 4 --wait,
kpt and Config Sync read: InProgress while creating, rolling out or an operation runs, Current when Ready
(or a backup/restore Succeeded), Failed when Stalled. e2e/tests/test_kstatus.py asks the same of live
objects."""

from __future__ import annotations

import copy
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import make_owner
from test_backup_restore_planners import _backup, _ctx, _done, _job, _pod, _restore, _step, _view
from test_omendb_status import _sts
from test_stuck import _waiting_pod

from omendb_operator.plans import backups
from omendb_operator.plans.status import Observation, build_status
from omendb_operator.plans.stuck import find_stuck
from omendb_operator.spec import parse_spec

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from e2e import kstatus  # noqa: E402

NOW = dt.datetime(2026, 12, 4, 12, tzinfo=dt.UTC)
LATER = NOW + dt.timedelta(minutes=1)


@pytest.fixture(scope="module", autouse=True)
def checker() -> Path:
    # Never skipped: without the real library these tests would prove nothing.
    try:
        return kstatus.checker()
    except FileNotFoundError as exc:
        pytest.fail(str(exc))


def _status(obj: dict[str, Any]) -> tuple[str, str]:
    return kstatus.status_of(obj)


def _omendb(spec: dict[str, Any], obs: Observation, previous: dict[str, Any] | None = None,
            generation: int = 1) -> dict[str, Any]:
    owner = make_owner(spec=spec, generation=generation)
    owner["status"] = build_status(owner, parse_spec(spec), obs, previous, NOW)
    return owner


def _ready() -> dict[str, Any]:
    return _omendb({"replicas": 3}, Observation(statefulset=_sts(3), tls_not_after=NOW))


# ---- OmenDB ----------------------------------------------------------------------------------------------


def test_omendb_ready_is_current():
    assert _status(_ready()) == ("Current", "Resource is Ready")
    off = _omendb({"replicas": 3, "tls": {"enabled": False}}, Observation(statefulset=_sts(3)))
    assert _status(off)[0] == "Current"  # TLS off by choice is not a fault


def test_omendb_being_created_is_in_progress():
    creating = _omendb({"replicas": 3}, Observation(statefulset=_sts(1)))
    assert creating["status"]["phase"] == "Creating"
    assert _status(creating) == ("InProgress", "rolling out 0.1.0: 1/3 pods ready")
    nothing_yet = _omendb({"replicas": 3}, Observation())
    assert _status(nothing_yet)[0] == "InProgress"


def test_omendb_rolling_out_or_busy_is_in_progress_though_ready():
    rolling = _omendb({"replicas": 3}, Observation(statefulset=_sts(3, revision_done=False, updated=1)),
                      _ready()["status"])
    assert rolling["status"]["phase"] == "Updating"
    assert _status(rolling)[0] == "InProgress"
    # Every pod Ready, but a day-2 operation (an upgrade's backup, an expansion) still works: kstatus
    # reported Current here before (Ready=True was all it could read).
    busy = _omendb({"replicas": 3}, Observation(statefulset=_sts(3), tls_not_after=NOW,
                                                operation_waiting="waiting for the pre-upgrade backup prod-pre"))
    assert {c["type"]: c["status"] for c in busy["status"]["conditions"]}["Ready"] == "True"
    assert _status(busy) == ("InProgress", "waiting for the pre-upgrade backup prod-pre")
    restoring = _omendb({}, Observation(statefulset=_sts(0, replicas=0), restore={"name": "r1", "step": "Restore"}),
                        _ready()["status"])
    assert _status(restoring) == ("InProgress", "OmenDBRestore r1: step Restore")
    waking = _omendb({"replicas": 3, "hibernate": True}, Observation(statefulset=_sts(2, 2, 2),
                                                                      hibernation="Hibernating"))
    assert _status(waking)[0] == "InProgress"


def test_omendb_with_a_newer_generation_is_in_progress():
    lagging = _ready()
    lagging["metadata"]["generation"] = 2  # a new spec the operator has not acted on yet
    assert _status(lagging) == ("InProgress", "OmenDB generation is 2, but latest observed generation is 1")


def test_omendb_with_a_stuck_child_or_an_invalid_spec_is_failed():
    pod = _waiting_pod("prod-0", "ImagePullBackOff", 'Back-off pulling image "omendb/omendb:does-not-exist"')
    stuck = _omendb({"replicas": 1, "image": "omendb/omendb:does-not-exist"},
                    Observation(statefulset=_sts(0, replicas=1), stuck=find_stuck([pod], [], NOW)))
    status, message = _status(stuck)
    assert status == "Failed"
    assert message.startswith("pod prod-0 container omendb is waiting: ImagePullBackOff") and \
        message.endswith("image omendb/omendb:does-not-exist")
    owner = make_owner(spec={"replicas": "three"})
    owner["status"] = build_status(owner, None, Observation(spec_error="spec.replicas: not an integer"), None, NOW)
    assert _status(owner) == ("Failed", "spec.replicas: not an integer")
    missing_users = _omendb({"replicas": 1}, Observation(statefulset=_sts(1, replicas=1), apply_errors=[
        "Secret team-users (spec.auth.htpasswdSecretName) does not exist"]))
    assert _status(missing_users) == ("Failed", "Secret team-users (spec.auth.htpasswdSecretName) does not exist")


def test_omendb_whose_upgrade_needs_a_human_is_failed_and_one_at_work_in_progress():
    def with_upgrade(state: dict[str, Any], condition: tuple[str, str, str]) -> dict[str, Any]:
        return _omendb({"replicas": 3, "version": "0.2.0"}, Observation(
            statefulset=_sts(3), tls_not_after=NOW, upgrade=state, upgrade_condition=condition,
            running_version="0.1.0"), _ready()["status"])
    rolled_back = with_upgrade({"phase": "RolledBack", "failedImage": "omendb/omendb:0.2.0"},
                               ("False", "RolledBack", "rolled back to 0.1.0; 0.2.0 never became Ready"))
    assert _status(rolled_back) == ("Failed", "rolled back to 0.1.0; 0.2.0 never became Ready")
    blocked = with_upgrade({"phase": "BackupFailed"}, ("False", "BackupFailed", "the pre-upgrade backup failed"))
    assert _status(blocked)[0] == "Failed"
    aborting = with_upgrade({"phase": "RollingBack"}, ("False", "RollingBack", "aborted: spec set back"))
    stalled = next(c for c in aborting["status"]["conditions"] if c["type"] == "Stalled")
    assert stalled["status"] == "False"  # an abort the user asked for: no stall
    expanding = _omendb({"replicas": 3}, Observation(statefulset=_sts(3), tls_not_after=NOW,
                                                     storage_condition=("False", "ExpansionNotSupported",
                                                                        "StorageClass standard cannot expand")))
    assert _status(expanding) == ("Failed", "StorageClass standard cannot expand")


def test_omendb_held_at_zero_pods_until_a_human_acts_is_failed():
    failed_bootstrap = _omendb({"replicas": 1}, Observation(statefulset=_sts(0, replicas=0), bootstrap={
        "phase": "Failed", "error": "no backup 'x'",
        "message": "the bootstrap restore failed: no backup 'x'; the OmenDB stays at 0 pods. Fix the cause, then "
                   "`kubectl delete job prod-bootstrap-restore-0` to run it again"}))
    status, message = _status(failed_bootstrap)
    assert status == "Failed" and message.startswith("the bootstrap restore failed: no backup 'x'")
    running_bootstrap = _omendb({"replicas": 1}, Observation(statefulset=_sts(0, replicas=0), bootstrap={
        "phase": "Running", "message": "Job prod-bootstrap-restore-0 restores backup latest"}))
    assert _status(running_bootstrap)[0] == "InProgress"
    deleted = _omendb({"replicas": 1}, Observation(statefulset=_sts(0, replicas=0), restore={
        "name": "r1", "step": "Restore", "message": "OmenDBRestore r1 was deleted at step Restore: the pods stay "
                                                    "at 0; apply a new OmenDBRestore"}), _ready()["status"])
    status, message = _status(deleted)
    assert status == "Failed" and message.startswith("OmenDBRestore r1 was deleted at step Restore")


# ---- OmenDBBackup ----------------------------------------------------------------------------------------


def test_backup_pending_and_running_are_in_progress_succeeded_current_failed_failed():
    owner = make_owner()
    pending = backups.plan_backup(_backup(), _ctx(blocked_by="restore r1 of prod is in progress"), owner, None,
                                  [], NOW).status
    assert _status(_backup(status=pending)) == ("InProgress", "Pending: waiting: restore r1 of prod is in progress")
    started = backups.plan_backup(_backup(), _ctx(), owner, None, [], NOW).status
    assert _status(_backup(status=started)) == ("InProgress", "Running: Job nightly-backup takes a full backup of prod")
    running = backups.plan_backup(_backup(status=started), _ctx(), owner, _job("nightly-backup", None), [],
                                  NOW).status
    assert _status(_backup(status=running)) == ("InProgress", "Running: Job nightly-backup is running")
    result = {"backupId": "omendb-20261204T120000000Z-full", "type": "full", "sizeBytes": 10, "startLSN": 0,
              "endLSN": 4, "records": 4}
    succeeded = backups.plan_backup(_backup(status=started), _ctx(), owner, _job("nightly-backup", "Complete"),
                                    [_pod(0, json.dumps(result))], LATER).status
    assert _status(_backup(status=succeeded)) == ("Current", "Resource is Ready")
    failed = backups.plan_backup(_backup(status=started), _ctx(), owner, _job("nightly-backup", "Failed"),
                                 [_pod(7, "backup_tool: error: disk full")], LATER).status
    assert _status(_backup(status=failed)) == ("Failed", "backup_tool: error: disk full")
    orphan = backups.plan_backup(_backup(), _ctx(exists=False, spec=None), None, None, [], NOW).status
    status, message = _status(_backup(status=orphan))
    assert status == "Failed" and "does not exist" in message


def test_backup_whose_job_cannot_start_is_failed():
    owner = make_owner()
    started = backups.plan_backup(_backup(), _ctx(), owner, None, [], NOW).status
    pod = _waiting_pod("nightly-backup-x", "ImagePullBackOff", job="nightly-backup")
    stuck = backups.plan_backup(_backup(status=started), _ctx(), owner, _job("nightly-backup", None), [pod],
                                NOW).status
    status, message = _status(_backup(status=stuck))
    assert status == "Failed" and message.startswith("Job nightly-backup: pod nightly-backup-x")


def test_a_finished_backup_edited_afterwards_stays_finished_for_kstatus():
    owner = make_owner()
    started = backups.plan_backup(_backup(), _ctx(), owner, None, [], NOW).status
    failed = backups.plan_backup(_backup(status=started), _ctx(), owner, _job("nightly-backup", "Failed"),
                                 [_pod(7, "backup_tool: error: disk full")], LATER).status
    edited = _backup(status=failed)
    edited["metadata"]["generation"] = 2
    assert _status(edited)[0] == "InProgress"  # what kstatus says until the operator observes generation 2
    edited["status"] = backups.plan_backup(edited, _ctx(), owner, None, [], LATER).status
    assert _status(edited) == ("Failed", "backup_tool: error: disk full")
    # A Succeeded backup written by an operator before the kstatus conditions gains them, and stays Current.
    old = {"phase": "Succeeded", "observedGeneration": 1, "conditions": [
        {"type": "Ready", "status": "True", "reason": "Succeeded", "message": "backup x"}]}
    again = backups.plan_backup(_backup(status=old), _ctx(), owner, None, [], LATER).status
    assert {c["type"] for c in again["conditions"]} == {"Ready", "Reconciling", "Stalled"}
    assert _status(_backup(status=again))[0] == "Current"
    old_failed = {"phase": "Failed", "observedGeneration": 1, "error": "disk full", "conditions": [
        {"type": "Ready", "status": "False", "reason": "Failed", "message": "disk full"}]}
    assert _status(_backup(status=old_failed))[0] == "InProgress"  # as before: kstatus could not tell
    upgraded = backups.plan_backup(_backup(status=old_failed), _ctx(), owner, None, [], LATER).status
    assert _status(_backup(status=upgraded)) == ("Failed", "disk full")


# ---- OmenDBRestore ---------------------------------------------------------------------------------------


def test_restore_running_is_in_progress_succeeded_current_failing_and_failed_failed():
    owner = make_owner()
    pending = _step(_restore(), _view(owner), holder="r0").status
    assert _status(_restore(status=pending))[0] == "InProgress"
    scale_down = _step(_restore(), _view(owner)).status
    assert scale_down["step"] == "ScaleDown"
    assert _status(_restore(status=scale_down))[0] == "InProgress"
    down = _view(owner, statefulset_replicas=0, database_pods=0, ready_pods=0)
    in_restore = _restore(backupId="nope", status={"phase": "Running", "step": "Restore",
                                                   "stepStartedAt": "2026-11-27T07:59:00Z"})
    running = _step(in_restore, down, {"r1-restore-0": _done("r1-restore-0", outcome="Running")}).status
    assert _status(_restore(status=running)) == ("InProgress", "Running (step Restore): restore Jobs are running")
    failed_job = _done("r1-restore-0", outcome="Failed")
    put_back = _step(in_restore, down, {"r1-restore-0": failed_job},
                     {"r1-restore-0": [_pod(4, "backup_tool: error: no backup 'nope'")]}).status
    status, message = _status(_restore(status=put_back))
    assert (status, put_back["step"]) == ("Failed", "PutBack") and "no backup 'nope'" in message
    failed = _step(_restore(status=put_back), down,
                   {"r1-restore-0": failed_job, "r1-put-back-0": _done("r1-put-back-0")}).status
    status, message = _status(_restore(status=failed))
    assert (status, failed["phase"]) == ("Failed", "Failed") and "previous data is back in place" in message
    discarding = _restore(status={"phase": "Running", "step": "Discard", "stepStartedAt": "2026-11-27T07:59:00Z"})
    succeeded = _step(discarding, _view(owner), {"r1-discard-0": _done("r1-discard-0")}).status
    assert succeeded["phase"] == "Succeeded"
    assert _status(_restore(status=succeeded)) == ("Current", "Resource is Ready")
    missing = _step(_restore(), _view(owner, exists=False)).status
    status, message = _status(_restore(status=missing))
    assert status == "Failed" and "does not exist" in message


def test_restore_whose_job_cannot_start_is_failed():
    owner = make_owner()
    down = _view(owner, statefulset_replicas=0, database_pods=0, ready_pods=0)
    in_restore = _restore(status={"phase": "Running", "step": "Restore", "stepStartedAt": "2026-11-27T07:59:00Z"})
    pod = _waiting_pod("r1-restore-0-x", "CrashLoopBackOff", job="r1-restore-0", restartCount=5)
    stuck = _step(in_restore, down, {"r1-restore-0": _done("r1-restore-0", outcome="Running")},
                  {"r1-restore-0": [pod]}).status
    status, message = _status(_restore(status=stuck))
    assert status == "Failed" and "Job r1-restore-0: pod r1-restore-0-x container omendb is waiting: " \
                                  "CrashLoopBackOff (restarted 5 times)" in message


def test_the_checker_reads_a_list_and_names_each_object():
    ready, lagging = _ready(), copy.deepcopy(_ready())
    lagging["metadata"]["generation"] = 3
    results = kstatus.compute({"apiVersion": "v1", "kind": "List", "items": [ready, lagging]})
    assert [(r["kind"], r["name"], r["status"]) for r in results] == [("OmenDB", "prod", "Current"),
                                                                     ("OmenDB", "prod", "InProgress")]
