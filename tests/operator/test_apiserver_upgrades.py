"""Upgrades, rollbacks, hibernation and volume expansion against a real kube-apiserver.

There is no kubelet or StatefulSet controller here, so the test plays them: it creates the database pods
with the revision label the controller would give them, marks them Ready with a pod IP of 127.0.0.1 (a
real ``omendb serve`` answers /health there), and writes the StatefulSet's status; likewise it writes the
OmenDBBackup's phase as the backup controller would. Rollouts that reach the primary of several pods
need a real switchover, so there each pod has its own engine (the replication tests' cluster: a primary
and replicas on loopback, told apart by port) and a replaced pod's engine restarts on its data.
Everything the operator does (the OmenDBBackup it creates, the pods it deletes, the StatefulSet it
recreates, the claims it patches, status, events) is real API traffic, checked by reading it back. A new
Reconciler stands for an operator restart.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes.config import new_client_from_config

from omendb.cli import render_toml
from omendb.config import Config
from omendb_operator.controller import engines as E
from omendb_operator.controller.engines import PodHealth
from omendb_operator.controller.kube import Kube
from omendb_operator.controller.reconcile import Reconciler

# tests/operator is not a package (its helpers import by file name); the replication tests' cluster is.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.ports import free_port  # noqa: E402
from tests.replication.cluster import ADMIN, Cluster, api, caught_up, info, lookup  # noqa: E402

BASE = "/apis/omendb.io/v1alpha1"
MERGE = {"Content-Type": "application/merge-patch+json"}
SELECTOR = {"app": "omendb", "app.kubernetes.io/name": "omendb", "app.kubernetes.io/instance": "db"}


@pytest.fixture(scope="module")
def kube(apiserver):
    return Kube(new_client_from_config(config_file=str(apiserver.kubeconfig)))


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A real ``omendb serve`` whose /health stands for every pod's (their pod IP is 127.0.0.1 here); its port."""
    work = tmp_path_factory.mktemp("engine")
    port = free_port()
    config = Config.from_dict({
        "database": {"name": "test", "data_dir": str(work / "data"), "max_memory_mb": 256},
        "wal": {"dir": str(work / "wal")}, "http": {"host": "127.0.0.1", "port": port},
        "security": {"auth_enabled": False}, "monitoring": {"prometheus_port": free_port()},
        "limits": {"memory_limit_mb": 256}})
    (work / "omendb.toml").write_text(render_toml(config))
    with (work / "server.log").open("ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "omendb.cli", "serve", "--config", str(work / "omendb.toml")],
                                stdout=log, stderr=subprocess.STDOUT, cwd=work)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (work / "server.log").read_text()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, (work / "server.log").read_text()
            time.sleep(0.2)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class World:
    """Plays the kubelet, the StatefulSet controller and the backup controller for one OmenDB ``db``."""

    def __init__(self, http: httpx.Client, namespace: str, kube: Kube, engine_port: int) -> None:
        self.http, self.ns, self.kube = http, namespace, kube
        self.reconciler = Reconciler(kube, health=PodHealth(port=engine_port))
        self.cluster: Cluster | None = None  # one engine per pod (engine_per_pod)
        self.created: set[str] = set()
        # No ServiceAccount controller here: pods need the namespace's default account to exist.
        r = http.post(f"/api/v1/namespaces/{namespace}/serviceaccounts",
                      json={"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}})
        assert r.status_code in (201, 409), r.text

    def engine_per_pod(self, cluster: Cluster) -> None:
        """Pod db-N is node db-N of ``cluster``: the operator checks its /health at its own port and reaches
        its engine (roles, switchover) at its loopback URL instead of the pod's DNS name."""
        self.cluster = cluster

        def engines(_kube: Kube, _name: str, _ns: str, _spec: Any) -> E.Engines:
            def url(pod: str) -> str:
                return cluster.nodes[pod].url
            return E.Engines(url, url, ADMIN)

        self.reconciler = Reconciler(self.kube, health=PodHealth(port=lambda pod: cluster.nodes[pod].port),
                                     engines=engines)

    def reconcile(self, restart: bool = False) -> str:
        if restart:  # a new operator process: nothing but the cluster's state carries over
            self.reconciler = Reconciler(self.kube, health=self.reconciler.observer.health,
                                         engines=self.reconciler.observer.engines_for)
        return self.reconciler.reconcile(self.ns, "db")

    def url(self, kind: str, name: str = "", sub: str = "") -> str:
        prefix = {"pods": "/api/v1", "persistentvolumeclaims": "/api/v1", "events": "/api/v1",
                  "statefulsets": "/apis/apps/v1", "jobs": "/apis/batch/v1", "cronjobs": "/apis/batch/v1",
                  "secrets": "/api/v1", "omendbs": BASE, "omendbbackups": BASE}[kind]
        path = f"{prefix}/namespaces/{self.ns}/{kind}"
        return path + (f"/{name}" if name else "") + (f"/{sub}" if sub else "")

    def get(self, kind: str, name: str) -> dict | None:
        r = self.http.get(self.url(kind, name))
        return r.json() if r.status_code == 200 else None

    def patch(self, kind: str, name: str, body: dict, sub: str = "") -> dict:
        r = self.http.patch(self.url(kind, name, sub), headers=MERGE, json=body)
        assert r.status_code == 200, r.text
        return r.json()

    def odb(self) -> dict:
        return self.get("omendbs", "db")

    def status(self) -> dict:
        return self.odb().get("status") or {}

    def sts(self) -> dict:
        return self.get("statefulsets", "db")

    def image(self) -> str:
        return self.sts()["spec"]["template"]["spec"]["containers"][0]["image"]

    def revision(self) -> str:
        template = json.dumps(self.sts()["spec"]["template"], sort_keys=True)
        return "db-" + hashlib.sha256(template.encode()).hexdigest()[:10]

    def pods(self) -> dict[str, dict]:
        items = self.http.get(self.url("pods")).json()["items"]
        return {p["metadata"]["name"]: p for p in items}

    def controller(self, ready: bool = True) -> None:
        """The StatefulSet controller and kubelets: create missing pods from the current template, report
        status. ``ready`` applies to pods created now."""
        sts, revision = self.sts(), self.revision()
        want = sts["spec"]["replicas"]
        pods = self.pods()
        for i in range(want):
            name = f"db-{i}"
            if name not in pods:
                self.restart_engine(name)
                self.create_pod(name, revision, ready)
        for name in list(pods):
            if int(name.rsplit("-", 1)[1]) >= want:
                self.http.delete(self.url("pods", name))
        pods = self.pods()
        ready_n = sum(1 for p in pods.values() if _ready(p))
        updated = sum(1 for p in pods.values() if p["metadata"]["labels"]["controller-revision-hash"] == revision)
        self.patch("statefulsets", "db", {"status": {
            "observedGeneration": sts["metadata"]["generation"], "replicas": len(pods),
            "readyReplicas": ready_n, "currentReplicas": len(pods), "updatedReplicas": updated,
            "currentRevision": revision, "updateRevision": revision, "availableReplicas": ready_n}}, "status")

    def restart_engine(self, pod: str) -> None:
        """The kubelet starts a replaced pod's container: its engine restarts on its own data, as the primary
        or as a replica of the pod the ConfigMap's primary-pod key names (``omendb serve --primary-pod-file``)."""
        if self.cluster is None or pod not in self.created:
            return
        old = self.cluster.nodes[pod]
        if old.proc is not None and old.proc.poll() is None:
            old.stop()
        primary = self.kube.get("v1", "ConfigMap", "db-config", self.ns)["data"]["primary-pod"].strip()
        self.cluster.node(pod, None if primary == pod else self.cluster.nodes[primary])

    def create_pod(self, name: str, revision: str, ready: bool) -> None:
        labels = {**SELECTOR, "app.kubernetes.io/managed-by": "omendb-operator",
                  "app.kubernetes.io/component": "database", "controller-revision-hash": revision,
                  "statefulset.kubernetes.io/pod-name": name}
        body = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels},
                "spec": {"containers": [{"name": "omendb", "image": self.image()}]}}
        r = self.http.post(self.url("pods"), json=body)
        assert r.status_code == 201, r.text
        self.created.add(name)
        self.set_ready(name, ready)

    def set_ready(self, name: str, ready: bool) -> None:
        status: dict[str, Any] = {"phase": "Running", "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}],
                                  "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}
        if self.cluster is not None:  # a running container: the operator asks its engine about its role
            status["containerStatuses"] = [{"name": "omendb", "image": self.image(), "imageID": "",
                                            "ready": ready, "restartCount": 0,
                                            "state": {"running": {"startedAt": "2026-11-27T07:00:00Z"}}}]
        self.patch("pods", name, {"status": status}, "status")

    def spec(self, spec: dict) -> None:
        self.patch("omendbs", "db", {"spec": spec})

    def events(self) -> list[tuple[str, str, str]]:
        items = self.http.get(self.url("events")).json()["items"]
        return [(e["type"], e["reason"], e["message"]) for e in items if e["involvedObject"]["name"] == "db"]

    def reasons(self) -> list[str]:
        return [e[1] for e in self.events()]

    def job(self, name: str, active: int) -> None:
        if self.get("jobs", name) is None:
            body = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "labels": {
                "app.kubernetes.io/instance": "db", "app.kubernetes.io/component": "backup"}},
                "spec": {"template": {"spec": {"restartPolicy": "Never",
                                               "containers": [{"name": "b", "image": "omendb/omendb:0.1.0"}]}}}}
            r = self.http.post(self.url("jobs"), json=body)
            assert r.status_code == 201, r.text
        self.patch("jobs", name, {"status": {"active": active}}, "status")


