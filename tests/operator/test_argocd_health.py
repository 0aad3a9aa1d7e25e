"""Argo CD health checks (issue 18, item 2): deploy/argocd/omendb.io/KIND/health.lua, run by real Lua 5.4
(lupa) on statuses made by the operator's own builders (status.build_status, backups.plan_backup,
restores.plan_restore), so the Lua reads exactly the fields the operator writes. Every branch of each
script is taken by one case. The kstatus conditions (Reconciling, Stalled) are made with the operator's
status.set_condition, as the operator will write them."""

from __future__ import annotations

import copy
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import make_owner
from test_backup_restore_planners import _backup, _ctx, _done, _job, _pod, _restore, _step, _view
from test_omendb_status import _sts
from test_stuck import _waiting_pod

from omendb_operator.plans import backups
from omendb_operator.plans.status import Observation, build_status, set_condition
from omendb_operator.plans.stuck import find_stuck
from omendb_operator.spec import parse_spec

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
import argocd_health  # noqa: E402

NOW = dt.datetime(2026, 12, 4, 12, tzinfo=dt.UTC)
LATER = NOW + dt.timedelta(minutes=1)


def health(kind: str, obj: dict[str, Any]) -> tuple[str, str]:
    result = argocd_health.health(kind, obj)
    assert set(result) == {"status", "message"} and result["message"]
    assert result["status"] in {"Healthy", "Progressing", "Degraded", "Suspended"}  # Argo CD's own words
    return result["status"], result["message"]


def with_status(obj: dict[str, Any], status: dict[str, Any], generation: int | None = None) -> dict[str, Any]:
    out = copy.deepcopy(obj)
    out["status"] = status
    if generation is not None:
        out["metadata"]["generation"] = generation
    return out


def add_condition(status: dict[str, Any], type_: str, state: str, reason: str, message: str) -> dict[str, Any]:
    out = copy.deepcopy(status)
    out["conditions"].append(set_condition(out["conditions"], type_, state, reason, message,
                                           out["observedGeneration"], NOW))
    return out


# ---- OmenDB ----------------------------------------------------------------------------------------------


def omendb(spec: dict[str, Any], obs: Observation, previous: dict[str, Any] | None = None) -> dict[str, Any]:
    owner = make_owner(spec=spec)
    parsed = parse_spec(spec)
    return with_status(owner, build_status(owner, parsed, obs, previous, NOW))


def ready_omendb() -> dict[str, Any]:
    return omendb({"replicas": 3}, Observation(statefulset=_sts(3), tls_not_after=NOW))


def test_omendb_without_status_is_progressing():
    assert health("OmenDB", make_owner()) == ("Progressing", "Waiting for the OmenDB operator to report a status")


def test_omendb_ready_is_healthy():
    obj = ready_omendb()
    assert obj["status"]["phase"] == "Ready"
    assert health("OmenDB", obj) == ("Healthy", "3/3 pods are ready")


def test_omendb_being_created_or_rolled_out_is_progressing():
    creating = omendb({"replicas": 3}, Observation(statefulset=_sts(1)))
    assert creating["status"]["phase"] == "Creating"
    assert health("OmenDB", creating) == ("Progressing", "rolling out 0.1.0: 1/3 pods ready")
    rolling = omendb({"replicas": 3}, Observation(statefulset=_sts(3, revision_done=False, updated=1)),
                     ready_omendb()["status"])
    assert rolling["status"]["phase"] == "Updating"
    assert health("OmenDB", rolling)[0] == "Progressing"
    # Ready, but a day-2 operation still works on it: not yet Healthy.
    busy = omendb({"replicas": 3}, Observation(statefulset=_sts(3), operation_waiting="resizing the volumes"))
    assert busy["status"]["phase"] == "Ready"
    assert health("OmenDB", busy) == ("Progressing", "resizing the volumes")
    restoring = omendb({}, Observation(statefulset=_sts(0, replicas=0), restore={"name": "r1", "step": "Restore"}),
                       ready_omendb()["status"])
    assert health("OmenDB", restoring) == ("Progressing", "OmenDBRestore r1: step Restore")


