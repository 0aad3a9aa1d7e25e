"""upgrade.plan_upgrade / plan_after_rollout: the upgrade state machine, fed only its own status, so any
state it stops in is one it resumes from."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

import pytest

from omendb_operator.plans import upgrade as U
from omendb_operator.plans.rollout import RolloutStep

T0 = dt.datetime(2026, 3, 1, 12, tzinfo=dt.UTC)
OLD, NEW = "omendb/omendb:0.1.0", "omendb/omendb:0.1.1"


def inputs(**kw) -> U.UpgradeInputs:
    base = U.UpgradeInputs(name="db", spec_image=NEW, spec_version="0.1.1", live_image=OLD,
                           current_version="0.1.0", previous=None, now=T0)
    return replace(base, **kw)


def test_no_statefulset_yet_renders_the_spec_and_starts_nothing():
    plan = U.plan_upgrade(inputs(live_image=None))
    assert (plan.image, plan.state, plan.events) == (NEW, None, [])


def test_same_image_is_no_upgrade():
    plan = U.plan_upgrade(inputs(spec_image=OLD, spec_version="0.1.0"))
    assert plan.image == OLD and plan.state is None and plan.rollout_allowed


def test_full_upgrade_backup_then_rollout_then_succeeded():
    # 1. The version changes: a backup is created, the pods keep the old image, nothing is replaced.
    plan = U.plan_upgrade(inputs())
    st = plan.state
    assert st["phase"] == U.BACKING_UP and st["kind"] == U.VERSION
    assert plan.create_backup == st["backupName"] and st["backupName"].startswith("db-pre-upgrade-")
    assert (st["fromImage"], st["toImage"], st["fromVersion"], st["toVersion"]) == (OLD, NEW, "0.1.0", "0.1.1")
    assert plan.image == OLD and not plan.rollout_allowed
    assert [e[1] for e in plan.events] == ["UpgradeStarted", "PreUpgradeBackup"]
    # 2. The backup runs: wait (the same name every time: an operator restart finds it again).
    plan = U.plan_upgrade(inputs(previous=st, backup_phase="Running", now=T0 + dt.timedelta(minutes=1)))
    assert plan.state["phase"] == U.BACKING_UP and plan.create_backup is None and plan.image == OLD
    assert plan.state["backupName"] == st["backupName"] and "Running" in plan.waiting
    # 3. It succeeded: the new image goes into the StatefulSet, pods may be replaced.
    plan = U.plan_upgrade(inputs(previous=plan.state, backup_phase="Succeeded"))
    assert plan.state["phase"] == U.ROLLING_OUT and plan.image == NEW and plan.rollout_allowed
    # 4. After the apply, the rollout planner says which pod goes.
    acts = U.plan_after_rollout(plan.state, RolloutStep("delete", "db-2", "replicas first"), "r2", NEW,
                                "0.1.1", T0, True)
    assert acts.delete_pod == "db-2" and acts.state["pod"] == "db-2" and acts.state["revision"] == "r2"
    # 5. Every pod is on the new revision: Succeeded.
    plan = U.plan_upgrade(inputs(previous=acts.state, now=T0 + dt.timedelta(minutes=3)))
    acts = U.plan_after_rollout(plan.state, RolloutStep("done"), "r2", NEW, "0.1.1", T0, True)
    assert acts.state["phase"] == U.SUCCEEDED and "pod" not in acts.state and acts.state["finishedAt"]
    assert [e[1] for e in acts.events] == ["UpgradeSucceeded"]
    # 6. Nothing more to do once the StatefulSet has the new image.
    plan = U.plan_upgrade(inputs(previous=acts.state, live_image=NEW, current_version="0.1.1"))
    assert plan.state["phase"] == U.SUCCEEDED and plan.image == NEW and not plan.events
    assert U.upgrade_condition(plan.state)[:2] == ("True", "UpgradeSucceeded")


def test_a_running_backup_job_delays_the_start():
    plan = U.plan_upgrade(inputs(active_backup_jobs=("db-backup-full-123",)))
    assert plan.state["phase"] == U.PENDING and plan.create_backup is None and plan.image == OLD
    assert "db-backup-full-123" in plan.waiting and not plan.rollout_allowed
    plan = U.plan_upgrade(inputs(previous=plan.state))
    assert plan.state["phase"] == U.BACKING_UP and plan.create_backup


def test_failed_backup_blocks_until_deleted_or_opted_out():
    st = U.plan_upgrade(inputs()).state
    plan = U.plan_upgrade(inputs(previous=st, backup_phase="Failed", backup_error="disk full"))
    assert plan.state["phase"] == U.BACKUP_FAILED and plan.image == OLD and not plan.rollout_allowed
    assert [e[:2] for e in plan.events] == [("Warning", "UpgradeBlocked")]
    assert "disk full" in plan.state["message"] and "kubectl delete omendbbackup" in plan.state["message"]
    assert U.upgrade_condition(plan.state)[:2] == ("False", "BackupFailed")
    blocked = plan.state
    # Still failed: no new event.
    assert U.plan_upgrade(inputs(previous=blocked, backup_phase="Failed")).events == []
    # The user deleted the failed backup: it is taken again.
    retry = U.plan_upgrade(inputs(previous=blocked, backup_phase=None))
    assert retry.state["phase"] == U.BACKING_UP and retry.create_backup == blocked["backupName"]
    # Or opts out.
    out = U.plan_upgrade(inputs(previous=blocked, backup_phase="Failed", backup_wanted=False))
    assert out.state["phase"] == U.ROLLING_OUT and out.image == NEW
    assert [e[1] for e in out.events] == ["UpgradeWithoutBackup"]


def test_opting_out_of_the_backup_rolls_out_at_once():
    plan = U.plan_upgrade(inputs(backup_wanted=False))
    assert plan.state["phase"] == U.ROLLING_OUT and plan.image == NEW and plan.create_backup is None
    assert "backupName" not in plan.state


def _rolling(pod="db-1", since=T0):
    return {"phase": U.ROLLING_OUT, "kind": U.VERSION, "fromImage": OLD, "toImage": NEW, "fromVersion": "0.1.0",
            "toVersion": "0.1.1", "startedAt": U.timestamp(T0), "pod": pod, "podReplacedAt": U.timestamp(since)}


def test_timeout_rolls_back_keeps_the_data_and_pins_the_failed_image():
    st = _rolling()
    # Within the timeout: keep waiting.
    plan = U.plan_upgrade(inputs(previous=st, watched_ok=False, timeout_seconds=60,
                                 now=T0 + dt.timedelta(seconds=60)))
    assert plan.state["phase"] == U.ROLLING_OUT and plan.image == NEW
    # Past it: roll back to the old image.
    plan = U.plan_upgrade(inputs(previous=st, watched_ok=False, timeout_seconds=60,
                                 now=T0 + dt.timedelta(seconds=61)))
    assert plan.state["phase"] == U.ROLLING_BACK and plan.image == OLD and plan.rollout_allowed
    assert plan.state["failedImage"] == NEW
    assert [e[:2] for e in plan.events] == [("Warning", "UpgradeRollingBack")]
    assert U.upgrade_condition(plan.state)[:2] == ("False", "RollingBack")
    # The broken pod is replaced (by the old image); then RolledBack.
    acts = U.plan_after_rollout(plan.state, RolloutStep("delete", "db-1"), "r1", OLD, "0.1.0", T0, True)
    assert acts.delete_pod == "db-1"
    acts = U.plan_after_rollout(acts.state, RolloutStep("done"), "r1", OLD, "0.1.0", T0, True)
    assert acts.state["phase"] == U.ROLLED_BACK and [e[:2] for e in acts.events] == [
        ("Warning", "UpgradeRolledBack")]
    assert U.upgrade_condition(acts.state)[:2] == ("False", "RolledBack")
    # The spec still names the failed image: it is not retried, the old one stays.
    plan = U.plan_upgrade(inputs(previous=acts.state, live_image=OLD))
    assert plan.image == OLD and plan.state["phase"] == U.ROLLED_BACK and not plan.events
    # A new version clears the pin and upgrades again.
    plan = U.plan_upgrade(inputs(previous=acts.state, spec_image="omendb/omendb:0.1.2", spec_version="0.1.2"))
    assert plan.state["phase"] == U.BACKING_UP and "failedImage" not in plan.state
    # Back to the old version: nothing to do, condition healthy again.
    plan = U.plan_upgrade(inputs(previous=acts.state, spec_image=OLD, spec_version="0.1.0"))
    assert plan.image == OLD and "failedImage" not in plan.state
    assert U.upgrade_condition(plan.state)[0] == "True"


def test_setting_the_version_back_aborts():
    st = U.plan_upgrade(inputs()).state
    plan = U.plan_upgrade(inputs(previous=st, spec_image=OLD, spec_version="0.1.0", backup_phase="Running"))
    assert plan.state["phase"] == U.ABORTED and plan.image == OLD
    plan = U.plan_upgrade(inputs(previous=_rolling(), spec_image=OLD, spec_version="0.1.0", live_image=NEW))
    assert plan.state["phase"] == U.ROLLING_BACK and plan.image == OLD and "failedImage" not in plan.state
    acts = U.plan_after_rollout(plan.state, RolloutStep("done"), "r1", OLD, "0.1.0", T0, True)
    assert acts.state["phase"] == U.ABORTED


def test_a_new_target_mid_rollout_keeps_the_backup_and_the_origin():
    plan = U.plan_upgrade(inputs(previous=_rolling(), spec_image="omendb/omendb:0.2.0", spec_version="0.2.0"))
    assert plan.state["phase"] == U.ROLLING_OUT and plan.image == "omendb/omendb:0.2.0"
    assert plan.state["fromImage"] == OLD


def test_hibernated_cluster_keeps_its_image_and_replaces_nothing():
    plan = U.plan_upgrade(inputs(hibernated=True))
    assert plan.image == OLD and not plan.rollout_allowed and plan.state is None


def test_a_template_change_is_a_rollout_without_backup_and_halts_on_timeout():
    acts = U.plan_after_rollout(None, RolloutStep("delete", "db-0"), "r2", OLD, "0.1.0", T0, True)
    st = acts.state
    assert st["kind"] == U.TEMPLATE and st["phase"] == U.ROLLING_OUT and acts.delete_pod == "db-0"
    assert "backupName" not in st
    plan = U.plan_upgrade(inputs(previous=st, spec_image=OLD, spec_version="0.1.0", watched_ok=False,
                                 now=T0 + dt.timedelta(minutes=11)))
    assert plan.state["phase"] == U.HALTED and plan.image == OLD
    assert [e[1] for e in plan.events] == ["RolloutHalted"]
    # Halted: nothing is replaced until the template changes again.
    halted = U.plan_after_rollout(plan.state, RolloutStep("delete", "db-1"), "r2", OLD, "0.1.0", T0, True)
    assert halted.delete_pod is None
    resumed = U.plan_after_rollout(plan.state, RolloutStep("delete", "db-0"), "r3", OLD, "0.1.0", T0, True)
    assert resumed.delete_pod == "db-0" and resumed.state["phase"] == U.ROLLING_OUT


def test_a_running_backup_job_pauses_pod_replacement():
    acts = U.plan_after_rollout(_rolling(), RolloutStep("delete", "db-0"), "r2", NEW, "0.1.1", T0, True,
                                active_backup_jobs=("db-backup-incremental-9",))
    assert acts.delete_pod is None and "db-backup-incremental-9" in acts.waiting


def test_switchover_is_asked_before_the_primary():
    acts = U.plan_after_rollout(_rolling(), RolloutStep("switchover", "db-0"), "r2", NEW, "0.1.1", T0, True)
    assert acts.switchover_pod == "db-0" and acts.delete_pod is None


@pytest.mark.parametrize("phase", [U.PENDING, U.BACKING_UP, U.BACKUP_FAILED, U.ROLLING_OUT, U.ROLLING_BACK,
                                   U.ROLLED_BACK, U.SUCCEEDED, U.ABORTED])
def test_resume_from_any_state_is_stable(phase):
    """An operator that restarts re-reads status.upgrade: planning twice from the same observations gives
    the same decision (no second backup, no second event for a blocked or finished upgrade)."""
    st = {**_rolling(), "phase": phase, "backupName": "db-pre-upgrade-abc"}
    if phase == U.ROLLED_BACK:
        st["failedImage"] = NEW
    obs = {"previous": st, "backup_phase": "Running", "watched_ok": True}
    first = U.plan_upgrade(inputs(**obs))
    second = U.plan_upgrade(inputs(**{**obs, "previous": first.state}))
    assert second.state == first.state and second.image == first.image
    assert second.create_backup is None


def test_a_statefulset_recreated_mid_upgrade_keeps_the_upgrade_s_image():
    """Volume expansion deletes the StatefulSet (orphaning its pods) and applies it again: while it is gone
    the upgrade's own state says which image it must get back."""
    st = U.plan_upgrade(inputs()).state  # BackingUp
    plan = U.plan_upgrade(inputs(previous=st, live_image=None, backup_phase="Running"))
    assert plan.image == OLD and plan.state["phase"] == U.BACKING_UP
    plan = U.plan_upgrade(inputs(previous=_rolling(), live_image=None))
    assert plan.image == NEW
    rolled = {**_rolling(), "phase": U.ROLLED_BACK, "failedImage": NEW}
    assert U.plan_upgrade(inputs(previous=rolled, live_image=None)).image == OLD
    assert U.plan_upgrade(inputs(previous={**_rolling(), "phase": U.SUCCEEDED}, live_image=None)).image == NEW