def _ready(pod: dict) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod.get("status", {}).get("conditions", []))


def _cond(status: dict, type_: str) -> dict:
    return next(c for c in status["conditions"] if c["type"] == type_)


@pytest.fixture
def world(apiserver, namespace, kube, engine) -> Iterator[World]:
    with apiserver.client() as http:
        yield World(http, namespace, kube, engine)


@pytest.fixture
def replicated(tmp_path: Path) -> Iterator[Callable[[int], Cluster]]:
    """Starts N real engines: db-0 the primary, db-1.. its replicas (authentication on, as in a cluster)."""
    clusters: list[Cluster] = []

    def start(replicas: int) -> Cluster:
        cluster = Cluster(tmp_path / f"cluster-{len(clusters)}")
        clusters.append(cluster)
        cluster.replicas(cluster.node("db-0"), *(f"db-{i}" for i in range(1, replicas)))
        return cluster

    yield start
    for cluster in clusters:
        cluster.stop_all()


def _write(world: World, keys: range) -> list[int]:
    """Writes to the engine of the pod status names the primary: the keys acknowledged (none while a
    switchover is in flight: the old primary then refuses writes, which loses nothing)."""
    assert world.cluster is not None
    status = world.status()
    if (status.get("failover") or {}).get("phase", "Idle") != "Idle":
        return []
    with api(world.cluster.nodes[status.get("primaryPod") or "db-0"]) as c:
        c.post("/v1/records", json={"records": [{"key": k, "value": k / 4} for k in keys]}).raise_for_status()
    return list(keys)