def test_omendb_whose_status_is_older_than_its_spec_is_progressing():
    stale = ready_omendb()
    stale["metadata"]["generation"] = 2  # a new spec applied; the operator has not answered yet
    assert health("OmenDB", stale) == ("Progressing", "Waiting for the OmenDB operator to act on generation 2")
    # Even a failed status is stale then: the new spec may be the fix.
    failed = make_owner(generation=2)
    failed["status"] = build_status(make_owner(), None, Observation(spec_error="bad"), None, NOW)
    assert health("OmenDB", failed)[0] == "Progressing"


def test_omendb_failed_or_degraded_is_degraded():
    owner = make_owner(spec={"replicas": "three"})
    invalid = with_status(owner, build_status(owner, None, Observation(spec_error="spec.replicas: not an integer"),
                                              None, NOW))
    assert invalid["status"]["phase"] == "Failed"
    assert health("OmenDB", invalid) == ("Degraded", "spec.replicas: not an integer")
    apply_error = omendb({"replicas": 3}, Observation(statefulset=_sts(3), apply_errors=["StatefulSet: 422"]))
    assert apply_error["status"]["phase"] == "Degraded"
    assert health("OmenDB", apply_error) == ("Degraded", "StatefulSet: 422")
    lost_one = omendb({"replicas": 3}, Observation(statefulset=_sts(2)), ready_omendb()["status"])
    assert lost_one["status"]["phase"] == "Updating"  # Degraded=True, whatever the phase
    assert health("OmenDB", lost_one) == ("Degraded", "1 of 3 pods are not ready")
    # Phase Degraded with Degraded=False: every pod gone from a database that was ready.
    none_left = omendb({"replicas": 3}, Observation(statefulset=_sts(0, replicas=0)), ready_omendb()["status"])
    conditions = {c["type"]: c["status"] for c in none_left["status"]["conditions"]}
    assert (none_left["status"]["phase"], conditions["Degraded"]) == ("Degraded", "False")
    assert health("OmenDB", none_left) == ("Degraded", "no problems found")


def test_omendb_hibernated_is_suspended_and_hibernating_progressing():
    spec = {"replicas": 3, "hibernate": True}
    going = omendb(spec, Observation(statefulset=_sts(2, 2, 2), hibernation="Hibernating"))
    assert health("OmenDB", going) == ("Progressing", "2 pod(s) left")
    done = omendb(spec, Observation(statefulset=_sts(0, 0, 0), hibernation="Hibernated"))
    assert done["status"]["phase"] == "Hibernated"
    status, message = health("OmenDB", done)
    assert status == "Suspended" and message.startswith("spec.hibernate is true")


def test_omendb_kstatus_conditions_are_honoured():
    # As the builders write them now (issue 18): a stuck child stalls a rollout, naming the pod.
    pod = _waiting_pod("prod-1", "ImagePullBackOff", 'Back-off pulling image "omendb/omendb:does-not-exist"')
    stuck = omendb({"replicas": 3}, Observation(statefulset=_sts(2), stuck=find_stuck([pod], [], NOW)),
                   ready_omendb()["status"])
    conditions = {c["type"]: c for c in stuck["status"]["conditions"]}
    assert (conditions["Stalled"]["status"], conditions["Reconciling"]["status"]) == ("True", "False")
    status, message = health("OmenDB", stuck)
    assert status == "Degraded" and message.startswith("pod prod-1 container omendb is waiting: ImagePullBackOff")
    # Ready, yet an operation runs: Reconciling=True carries its message.
    busy = omendb({"replicas": 3}, Observation(statefulset=_sts(3), tls_not_after=NOW,
                                               operation_waiting="waiting for the pre-upgrade backup prod-pre"))
    assert {c["type"]: c["status"] for c in busy["status"]["conditions"]}["Reconciling"] == "True"
    assert health("OmenDB", busy) == ("Progressing", "waiting for the pre-upgrade backup prod-pre")
    # Both False (as every steady status has them): the other rules decide.
    calm = ready_omendb()
    assert {c["type"]: c["status"] for c in calm["status"]["conditions"]}["Stalled"] == "False"
    assert health("OmenDB", calm)[0] == "Healthy"
    # TLS off by choice (TLSReady True, reason TLSDisabled) is Healthy too.
    plain = omendb({"replicas": 3, "tls": {"enabled": False}}, Observation(statefulset=_sts(3)))
    assert health("OmenDB", plain) == ("Healthy", "3/3 pods are ready")
    # Hand-written ones too (another writer, or an older status).
    obj = ready_omendb()
    obj["status"]["conditions"] = [c for c in obj["status"]["conditions"] if c["type"] not in
                                   ("Reconciling", "Stalled")]
    reconciling = with_status(obj, add_condition(obj["status"], "Reconciling", "True", "RollingOut",
                                                 "rolling out 0.1.1"))
    assert health("OmenDB", reconciling) == ("Progressing", "rolling out 0.1.1")


