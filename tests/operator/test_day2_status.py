"""status.build_status for the day-2 operations: hibernation, rollouts under OnDelete, upgrade and storage
blocks and their conditions, the spec fields they read."""

from __future__ import annotations

import datetime as dt

import pytest
from conftest import make_owner

from omendb_operator.plans.status import Observation, build_status
from omendb_operator.spec import SpecError, parse_spec

NOW = dt.datetime(2026, 1, 1, 12, tzinfo=dt.UTC)


def _sts(replicas, ready, updated):
    # OnDelete: the controller never moves currentRevision; updatedReplicas says how many pods are current.
    return {"metadata": {"generation": 2}, "status": {
        "replicas": replicas, "readyReplicas": ready, "updatedReplicas": updated, "observedGeneration": 2,
        "currentRevision": "r1", "updateRevision": "r2"}}


def _conds(status):
    return {c["type"]: c for c in status["conditions"]}


def test_ondelete_rollout_is_complete_when_every_pod_is_updated():
    spec = parse_spec({"replicas": 2})
    assert build_status(make_owner(), spec, Observation(statefulset=_sts(2, 2, 2)), None, NOW)["phase"] == "Ready"
    ready = {"currentVersion": "0.1.0", "conditions": [{"type": "Ready", "status": "True"}]}
    status = build_status(make_owner(), spec, Observation(statefulset=_sts(2, 2, 1)), ready, NOW)
    assert status["phase"] == "Updating"


def test_hibernated_phase_and_conditions():
    spec = parse_spec({"replicas": 3, "hibernate": True})
    prev = {"currentVersion": "0.1.0", "phase": "Ready"}
    going = build_status(make_owner(), spec, Observation(statefulset=_sts(2, 2, 2), hibernation="Hibernating"),
                         prev, NOW)
    assert going["phase"] == "Updating" and _conds(going)["Progressing"]["status"] == "True"
    done = build_status(make_owner(), spec, Observation(statefulset=_sts(0, 0, 0), hibernation="Hibernated"),
                        going, NOW)
    c = _conds(done)
    assert done["phase"] == "Hibernated" and done["currentVersion"] == "0.1.0"
    assert (c["Ready"]["status"], c["Ready"]["reason"]) == ("False", "Hibernated")
    assert "spec.hibernate: false" in c["Ready"]["message"]
    assert c["Degraded"]["status"] == "False"


def test_upgrade_and_storage_blocks_and_conditions():
    spec = parse_spec({"version": "0.1.1"})
    obs = Observation(statefulset=_sts(1, 1, 1), upgrade={"phase": "BackingUp"},
                      upgrade_condition=("True", "UpgradeInProgress", "taking the backup"),
                      storage={"phase": "Blocked"}, storage_condition=("False", "ExpansionNotSupported", "no"),
                      operation_waiting="waiting for the pre-upgrade backup db-pre-upgrade-1 (Running)",
                      running_version="0.1.0")
    status = build_status(make_owner(), spec, obs, None, NOW)
    c = _conds(status)
    assert status["upgrade"] == {"phase": "BackingUp"} and status["storage"] == {"phase": "Blocked"}
    assert status["currentVersion"] == "0.1.0"  # the pods still run the old version
    assert c["UpgradeHealthy"]["reason"] == "UpgradeInProgress" and c["StorageResized"]["status"] == "False"
    assert (c["Progressing"]["status"], c["Progressing"]["reason"]) == ("True", "OperationInProgress")
    assert "db-pre-upgrade-1" in c["Progressing"]["message"]
    # Without an operation the blocks are removed by the patch (they are managed keys).
    from omendb_operator.plans.status import status_patch

    plain = build_status(make_owner(), spec, Observation(statefulset=_sts(1, 1, 1)), status, NOW)
    assert status_patch(status, plain)["upgrade"] is None


def test_upgrade_spec_defaults_and_errors():
    spec = parse_spec({})
    assert spec.upgrade.backup_before_upgrade and spec.upgrade.timeout_seconds == 600 and not spec.hibernate
    spec = parse_spec({"upgrade": {"timeout": "1h2m3s", "backupBeforeUpgrade": False}, "hibernate": True})
    assert spec.upgrade.timeout_seconds == 3723 and not spec.upgrade.backup_before_upgrade and spec.hibernate
    with pytest.raises(SpecError, match="spec.upgrade.timeout 'soon' is not a duration"):
        parse_spec({"upgrade": {"timeout": "soon"}})