def _create(world: World, spec: dict) -> None:
    doc = {"apiVersion": "omendb.io/v1alpha1", "kind": "OmenDB", "metadata": {"name": "db"},
           "spec": {"tls": {"enabled": False}, "monitoring": {"prometheusRule": False, "serviceMonitor": False},
                    **spec}}
    r = world.http.post(f"{BASE}/namespaces/{world.ns}/omendbs", json=doc, params={"fieldValidation": "Strict"})
    assert r.status_code == 201, r.text
    world.reconcile()
    world.controller()
    world.reconcile()
    assert world.status()["phase"] == "Ready", world.status()


def test_upgrade_backup_first_one_pod_at_a_time_primary_last_resumable(world, replicated):
    world.engine_per_pod(cluster := replicated(3))
    _create(world, {"replicas": 3, "version": "0.1.0"})
    assert world.status()["primaryPod"] == "db-0" and info(cluster.nodes["db-0"])["role"] == "primary"
    written = _write(world, range(0, 200))
    uids = {n: p["metadata"]["uid"] for n, p in world.pods().items()}
    assert world.sts()["spec"]["updateStrategy"] == {"type": "OnDelete"}

    world.spec({"version": "0.1.1"})
    world.reconcile()
    up = world.status()["upgrade"]
    assert up["phase"] == "BackingUp" and up["fromVersion"] == "0.1.0" and up["toVersion"] == "0.1.1"
    backup = world.get("omendbbackups", up["backupName"])
    assert backup["spec"] == {"cluster": {"name": "db"}, "type": "full"}
    assert backup["metadata"]["ownerReferences"][0]["name"] == "db"
    assert world.image() == "omendb/omendb:0.1.0"  # nothing moves before the backup succeeded
    assert _cond(world.status(), "Progressing")["reason"] == "OperationInProgress"

    # The backup succeeds while a scheduled backup Job runs: the rollout waits for that Job.
    world.patch("omendbbackups", up["backupName"], {"status": {"phase": "Succeeded", "backupId": "b1"}}, "status")
    world.job("db-backup-full-manual", active=1)
    world.reconcile(restart=True)
    status = world.status()
    assert status["upgrade"]["phase"] == "BackingUp" and "db-backup-full-manual" in status["upgrade"]["message"]
    assert "db-backup-full-manual" in _cond(status, "Progressing")["message"]
    assert world.image() == "omendb/omendb:0.1.0"
    world.job("db-backup-full-manual", active=0)

    world.reconcile()
    assert world.status()["upgrade"]["phase"] == "RollingOut" and world.image() == "omendb/omendb:0.1.1"
    order, primary_when_replaced = [], {}
    for i in range(20):
        world.controller()  # the controller sees the new template, then recreates what was deleted
        written += _write(world, range(200 + 50 * i, 250 + 50 * i))  # acknowledged writes all along
        before = set(world.pods())
        world.reconcile(restart=len(order) == 1)  # an operator restart in the middle changes nothing
        gone = before - set(world.pods())
        assert len(gone) <= 1, gone  # one pod at a time
        order += sorted(gone)
        primary_when_replaced.update({pod: world.status()["primaryPod"] for pod in gone})
        if world.status()["upgrade"]["phase"] == "Succeeded":
            break
    assert order == ["db-2", "db-1", "db-0"], order  # replicas first, highest first, the primary last
    # The primary moved to an updated replica (a real switchover) before its pod went.
    assert primary_when_replaced == {"db-2": "db-0", "db-1": "db-0", "db-0": "db-1"}, primary_when_replaced
    assert info(cluster.nodes["db-1"])["role"] == "primary"
    assert len(written) >= 300
    assert lookup(cluster.nodes["db-1"], written) == [k / 4 for k in written]  # no acknowledged write lost
    caught_up(cluster.nodes["db-0"], cluster.nodes["db-1"])  # the replaced old primary follows the new one
    assert info(cluster.nodes["db-0"])["role"] == "replica"
    world.controller()
    world.reconcile()
    status = world.status()
    assert status["phase"] == "Ready" and status["currentVersion"] == "0.1.1", status
    assert status["primaryPod"] == "db-1" and status["failover"]["last"]["reason"] == "switchover", status
    assert status["upgrade"]["phase"] == "Succeeded" and status["upgrade"]["finishedAt"]
    assert all(p["metadata"]["uid"] != uids[n] for n, p in world.pods().items())
    reasons = world.reasons()
    assert {"UpgradeStarted", "PreUpgradeBackup", "UpgradeRollingOut", "ReplacingPod", "UpgradeSucceeded"} <= set(
        reasons)