def test_omendb_status_without_a_progressing_condition_falls_back_on_ready():
    # Not written by this operator (every status it builds has Progressing and Reconciling); the script's last
    # branch.
    creating = omendb({"replicas": 3}, Observation(statefulset=_sts(1)))
    creating["status"]["conditions"] = [c for c in creating["status"]["conditions"]
                                        if c["type"] not in ("Progressing", "Reconciling")]
    assert health("OmenDB", creating) == ("Progressing", "1/3 pods are ready")


# ---- OmenDBBackup ----------------------------------------------------------------------------------------


def test_backup_phases():
    owner = make_owner()
    assert health("OmenDBBackup", _backup()) == ("Progressing",
                                                 "Waiting for the OmenDB operator to start the backup")
    pending = backups.plan_backup(_backup(), _ctx(blocked_by="restore r1 of prod is in progress"), owner, None,
                                  [], NOW).status
    assert health("OmenDBBackup", _backup(status=pending)) == (
        "Progressing", "Pending: waiting: restore r1 of prod is in progress")
    started = backups.plan_backup(_backup(), _ctx(), owner, None, [], NOW).status
    assert started["phase"] == "Running"
    assert health("OmenDBBackup", _backup(status=started)) == (
        "Progressing", "Running: Job nightly-backup takes a full backup of prod")
    result = {"backupId": "omendb-20261204T120000000Z-full", "type": "full", "sizeBytes": 10, "startLSN": 0,
              "endLSN": 4, "records": 4}
    succeeded = backups.plan_backup(_backup(status=started), _ctx(), owner, _job("nightly-backup", "Complete"),
                                    [_pod(0, json.dumps(result))], LATER).status
    status, message = health("OmenDBBackup", _backup(status=succeeded))
    assert status == "Healthy" and message.startswith("backup omendb-20261204T120000000Z-full")
    failed = backups.plan_backup(_backup(status=started), _ctx(), owner, _job("nightly-backup", "Failed"),
                                 [_pod(7, "backup_tool: error: disk full")], LATER).status
    assert health("OmenDBBackup", _backup(status=failed)) == ("Degraded", "backup_tool: error: disk full")
    # Finished is final: a spec edited afterwards (generation 2) changes nothing.
    assert health("OmenDBBackup", with_status(_backup(), failed, generation=2))[0] == "Degraded"
    assert health("OmenDBBackup", with_status(_backup(), succeeded, generation=2))[0] == "Healthy"
    assert health("OmenDBBackup", with_status(_backup(), started, generation=2)) == (
        "Progressing", "Waiting for the OmenDB operator to act on generation 2")
    missing = backups.plan_backup(_backup(), _ctx(exists=False, spec=None), None, None, [], NOW).status
    status, message = health("OmenDBBackup", _backup(status=missing))
    assert status == "Degraded" and "does not exist" in message


def test_backup_kstatus_conditions_are_honoured():
    owner = make_owner()
    started = backups.plan_backup(_backup(), _ctx(), owner, None, [], NOW).status
    reconciling = {c["type"]: c for c in started["conditions"]}["Reconciling"]
    assert reconciling["status"] == "True"
    assert health("OmenDBBackup", _backup(status=started)) == (
        "Progressing", "Running: Job nightly-backup takes a full backup of prod")
    pod = _waiting_pod("nightly-backup-x", "ImagePullBackOff", job="nightly-backup")
    stuck = backups.plan_backup(_backup(status=started), _ctx(), owner, _job("nightly-backup", None), [pod],
                                NOW).status
    assert stuck["phase"] == "Running"
    status, message = health("OmenDBBackup", _backup(status=stuck))
    assert status == "Degraded" and message.startswith("Job nightly-backup: pod nightly-backup-x")


# ---- OmenDBRestore ---------------------------------------------------------------------------------------


