"""volumes.plan_volumes: grow claims where the StorageClass allows it, never shrink, say why not."""

from __future__ import annotations

from omendb_operator.plans.volumes import ClaimView, claim_view, plan_volumes

WANT = {"data": "20Gi", "wal": "2Gi"}


def claims(data="10Gi", wal="2Gi", sc="fast", n=2, capacity=None):
    out = []
    for i in range(n):
        out.append(ClaimView(f"data-db-{i}", "data", data, capacity or data, sc, True))
        out.append(ClaimView(f"wal-db-{i}", "wal", wal, wal, sc, True))
    return out


def test_grows_every_bound_claim_and_recreates_the_statefulset():
    plan = plan_volumes(WANT, claims(), {"fast": True}, {"data": "10Gi", "wal": "2Gi"})
    assert plan.patches == [("data-db-0", "20Gi"), ("data-db-1", "20Gi")]
    assert plan.recreate_statefulset
    assert plan.status["phase"] == "Expanding" and plan.condition[:2] == ("False", "Expanding")


def test_expanding_until_the_capacity_follows():
    plan = plan_volumes(WANT, claims(data="20Gi", capacity="10Gi"), {"fast": True}, {"data": "20Gi", "wal": "2Gi"})
    assert plan.patches == [] and not plan.recreate_statefulset
    assert plan.status["phase"] == "Expanding"
    assert plan.status["claims"][0] == {"name": "data-db-0", "requested": "20Gi", "capacity": "10Gi"}


def test_resized_reported_once_after_an_expansion_and_nothing_when_none_happened():
    done = claims(data="20Gi")
    assert plan_volumes(WANT, done, {"fast": True}, {"data": "20Gi", "wal": "2Gi"}).status is None
    plan = plan_volumes(WANT, done, {"fast": True}, {"data": "20Gi", "wal": "2Gi"}, previous={"phase": "Expanding"})
    assert plan.status["phase"] == "Resized" and plan.condition[0] == "True"


def test_storage_class_without_expansion_is_a_clear_message_not_a_patch():
    plan = plan_volumes(WANT, claims(sc="standard"), {"standard": False}, {"data": "10Gi", "wal": "2Gi"})
    assert plan.patches == [] and not plan.recreate_statefulset
    assert plan.status["phase"] == "Blocked" and plan.condition[1] == "ExpansionNotSupported"
    assert "StorageClass standard does not set allowVolumeExpansion: true" in plan.status["message"]
    assert plan.warnings


def test_shrinking_is_refused():
    plan = plan_volumes({"data": "5Gi", "wal": "2Gi"}, claims(), {"fast": True}, {"data": "10Gi", "wal": "2Gi"})
    assert plan.patches == [] and plan.condition[1] == "ShrinkRefused"
    assert "cannot shrink" in plan.status["message"] and "at least 10Gi" in plan.status["message"]


def test_waits_while_a_backup_job_runs():
    plan = plan_volumes(WANT, claims(), {"fast": True}, {"data": "10Gi", "wal": "2Gi"}, ("db-backup-full-1",))
    assert plan.patches == [] and not plan.recreate_statefulset
    assert plan.status["phase"] == "Waiting" and "db-backup-full-1" in plan.waiting


def test_claim_view_reads_a_pvc():
    pvc = {"metadata": {"name": "wal-db-3"},
           "spec": {"resources": {"requests": {"storage": "1Gi"}}, "storageClassName": "x"},
           "status": {"phase": "Bound", "capacity": {"storage": "1Gi"}}}
    assert claim_view(pvc) == ClaimView("wal-db-3", "wal", "1Gi", "1Gi", "x", True)
    assert claim_view({"metadata": {"name": "db-backups"}}) is None