def test_a_pod_never_ready_rolls_back_and_the_others_are_untouched(world):
    _create(world, {"replicas": 2, "version": "0.1.0", "upgrade": {"timeout": "2s", "backupBeforeUpgrade": False}})
    world.spec({"image": "omendb/omendb:does-not-exist"})
    world.reconcile()
    assert world.status()["upgrade"]["phase"] == "RollingOut"
    assert ("Warning", "UpgradeWithoutBackup") in [e[:2] for e in world.events()]
    world.controller()
    world.reconcile()  # deletes db-1
    assert set(world.pods()) == {"db-0"}
    primary_uid = world.pods()["db-0"]["metadata"]["uid"]
    world.controller(ready=False)  # the new image never becomes Ready
    world.reconcile()
    assert world.status()["upgrade"]["phase"] == "RollingOut"
    time.sleep(2.5)
    world.reconcile()
    status = world.status()
    assert status["upgrade"]["phase"] == "RollingBack" and status["upgrade"]["failedImage"] == \
        "omendb/omendb:does-not-exist"
    assert world.image() == "omendb/omendb:0.1.0"
    assert _cond(status, "UpgradeHealthy")["reason"] == "RollingBack"
    for _ in range(4):
        world.controller()
        world.reconcile()
    status = world.status()
    assert status["upgrade"]["phase"] == "RolledBack", status["upgrade"]
    assert _cond(status, "UpgradeHealthy")["status"] == "False"
    assert status["currentVersion"] == "0.1.0" and status["phase"] == "Ready"
    assert world.pods()["db-0"]["metadata"]["uid"] == primary_uid  # the primary never went
    warnings = [e[1] for e in world.events() if e[0] == "Warning"]
    assert "UpgradeRollingBack" in warnings and "UpgradeRolledBack" in warnings
    # The failed image is not retried while the spec still names it.
    world.reconcile(restart=True)
    assert world.image() == "omendb/omendb:0.1.0" and world.status()["upgrade"]["phase"] == "RolledBack"