def test_restore_phases():
    owner = make_owner()
    assert health("OmenDBRestore", _restore()) == ("Progressing",
                                                   "Waiting for the OmenDB operator to start the restore")
    pending = _step(_restore(), _view(owner), holder="r0").status
    assert health("OmenDBRestore", _restore(status=pending)) == (
        "Progressing", "Pending: waiting: restore r0 of prod is in progress; this one starts after it")
    scale_down = _step(_restore(), _view(owner)).status
    status, message = health("OmenDBRestore", _restore(status=scale_down))
    assert (status, scale_down["step"]) == ("Progressing", "ScaleDown")
    assert message.startswith("Running (step ScaleDown): ")
    assert health("OmenDBRestore", with_status(_restore(), scale_down, generation=2)) == (
        "Progressing", "Waiting for the OmenDB operator to act on generation 2")
    # A failed restore Job: PutBack (the previous data goes back), then Failed.
    down = _view(owner, statefulset_replicas=0, database_pods=0, ready_pods=0)
    in_restore = _restore(backupId="nope", status={"phase": "Running", "step": "Restore",
                                                   "stepStartedAt": "2026-12-04T11:59:00Z"})
    failed_job = _done("r1-restore-0", outcome="Failed")
    put_back = _step(in_restore, down, {"r1-restore-0": failed_job},
                     {"r1-restore-0": [_pod(4, "backup_tool: error: no backup 'nope'")]}).status
    status, message = health("OmenDBRestore", _restore(status=put_back))
    assert (status, put_back["step"]) == ("Degraded", "PutBack") and "no backup 'nope'" in message
    in_put_back = _restore(status=put_back)
    failed = _step(in_put_back, down, {"r1-restore-0": failed_job, "r1-put-back-0": _done("r1-put-back-0")}).status
    status, message = health("OmenDBRestore", _restore(status=failed))
    assert (status, failed["phase"]) == ("Degraded", "Failed") and "previous data is back in place" in message
    # Discard done -> Succeeded.
    discarding = _restore(status={"phase": "Running", "step": "Discard", "stepStartedAt": "2026-12-04T11:59:00Z"})
    live = {"r1-discard-0": _done("r1-discard-0")}
    succeeded = _step(discarding, _view(owner), live).status
    assert succeeded["phase"] == "Succeeded"
    assert health("OmenDBRestore", with_status(_restore(), succeeded, generation=2))[0] == "Healthy"
    missing = _step(_restore(), _view(owner, exists=False)).status
    status, message = health("OmenDBRestore", _restore(status=missing))
    assert status == "Degraded" and "does not exist" in message


def test_restore_kstatus_conditions_are_honoured():
    owner = make_owner()
    scale_down = _step(_restore(), _view(owner)).status
    assert {c["type"]: c["status"] for c in scale_down["conditions"]}["Reconciling"] == "True"
    down = _view(owner, statefulset_replicas=0, database_pods=0, ready_pods=0)
    in_restore = _restore(status={"phase": "Running", "step": "Restore", "stepStartedAt": "2026-12-04T11:59:00Z"})
    pod = _waiting_pod("r1-restore-0-x", "CreateContainerConfigError", 'secret "prod-backup-key" not found',
                       job="r1-restore-0")
    stuck = _step(in_restore, down, {"r1-restore-0": _done("r1-restore-0", outcome="Running")},
                  {"r1-restore-0": [pod]}).status
    assert stuck["step"] == "Restore"
    status, message = health("OmenDBRestore", _restore(status=stuck))
    assert status == "Degraded" and "Job r1-restore-0: pod r1-restore-0-x" in message


# ---- packaging -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", argocd_health.KINDS)
def test_the_argocd_cm_patch_carries_each_script_under_argo_cds_key(kind):
    patch = yaml.safe_load(argocd_health.PATCH.read_text())
    assert (patch["kind"], patch["metadata"]["name"]) == ("ConfigMap", "argocd-cm")
    assert patch["data"][f"resource.customizations.health.omendb.io_{kind}"] == \
        argocd_health.script_path(kind).read_text()
    assert argocd_health.PATCH.read_text() == argocd_health.render(), \
        "deploy/argocd/argocd-cm-patch.yaml is stale: run `python scripts/argocd_health.py render`"


@pytest.mark.parametrize("kind", argocd_health.KINDS)
def test_the_scripts_use_nothing_outside_argo_cds_sandbox(kind):
    text = argocd_health.script_path(kind).read_text()
    for name in argocd_health.UNSAFE_GLOBALS:
        assert f"{name}." not in text and f"{name}(" not in text, f"{kind}/health.lua uses {name}"
