"""OmenDBBackup, OmenDBRestore and bootstrap handled by the OmenDB's reconcile against a real kube-apiserver:
the Jobs the API server accepts, owner references, statuses the CRD schemas keep, the collision rules and
the pod-count and CronJob holds. (No kubelet or Job controller runs here: Jobs never start, which is what
the waiting rules need; the e2e journey test_backup_restore.py runs them for real.)"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from kubernetes.config import new_client_from_config

from omendb_operator.controller.kube import Kube
from omendb_operator.controller.reconcile import Reconciler

ROOT = Path(__file__).resolve().parents[2]
API = "omendb.io/v1alpha1"
BASE = f"/apis/{API}"


@pytest.fixture(scope="module")
def kube(apiserver):
    return Kube(new_client_from_config(config_file=str(apiserver.kubeconfig)))


def _create(apiserver, namespace: str, plural: str, doc: dict) -> dict:
    with apiserver.client() as http:
        r = http.post(f"{BASE}/namespaces/{namespace}/{plural}", json=doc, params={"fieldValidation": "Strict"})
        assert r.status_code == 201, r.text
        return r.json()


def _omendb(apiserver, namespace: str, name: str = "db", **spec) -> dict:
    (doc,) = [d for d in yaml.safe_load_all((ROOT / "manifests/samples/omendb-development.yaml").read_text()) if d]
    doc["metadata"]["name"] = name
    doc["spec"].update(spec)
    return _create(apiserver, namespace, "omendbs", doc)


def _backup(apiserver, namespace: str, name: str, cluster: str = "db", kind: str = "full") -> dict:
    return _create(apiserver, namespace, "omendbbackups", {
        "apiVersion": API, "kind": "OmenDBBackup", "metadata": {"name": name},
        "spec": {"cluster": {"name": cluster}, "type": kind}})


def _restore(apiserver, namespace: str, name: str, cluster: str = "db", **spec) -> dict:
    return _create(apiserver, namespace, "omendbrestores", {
        "apiVersion": API, "kind": "OmenDBRestore", "metadata": {"name": name},
        "spec": {"cluster": {"name": cluster}, **spec}})


def _status(kube, kind: str, name: str, namespace: str) -> dict:
    return kube.get(API, kind, name, namespace).get("status") or {}


def test_backup_job_then_a_waiting_backup_and_restore(apiserver, namespace, kube):
    _omendb(apiserver, namespace)
    _backup(apiserver, namespace, "first")
    reconciler = Reconciler(kube)
    reconciler.reconcile(namespace, "db")
    job = kube.get("batch/v1", "Job", "first-backup", namespace)
    assert job is not None
    labels = job["metadata"]["labels"]
    assert labels["app.kubernetes.io/component"] == "backup" and labels["omendb.io/backup"] == "first"
    (ref,) = job["metadata"]["ownerReferences"]
    assert (ref["kind"], ref["name"]) == ("OmenDBBackup", "first")
    status = _status(kube, "OmenDBBackup", "first", namespace)
    assert status["phase"] == "Running" and status["startedAt"]

    # While that Job runs (it never finishes here), a second backup and a restore wait, saying why.
    _backup(apiserver, namespace, "second", kind="incremental")
    _restore(apiserver, namespace, "r1", backupId="latest", pointInTime={"lsn": 10})
    reconciler.reconcile(namespace, "db")
    for kind, name in (("OmenDBBackup", "second"), ("OmenDBRestore", "r1")):
        status = _status(kube, kind, name, namespace)
        assert status["phase"] == "Pending", status
        ready, reconciling, stalled = status["conditions"]
        assert ready["reason"] == "Waiting" and "backup Job first-backup" in ready["message"]
        # kstatus: InProgress, saying why.
        assert (reconciling["type"], reconciling["status"], stalled["type"], stalled["status"]) == (
            "Reconciling", "True", "Stalled", "False")
        assert reconciling["message"] == f"Pending: {ready['message']}"
    assert kube.get("batch/v1", "Job", "second-backup", namespace) is None
    sts = kube.get("apps/v1", "StatefulSet", "db", namespace)
    assert sts["spec"]["replicas"] == 1  # not held: the restore has not started
    events = kube.list("v1", "Event", namespace)
    assert any(e["reason"] == "RestoreWaiting" and e["involvedObject"]["name"] == "r1" for e in events)


def test_backups_of_a_missing_or_backupless_cluster_fail(apiserver, namespace, kube):
    _backup(apiserver, namespace, "orphan", cluster="ghost")
    _restore(apiserver, namespace, "orphan-restore", cluster="ghost")
    assert Reconciler(kube).reconcile(namespace, "ghost") == "gone"
    for kind, name in (("OmenDBBackup", "orphan"), ("OmenDBRestore", "orphan-restore")):
        status = _status(kube, kind, name, namespace)
        assert status["phase"] == "Failed" and "ghost does not exist" in status["error"], status
    _omendb(apiserver, namespace, "nobackups", backup={"enabled": False})
    _backup(apiserver, namespace, "off", cluster="nobackups")
    Reconciler(kube).reconcile(namespace, "nobackups")
    status = _status(kube, "OmenDBBackup", "off", namespace)
    assert status["phase"] == "Failed" and "spec.backup.enabled" in status["error"]


def test_restore_holds_the_cluster_then_runs_its_jobs(apiserver, namespace, kube):
    _omendb(apiserver, namespace)
    reconciler = Reconciler(kube)
    reconciler.reconcile(namespace, "db")  # children, among them the backup volume
    _restore(apiserver, namespace, "r1", backupId="omendb-20261127T072840411Z-full")
    _restore(apiserver, namespace, "r2")
    reconciler.reconcile(namespace, "db")
    status = _status(kube, "OmenDBRestore", "r1", namespace)
    assert (status["phase"], status["step"]) == ("Running", "ScaleDown") and status["stepStartedAt"]
    second = _status(kube, "OmenDBRestore", "r2", namespace)
    assert second["phase"] == "Pending" and "restore r1 of db is in progress" in second["conditions"][0]["message"]
    odb = kube.get(API, "OmenDB", "db", namespace)["status"]
    assert odb["restore"] == {"name": "r1", "step": "ScaleDown"}
    assert kube.get("apps/v1", "StatefulSet", "db", namespace)["spec"]["replicas"] == 0
    for cron in ("db-backup-full", "db-backup-incremental", "db-backup-cleanup"):
        assert kube.get("batch/v1", "CronJob", cron, namespace)["spec"]["suspend"] is True
    # An on-demand backup waits too.
    _backup(apiserver, namespace, "during")
    # No pod runs (no kubelet): the next reconcile goes on to the restore Job.
    reconciler.reconcile(namespace, "db")
    assert _status(kube, "OmenDBRestore", "r1", namespace)["step"] == "Restore"
    assert "restore r1 of db is in progress" in _status(kube, "OmenDBBackup", "during", namespace)[
        "conditions"][0]["message"]
    job = kube.get("batch/v1", "Job", "r1-restore-0", namespace)
    assert job is not None and job["metadata"]["ownerReferences"][0]["kind"] == "OmenDBRestore"
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in job["spec"]["template"]["spec"]["volumes"]
              if "persistentVolumeClaim" in v}
    assert claims == {"data": "data-db-0", "wal": "wal-db-0", "backups": "db-backups"}
    assert kube.get("apps/v1", "StatefulSet", "db", namespace)["spec"]["replicas"] == 0
    assert kube.get(API, "OmenDB", "db", namespace)["status"]["restore"]["step"] == "Restore"


def test_bootstrap_creates_pod_zero_volumes_and_a_job_before_any_pod(apiserver, namespace, kube):
    _omendb(apiserver, namespace, "src")
    reconciler = Reconciler(kube)
    _omendb(apiserver, namespace, "copy", bootstrap={"fromBackup": {"cluster": {"name": "src"}, "backupId": "x"}})
    reconciler.reconcile(namespace, "copy")
    boot = kube.get(API, "OmenDB", "copy", namespace)["status"]["bootstrap"]
    assert boot["phase"] == "Pending" and "src-backups does not exist" in boot["message"]
    assert kube.get("apps/v1", "StatefulSet", "copy", namespace)["spec"]["replicas"] == 0
    reconciler.reconcile(namespace, "src")  # makes src-backups
    reconciler.reconcile(namespace, "copy")
    boot = kube.get(API, "OmenDB", "copy", namespace)["status"]["bootstrap"]
    assert boot["phase"] == "Running" and boot["source"] == {"cluster": "src", "backupId": "x"}
    for claim in ("data-copy-0", "wal-copy-0"):
        assert kube.get("v1", "PersistentVolumeClaim", claim, namespace) is not None
    job = kube.get("batch/v1", "Job", "copy-bootstrap-restore-0", namespace)
    assert job is not None and job["metadata"]["ownerReferences"][0]["kind"] == "OmenDB"
    assert kube.get("apps/v1", "StatefulSet", "copy", namespace)["spec"]["replicas"] == 0


def test_a_restore_deleted_mid_way_keeps_the_pods_at_zero_until_a_new_one(apiserver, namespace, kube):
    _omendb(apiserver, namespace)
    reconciler = Reconciler(kube)
    reconciler.reconcile(namespace, "db")
    _restore(apiserver, namespace, "gone-soon")
    reconciler.reconcile(namespace, "db")
    reconciler.reconcile(namespace, "db")
    assert _status(kube, "OmenDBRestore", "gone-soon", namespace)["step"] == "Restore"
    with apiserver.client() as http:
        r = http.delete(f"{BASE}/namespaces/{namespace}/omendbrestores/gone-soon")
        assert r.status_code == 200, r.text
    reconciler.reconcile(namespace, "db")
    marker = kube.get(API, "OmenDB", "db", namespace)["status"]["restore"]
    assert marker["name"] == "gone-soon" and "was deleted at step Restore" in marker["message"]
    assert kube.get("apps/v1", "StatefulSet", "db", namespace)["spec"]["replicas"] == 0
    assert kube.get("batch/v1", "CronJob", "db-backup-full", namespace)["spec"]["suspend"] is True
    # A new restore takes over (its Job finds the set-aside data and keeps it until it succeeds).
    _restore(apiserver, namespace, "take-over")
    reconciler.reconcile(namespace, "db")
    assert _status(kube, "OmenDBRestore", "take-over", namespace)["step"] == "ScaleDown"
    assert kube.get(API, "OmenDB", "db", namespace)["status"]["restore"] == {"name": "take-over",
                                                                              "step": "ScaleDown"}