def test_a_failed_backup_blocks_until_it_is_deleted(world):
    _create(world, {"replicas": 1, "version": "0.1.0"})
    world.spec({"version": "0.1.1"})
    world.reconcile()
    name = world.status()["upgrade"]["backupName"]
    world.patch("omendbbackups", name, {"status": {"phase": "Failed", "error": "no space left"}}, "status")
    world.reconcile()
    status = world.status()
    assert status["upgrade"]["phase"] == "BackupFailed" and world.image() == "omendb/omendb:0.1.0"
    cond = _cond(status, "UpgradeHealthy")
    assert cond["status"] == "False" and "no space left" in cond["message"]
    assert f"kubectl delete omendbbackup {name}" in cond["message"]
    assert ("Warning", "UpgradeBlocked") in [e[:2] for e in world.events()]
    assert world.http.delete(world.url("omendbbackups", name)).status_code == 200
    world.reconcile()
    assert world.status()["upgrade"]["phase"] == "BackingUp" and world.get("omendbbackups", name)


def test_config_change_rolls_pods_one_at_a_time_without_backup(world, replicated):
    world.engine_per_pod(cluster := replicated(2))  # the primary's pod goes last, after a real switchover
    _create(world, {"replicas": 2})
    world.spec({"config": {"index": {"max_error": 7}}})
    world.reconcile()
    world.controller()
    world.reconcile()
    up = world.status()["upgrade"]
    assert up["kind"] == "Template" and up["phase"] == "RollingOut" and "backupName" not in up
    assert set(world.pods()) == {"db-0"}
    for _ in range(5):
        world.controller()
        world.reconcile()
    assert world.status()["upgrade"]["phase"] == "Succeeded"
    assert world.status()["primaryPod"] == "db-1" and info(cluster.nodes["db-1"])["role"] == "primary"
    assert not world.http.get(f"{BASE}/namespaces/{world.ns}/omendbbackups").json()["items"]


def test_hibernate_keeps_volumes_and_secrets_and_wakes(world):
    _create(world, {"replicas": 2})
    world.spec({"hibernate": True})
    world.reconcile()
    assert world.sts()["spec"]["replicas"] == 0
    crons = world.http.get(world.url("cronjobs")).json()["items"]
    assert crons and all(c["spec"]["suspend"] for c in crons)
    world.controller()
    world.reconcile()
    status = world.status()
    assert status["phase"] == "Hibernated" and _cond(status, "Ready")["reason"] == "Hibernated"
    assert world.get("secrets", "db-users") and world.get("persistentvolumeclaims", "db-backups")
    world.spec({"hibernate": False})
    world.reconcile()
    assert world.sts()["spec"]["replicas"] == 2
    assert not any(c["spec"]["suspend"] for c in world.http.get(world.url("cronjobs")).json()["items"])
    world.controller()
    world.reconcile()
    assert world.status()["phase"] == "Ready"


def _storage_class(http: httpx.Client, name: str, expand: bool) -> None:
    body = {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": name},
            "provisioner": "example.com/test", "allowVolumeExpansion": expand}
    r = http.post("/apis/storage.k8s.io/v1/storageclasses", json=body)
    assert r.status_code in (201, 409), r.text


def _bound_claim(world: World, name: str, size: str, sc: str) -> None:
    body = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name, "labels": SELECTOR},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": sc, "volumeName": f"pv-{name}",
                     "resources": {"requests": {"storage": size}}}}
    r = world.http.post(world.url("persistentvolumeclaims"), json=body)
    assert r.status_code == 201, r.text
    world.patch("persistentvolumeclaims", name, {"status": {"phase": "Bound", "capacity": {"storage": size}}},
                "status")


def test_volume_expansion_patches_claims_and_recreates_the_statefulset(world):
    _storage_class(world.http, "expandable", True)
    _storage_class(world.http, "fixed", False)
    _create(world, {"replicas": 1, "storage": {"data": {"size": "1Gi", "storageClassName": "expandable"},
                                               "wal": {"size": "1Gi", "storageClassName": "fixed"}}})
    _bound_claim(world, "data-db-0", "1Gi", "expandable")
    _bound_claim(world, "wal-db-0", "1Gi", "fixed")
    pod_uid = world.pods()["db-0"]["metadata"]["uid"]
    old_sts_uid = world.sts()["metadata"]["uid"]

    # A backup Job runs: nothing is expanded yet.
    world.job("db-backup-incremental-1", active=1)
    world.spec({"storage": {"data": {"size": "2Gi", "storageClassName": "expandable"},
                            "wal": {"size": "2Gi", "storageClassName": "fixed"}}})
    world.reconcile()
    assert world.status()["storage"]["phase"] == "Waiting"
    assert world.get("persistentvolumeclaims", "data-db-0")["spec"]["resources"]["requests"]["storage"] == "1Gi"
    world.job("db-backup-incremental-1", active=0)

    world.reconcile()
    status = world.status()
    assert world.get("persistentvolumeclaims", "data-db-0")["spec"]["resources"]["requests"]["storage"] == "2Gi"
    # The WAL's class does not allow expansion: a clear message, its claim untouched.
    assert world.get("persistentvolumeclaims", "wal-db-0")["spec"]["resources"]["requests"]["storage"] == "1Gi"
    assert status["storage"]["phase"] == "Blocked"
    assert "StorageClass fixed does not set allowVolumeExpansion: true" in status["storage"]["message"]
    assert _cond(status, "StorageResized")["reason"] == "ExpansionNotSupported"
    assert ("Warning", "VolumeExpansionBlocked") in [e[:2] for e in world.events()]
    # The StatefulSet is recreated (orphaning, not deleting, its pod) with the new data claim template.
    deadline = time.monotonic() + 60
    while True:
        world.reconcile()
        sts = world.get("statefulsets", "db")
        if sts and sts["metadata"]["uid"] != old_sts_uid and not sts["metadata"].get("deletionTimestamp"):
            break
        assert time.monotonic() < deadline, sts
        time.sleep(0.5)
    sizes = {t["metadata"]["name"]: t["spec"]["resources"]["requests"]["storage"]
             for t in sts["spec"]["volumeClaimTemplates"]}
    # New claims are made at the spec's sizes (no expansion needed for those); the old WAL claim stays 1Gi.
    assert sizes == {"data": "2Gi", "wal": "2Gi"}
    assert world.get("persistentvolumeclaims", "wal-db-0")["spec"]["resources"]["requests"]["storage"] == "1Gi"
    assert world.pods()["db-0"]["metadata"]["uid"] == pod_uid
    # The claim grew: status shows its capacity.
    world.patch("persistentvolumeclaims", "data-db-0", {"status": {"capacity": {"storage": "2Gi"}}}, "status")
    world.reconcile()
    claims = {c["name"]: c for c in world.status()["storage"]["claims"]}
    assert claims["data-db-0"] == {"name": "data-db-0", "requested": "2Gi", "capacity": "2Gi"}


def test_a_new_operator_version_restarts_no_pod(world):
    """A StatefulSet as the previous operator release made it (RollingUpdate, no image annotation): the new
    operator switches it to OnDelete without touching the pod template, so no pod is replaced, and a
    further restart writes nothing to it."""
    _create(world, {"replicas": 2})
    # What the previous release applied, under the same field manager.
    old = world.sts()
    old_manifest = {"apiVersion": "apps/v1", "kind": "StatefulSet",
                    "metadata": {"name": "db", "namespace": world.ns, "labels": old["metadata"]["labels"],
                                 "ownerReferences": old["metadata"]["ownerReferences"]},
                    "spec": {**{k: old["spec"][k] for k in ("replicas", "serviceName", "selector", "template",
                                                            "podManagementPolicy", "volumeClaimTemplates",
                                                            "persistentVolumeClaimRetentionPolicy")},
                             "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}}}
    r = world.http.patch(world.url("statefulsets", "db"), headers={"Content-Type": "application/apply-patch+yaml"},
                         params={"fieldManager": "omendb-operator", "force": "true"}, content=json.dumps(old_manifest))
    assert r.status_code == 200, r.text
    assert "omendb.io/image" not in (world.sts()["metadata"].get("annotations") or {})
    revision, uids = world.revision(), {n: p["metadata"]["uid"] for n, p in world.pods().items()}
    world.reconcile(restart=True)
    sts = world.sts()
    assert sts["spec"]["updateStrategy"] == {"type": "OnDelete"}
    assert sts["metadata"]["annotations"]["omendb.io/image"] == "omendb/omendb:0.1.0"
    assert world.revision() == revision
    world.controller()
    generation = world.sts()["metadata"]["generation"]
    for _ in range(2):
        world.reconcile(restart=True)
    assert {n: p["metadata"]["uid"] for n, p in world.pods().items()} == uids
    assert world.sts()["metadata"]["generation"] == generation
    assert "upgrade" not in world.status() and world.status()["phase"] == "Ready"


@pytest.fixture
def unreachable_port() -> Iterator[int]:
    """A loopback port whose accept queue is full: a connection attempt times out, as to a pod IP with no
    route from where the operator runs."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = int(server.getsockname()[1])
    held = []
    for _ in range(3):
        client = socket.socket()
        client.settimeout(0.5)
        with contextlib.suppress(TimeoutError):  # the queue is full: later attempts time out
            client.connect(("127.0.0.1", port))
        held.append(client)
    yield port
    for c in held:
        c.close()
    server.close()


def test_a_pod_the_operator_cannot_reach_stalls_with_a_message_never_a_rollback(world, unreachable_port):
    world.reconciler = Reconciler(world.kube, health=PodHealth(port=unreachable_port, timeout=1.0))
    _create(world, {"replicas": 1, "upgrade": {"timeout": "1s", "backupBeforeUpgrade": False}})
    world.spec({"version": "0.1.1"})
    world.reconcile()
    world.controller()
    world.reconcile()  # replaces db-0
    world.controller()
    time.sleep(1.5)
    for _ in range(2):
        world.reconcile()
    up = world.status()["upgrade"]
    assert up["phase"] == "RollingOut" and "failedImage" not in up, up
    assert "cannot reach pod db-0 at its IP for /health" in up["message"]
    assert world.image() == "omendb/omendb:0.1.1"
