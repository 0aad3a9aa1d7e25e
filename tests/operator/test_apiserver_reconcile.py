"""The reconcile against a real kube-apiserver: children created by server-side apply, a no-op resync
that writes nothing, hand edits put back, fields of other managers left alone, status and events, and
garbage collection that keeps the volumes."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml
from kubernetes.config import new_client_from_config

from omendb_operator.controller import metrics
from omendb_operator.controller.kube import Kube
from omendb_operator.controller.reconcile import Reconciler
from omendb_operator.plans.children import Observed, build_children
from omendb_operator.spec import parse_spec
from tests.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
BASE = "/apis/omendb.io/v1alpha1"
CHILDREN = [
    ("v1", "ConfigMap", "db-config"),
    ("v1", "Secret", "db-users"),
    ("v1", "Secret", "db-backup-key"),
    ("v1", "Secret", "db-ca"),
    ("v1", "Secret", "db-tls"),
    ("v1", "Service", "db"),
    ("v1", "Service", "db-ro"),
    ("v1", "Service", "db-headless"),
    ("apps/v1", "StatefulSet", "db"),
    ("policy/v1", "PodDisruptionBudget", "db"),
    ("v1", "PersistentVolumeClaim", "db-backups"),
    ("batch/v1", "CronJob", "db-backup-full"),
    ("batch/v1", "CronJob", "db-backup-incremental"),
    ("batch/v1", "CronJob", "db-backup-cleanup"),
    ("monitoring.coreos.com/v1", "PrometheusRule", "db"),
    ("monitoring.coreos.com/v1", "ServiceMonitor", "db"),
]


@pytest.fixture(scope="module")
def kube(apiserver):
    return Kube(new_client_from_config(config_file=str(apiserver.kubeconfig)))


def _writes() -> float:
    return sum(s.value for m in metrics.API_WRITES.collect() for s in m.samples if s.name.endswith("_total"))


def _sample(name="db"):
    (doc,) = [
        d for d in yaml.safe_load_all((ROOT / "manifests/samples/omendb-development.yaml").read_text()) if d
    ]
    doc["metadata"]["name"] = name
    return doc


def _create_omendb(apiserver, namespace, doc):
    with apiserver.client() as http:
        r = http.post(
            f"{BASE}/namespaces/{namespace}/omendbs", json=doc, params={"fieldValidation": "Strict"}
        )
        assert r.status_code == 201, r.text
        return r.json()


def _versions(kube, namespace):
    out = {}
    for api_version, kind, name in CHILDREN:
        obj = kube.get(api_version, kind, name, namespace)
        out[(kind, name)] = obj["metadata"]["resourceVersion"] if obj else None
    return out


@pytest.mark.parametrize(
    "raw",
    [
        {},
        {"replicas": 3, "tls": {"generate": False, "secretName": "mine"}, "auth": {"enabled": False}},
        {
            "backup": {"timeZone": "Europe/Berlin", "resources": {"requests": {"cpu": "100m"}}},
            "scheduling": {
                "podAntiAffinity": "required",
                "tolerations": [{"key": "db", "operator": "Exists"}],
                "nodeSelector": {"disk": "ssd"},
                "priorityClassName": "high",
            },
            "storage": {"deleteClaimsOnDelete": True, "data": {"storageClassName": "fast"}},
        },
        yaml.safe_load((ROOT / "manifests/samples/omendb-production.yaml").read_text())["spec"],
        {"networkPolicy": {"enabled": True, "clients": [
            {"namespaceSelector": {"matchLabels": {"team": "search"}},
             "podSelector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["web"]}]}},
            {"ipBlock": {"cidr": "10.1.0.0/16", "except": ["10.1.2.0/24"]}}]}},
        {"backup": {"objectStore": {"bucket": "omendb-backups", "endpointURL": "https://s3.example:8333",
                                    "credentials": {"name": "s3", "profile": "backups"}, "ca": {"name": "s3-ca"}}},
         "bootstrap": {"fromBackup": {"objectStore": {"bucket": "omendb-backups", "path": "prod/db"}}}},
    ],
    ids=["defaults", "user-tls-no-auth", "scheduling-and-backup-options", "production-sample", "network-policy",
         "object-store"],
)
def test_every_built_manifest_passes_server_side_dry_run(apiserver, namespace, kube, raw):
    body = _create_omendb(
        apiserver,
        namespace,
        {"apiVersion": "omendb.io/v1alpha1", "kind": "OmenDB", "metadata": {"name": "db"}, "spec": raw},
    )
    desired = build_children(body, parse_spec(raw), Observed(monitoring_api=True), dt.datetime.now(dt.UTC))
    kinds = set()
    for manifest in desired.manifests:
        result = kube.apply(manifest, dry_run=True)  # raises with the API server's message if refused
        assert result["metadata"]["name"] == manifest["metadata"]["name"]
        kinds.add(manifest["kind"])
    assert {"StatefulSet", "CronJob", "PrometheusRule", "ServiceMonitor", "Service", "Secret"} <= kinds
    # A dry run writes nothing.
    assert kube.get("apps/v1", "StatefulSet", "db", namespace) is None


def test_reconcile_creates_children_then_a_resync_writes_nothing(apiserver, namespace, kube):
    _create_omendb(apiserver, namespace, _sample())
    reconciler = Reconciler(kube)
    assert reconciler.reconcile(namespace, "db") == "changed"
    versions = _versions(kube, namespace)
    assert all(versions.values()), versions
    body = kube.get("omendb.io/v1alpha1", "OmenDB", "db", namespace)
    status = body["status"]
    assert status["phase"] == "Creating"  # no kubelet here: pods never become ready
    # The first status write stores spec.version's default (test_apiserver_version_default.py).
    assert status["specDefaultsRecorded"] is True and body["spec"]["version"]
    assert status["observedGeneration"] == body["metadata"]["generation"]
    conds = {c["type"]: c for c in status["conditions"]}
    assert conds["Ready"]["status"] == "False" and conds["TLSReady"]["status"] == "True"
    assert conds["MonitoringReady"]["status"] == "True"
    assert status["endpoints"]["primary"] == f"https://db.{namespace}.svc:3000"
    assert "finalizers" not in body["metadata"]
    sts = kube.get("apps/v1", "StatefulSet", "db", namespace)
    assert sts["metadata"]["managedFields"][0]["manager"] == "omendb-operator"
    assert sts["metadata"]["managedFields"][0]["operation"] == "Apply"

    before, omendb_version = _writes(), body["metadata"]["resourceVersion"]
    for _ in range(3):
        assert reconciler.reconcile(namespace, "db") == "unchanged"
    assert _writes() == before  # no apply, no status patch, no event
    assert _versions(kube, namespace) == versions
    assert (
        kube.get("omendb.io/v1alpha1", "OmenDB", "db", namespace)["metadata"]["resourceVersion"]
        == omendb_version
    )

    with apiserver.client() as http:
        events = http.get(f"/api/v1/namespaces/{namespace}/events").json()["items"]
    reasons = {e["reason"] for e in events if e["involvedObject"]["name"] == "db"}
    assert {"Reconciled", "CredentialsGenerated", "BackupKeyGenerated", "CertificateIssued",
            "PhaseCreating"} <= reasons


def test_hand_edits_are_put_back_and_other_managers_fields_kept(apiserver, namespace, kube):
    _create_omendb(apiserver, namespace, _sample())
    reconciler = Reconciler(kube)
    reconciler.reconcile(namespace, "db")
    merge = {"Content-Type": "application/merge-patch+json"}
    with apiserver.client() as http:
        svc = f"/api/v1/namespaces/{namespace}/services/db"
        r = http.patch(
            svc,
            headers=merge,
            params={"fieldManager": "kubectl-edit"},
            json={
                "metadata": {"annotations": {"team": "payments"}},
                "spec": {"selector": {"role": "replica"}},
            },
        )
        assert r.status_code == 200, r.text
        cm = f"/api/v1/namespaces/{namespace}/configmaps/db-config"
        r = http.patch(
            cm,
            headers=merge,
            params={"fieldManager": "kubectl-edit"},
            json={"data": {"omendb.toml": "[index]\nmax_error = 1\n"}},
        )
        assert r.status_code == 200, r.text
        sts = f"/apis/apps/v1/namespaces/{namespace}/statefulsets/db"
        r = http.patch(
            sts,
            headers={"Content-Type": "application/strategic-merge-patch+json"},
            params={"fieldManager": "kubectl-edit"},
            json={
                "spec": {
                    "template": {"spec": {"containers": [{"name": "omendb", "image": "omendb/omendb:9.9.9"}]}}
                }
            },
        )
        assert r.status_code == 200, r.text
        assert reconciler.reconcile(namespace, "db") == "changed"
        service = http.get(svc).json()
        assert service["spec"]["selector"]["role"] == "primary"
        assert service["metadata"]["annotations"]["team"] == "payments"  # not ours: left alone
        assert "max_error = 50" in http.get(cm).json()["data"]["omendb.toml"]
        image = http.get(sts).json()["spec"]["template"]["spec"]["containers"][0]["image"]
        assert image == "omendb/omendb:0.1.0"
    before = _writes()
    assert reconciler.reconcile(namespace, "db") == "unchanged"
    assert _writes() == before


def test_spec_changes_roll_pods_only_for_config(apiserver, namespace, kube):
    _create_omendb(apiserver, namespace, _sample())
    now = dt.datetime.now(dt.UTC)
    reconciler = Reconciler(kube, clock=lambda: now)
    reconciler.reconcile(namespace, "db")

    def template_hash():
        sts = kube.get("apps/v1", "StatefulSet", "db", namespace)
        return sts["spec"]["template"]["metadata"]["annotations"]["omendb.io/config-hash"]

    first = template_hash()
    with apiserver.client() as http:
        r = http.patch(
            f"{BASE}/namespaces/{namespace}/omendbs/db",
            headers={"Content-Type": "application/merge-patch+json"},
            json={"spec": {"config": {"index": {"max_error": 80}}}},
        )
        assert r.status_code == 200
    reconciler.reconcile(namespace, "db")
    assert template_hash() != first
    cm = kube.get("v1", "ConfigMap", "db-config", namespace)
    assert "max_error = 80" in cm["data"]["omendb.toml"]
    # A certificate renewal reaches the pods through the projected volume: no roll.
    sts_version = kube.get("apps/v1", "StatefulSet", "db", namespace)["metadata"]["resourceVersion"]
    tls_version = kube.get("v1", "Secret", "db-tls", namespace)["metadata"]["resourceVersion"]
    later = Reconciler(kube, clock=lambda: now + dt.timedelta(days=70))
    later.reconcile(namespace, "db")
    assert kube.get("v1", "Secret", "db-tls", namespace)["metadata"]["resourceVersion"] != tls_version
    assert kube.get("apps/v1", "StatefulSet", "db", namespace)["metadata"]["resourceVersion"] == sts_version


def test_switching_backups_off_removes_cronjobs_but_keeps_the_backup_volume(apiserver, namespace, kube):
    _create_omendb(apiserver, namespace, _sample())
    reconciler = Reconciler(kube)
    reconciler.reconcile(namespace, "db")
    with apiserver.client() as http:
        http.patch(
            f"{BASE}/namespaces/{namespace}/omendbs/db",
            headers={"Content-Type": "application/merge-patch+json"},
            json={"spec": {"backup": {"enabled": False}}},
        )
    reconciler.reconcile(namespace, "db")
    assert kube.get("batch/v1", "CronJob", "db-backup-full", namespace) is None
    assert kube.get("v1", "PersistentVolumeClaim", "db-backups", namespace) is not None
    conds = {
        c["type"]: c
        for c in kube.get("omendb.io/v1alpha1", "OmenDB", "db", namespace)["status"]["conditions"]
    }
    assert conds["BackupHealthy"]["reason"] == "BackupsDisabled"


def test_the_network_policy_follows_the_switch(apiserver, namespace, kube):
    doc = _sample()
    doc["spec"]["networkPolicy"] = {"enabled": True}
    _create_omendb(apiserver, namespace, doc)
    reconciler = Reconciler(kube, operator_namespace="omendb-system")
    reconciler.reconcile(namespace, "db")
    policy = kube.get("networking.k8s.io/v1", "NetworkPolicy", "db", namespace)
    assert policy is not None and policy["spec"]["policyTypes"] == ["Ingress"]
    assert reconciler.reconcile(namespace, "db") == "unchanged"
    with apiserver.client() as http:
        r = http.patch(f"{BASE}/namespaces/{namespace}/omendbs/db",
                       headers={"Content-Type": "application/merge-patch+json"},
                       json={"spec": {"networkPolicy": {"enabled": False}}})
        assert r.status_code == 200, r.text
        # An empty peer would admit everyone: the schema refuses it.
        r = http.patch(f"{BASE}/namespaces/{namespace}/omendbs/db",
                       headers={"Content-Type": "application/merge-patch+json"},
                       json={"spec": {"networkPolicy": {"clients": [{}]}}})
        assert r.status_code == 422 and "clients[0]" in r.text, r.text
    reconciler.reconcile(namespace, "db")
    assert kube.get("networking.k8s.io/v1", "NetworkPolicy", "db", namespace) is None


def test_a_missing_htpasswd_secret_degrades_with_the_fix(apiserver, namespace, kube):
    doc = _sample()
    doc["spec"]["auth"]["htpasswdSecretName"] = "team-users"
    _create_omendb(apiserver, namespace, doc)
    Reconciler(kube).reconcile(namespace, "db")
    status = kube.get("omendb.io/v1alpha1", "OmenDB", "db", namespace)["status"]
    assert status["phase"] == "Degraded"
    degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
    assert "Secret team-users (spec.auth.htpasswdSecretName) does not exist" in degraded["message"]
    assert "kubectl create secret generic team-users --from-file=users.htpasswd=PATH" in degraded["message"]
    assert kube.get("apps/v1", "StatefulSet", "db", namespace) is not None  # the rest still reconciled


def test_deleting_the_omendb_collects_children_and_keeps_volumes(apiserver, namespace, kube):
    assert apiserver.garbage_collector, (
        "kube-controller-manager (garbage collector) not found next to kube-apiserver"
    )
    _create_omendb(apiserver, namespace, _sample("keep"))
    doc = _sample("keep")
    Reconciler(kube).reconcile(namespace, "keep")
    assert doc["spec"]["backup"]["volume"]["deleteOnDelete"] is True  # the development sample's choice
    with apiserver.client() as http:
        http.patch(
            f"{BASE}/namespaces/{namespace}/omendbs/keep",
            headers={"Content-Type": "application/merge-patch+json"},
            json={"spec": {"backup": {"volume": {"deleteOnDelete": False}}}},
        )
        Reconciler(kube).reconcile(namespace, "keep")
        assert http.delete(f"{BASE}/namespaces/{namespace}/omendbs/keep").status_code == 200
        deadline = time.monotonic() + 60
        while kube.get("apps/v1", "StatefulSet", "keep", namespace) is not None:
            assert time.monotonic() < deadline, "the garbage collector did not remove the StatefulSet"
            time.sleep(0.5)
        while kube.get("v1", "Secret", "keep-users", namespace) is not None:
            assert time.monotonic() < deadline
            time.sleep(0.5)
    assert kube.get("v1", "Service", "keep", namespace) is None
    assert kube.get("batch/v1", "CronJob", "keep-backup-full", namespace) is None
    assert kube.get("v1", "PersistentVolumeClaim", "keep-backups", namespace) is not None
    # The key that signs those backups stays with them (a new OmenDB can bootstrap from them).
    assert kube.get("v1", "Secret", "keep-backup-key", namespace) is not None


def test_operator_process_reconciles_restores_and_stops_gracefully(apiserver, namespace, tmp_path):
    port = free_port()
    env = {
        **os.environ,
        "KUBECONFIG": str(apiserver.kubeconfig),
        "OMENDB_OPERATOR_NAMESPACES": namespace,
        "OMENDB_OPERATOR_PORT": str(port),
        "OMENDB_OPERATOR_PEERING": "none",
        "OMENDB_OPERATOR_RESYNC_SECONDS": "5",
        "OMENDB_OPERATOR_LOG_FORMAT": "json",
    }
    log = open(tmp_path / "operator.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "omendb_operator.main"], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    probe = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5)

    def wait(what, check, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "operator.log").read_text()[-3000:]
            try:
                if check():
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise AssertionError(
            f"timed out waiting for {what}:\n" + (tmp_path / "operator.log").read_text()[-3000:]
        )

    try:
        wait("readiness", lambda: probe.get("/readyz").status_code == 200)
        assert probe.get("/healthz").status_code == 200
        _create_omendb(apiserver, namespace, _sample())
        with apiserver.client() as http:
            svc = f"/api/v1/namespaces/{namespace}/services/db-ro"
            wait("children", lambda: http.get(svc).status_code == 200)
            wait(
                "status",
                lambda: (
                    http.get(f"{BASE}/namespaces/{namespace}/omendbs/db")
                    .json()
                    .get("status", {})
                    .get("phase")
                    == "Creating"
                ),
            )
            assert http.delete(svc).status_code == 200
            wait("the deleted Service to come back", lambda: http.get(svc).status_code == 200)
            body = http.get(f"{BASE}/namespaces/{namespace}/omendbs/db").json()
            assert "finalizers" not in body["metadata"]  # namespace deletion never waits on us
            assert "kopf" not in body.get("status", {})
        text = probe.get("/metrics").text
        assert 'omendb_operator_reconciles_total{result="changed"}' in text
        assert "omendb_operator_api_writes_total" in text
        lines = [line for line in (tmp_path / "operator.log").read_text().splitlines() if line.strip()]
        assert all(line.lstrip().startswith("{") for line in lines[:20]), lines[:5]  # JSON logs
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        probe.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _start_operator(apiserver, namespace, tmp_path, name, priority, kubeconfig=None):
    port = free_port()
    env = {
        **os.environ,
        "KUBECONFIG": str(kubeconfig or apiserver.kubeconfig),
        "OMENDB_OPERATOR_NAMESPACES": namespace,
        "OMENDB_OPERATOR_PORT": str(port),
        "OMENDB_OPERATOR_PEERING": "omendb-operator",
        "OMENDB_OPERATOR_PRIORITY": str(priority),
        "OMENDB_OPERATOR_RESYNC_SECONDS": "3",
        "POD_NAME": name,
    }
    log = open(tmp_path / f"{name}.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "omendb_operator.main"], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    return proc, httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5)


def _metric(probe, name):
    total = 0.0
    for line in probe.get("/metrics").text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_two_replicas_only_the_higher_priority_acts_and_the_other_takes_over(apiserver, namespace, tmp_path):
    with apiserver.client() as http:
        r = http.post(
            f"/apis/kopf.dev/v1/namespaces/{namespace}/kopfpeerings",
            json={
                "apiVersion": "kopf.dev/v1",
                "kind": "KopfPeering",
                "metadata": {"name": "omendb-operator"},
            },
        )
        assert r.status_code == 201, r.text
    high, high_probe = _start_operator(apiserver, namespace, tmp_path, "high", 200)
    low, low_probe = _start_operator(apiserver, namespace, tmp_path, "low", 100)
    procs = [(high, high_probe), (low, low_probe)]

    def wait(what, check, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if check():
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        logs = "\n".join((tmp_path / f).read_text()[-2000:] for f in ("high.log", "low.log"))
        raise AssertionError(f"timed out waiting for {what}:\n{logs}")

    try:
        for _, probe in procs:
            wait("readiness", lambda probe=probe: probe.get("/readyz").status_code == 200)
        # Both see each other in the peering object before the OmenDB appears.
        with apiserver.client() as http:
            wait(
                "peers",
                lambda: (
                    len(
                        http.get(f"/apis/kopf.dev/v1/namespaces/{namespace}/kopfpeerings/omendb-operator")
                        .json()
                        .get("status")
                        or {}
                    )
                    == 2
                ),
            )
        _create_omendb(apiserver, namespace, _sample())
        with apiserver.client() as http:
            svc = f"/api/v1/namespaces/{namespace}/services/db-ro"
            wait("children", lambda: http.get(svc).status_code == 200)
            time.sleep(7)  # two resync rounds
            assert _metric(high_probe, "omendb_operator_api_writes_total") > 0
            assert _metric(low_probe, "omendb_operator_api_writes_total") == 0
            assert _metric(low_probe, "omendb_operator_reconciles_total") == 0
            assert _metric(low_probe, "omendb_operator_active") == 0
            high.send_signal(signal.SIGTERM)
            assert high.wait(timeout=60) == 0
            # The survivor takes over: a deleted child comes back.
            assert http.delete(svc).status_code == 200
            wait("the standby to restore the Service", lambda: http.get(svc).status_code == 200, timeout=90)
        assert _metric(low_probe, "omendb_operator_api_writes_total") > 0
    finally:
        for proc, probe in procs:
            probe.close()
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def test_the_operator_needs_no_more_than_its_cluster_role(apiserver, namespace, tmp_path):
    """The operator, authenticated as the ServiceAccount of manifests/rbac.yaml and authorised only by that
    ClusterRole, watches all namespaces, reconciles an OmenDB and writes its status without a single
    'forbidden' answer."""
    with apiserver.client() as http:
        r = http.post(
            "/api/v1/namespaces",
            json={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "omendb-system"}},
        )
        assert r.status_code in (201, 409), r.text
        paths = {
            "ServiceAccount": "/api/v1/namespaces/omendb-system/serviceaccounts",
            "ClusterRole": "/apis/rbac.authorization.k8s.io/v1/clusterroles",
            "ClusterRoleBinding": "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
            "ClusterKopfPeering": "/apis/kopf.dev/v1/clusterkopfpeerings",
        }
        for path in ("manifests/rbac.yaml", "manifests/peering.yaml"):
            for doc in yaml.safe_load_all((ROOT / path).read_text()):
                if doc:
                    r = http.post(paths[doc["kind"]], json=doc)
                    assert r.status_code == 201, r.text
    proc, probe = _start_operator(
        apiserver, "", tmp_path, "rbac", 10, kubeconfig=apiserver.operator_kubeconfig
    )
    log = tmp_path / "rbac.log"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log.read_text()[-3000:]
            try:
                if probe.get("/readyz").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.3)
        _create_omendb(apiserver, namespace, _sample())
        with apiserver.client() as http:
            url = f"{BASE}/namespaces/{namespace}/omendbs/db"
            while (http.get(url).json().get("status") or {}).get("phase") != "Creating":
                assert time.monotonic() < deadline + 60, log.read_text()[-3000:]
                time.sleep(0.3)
            for api_version, kind, name in CHILDREN:
                group = api_version.rpartition("/")[0]
                prefix = f"/apis/{api_version}" if group else f"/api/{api_version}"
                plural = {
                    "PodDisruptionBudget": "poddisruptionbudgets",
                    "PrometheusRule": "prometheusrules",
                    "ServiceMonitor": "servicemonitors",
                    "PersistentVolumeClaim": "persistentvolumeclaims",
                }.get(kind, kind.lower() + "s")
                assert http.get(f"{prefix}/namespaces/{namespace}/{plural}/{name}").status_code == 200, kind
        assert _metric(probe, 'omendb_operator_reconciles_total{result="error"}') == 0
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        text = log.read_text().lower()
        assert "forbidden" not in text, [line for line in text.splitlines() if "forbidden" in line][:5]
    finally:
        probe.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_without_monitoring_crds_a_condition_and_a_warning_not_a_crash(apiserver, namespace):
    """PrometheusRule's CRD removed: the reconcile makes everything else, sets MonitoringReady=False and
    records a Warning event; once the CRD is back, the next reconcile creates the rule."""
    crd_url = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/prometheusrules.monitoring.coreos.com"
    with apiserver.client() as http:
        saved = http.get(crd_url).json()
        assert http.delete(crd_url).status_code == 200
        deadline = time.monotonic() + 60
        while http.get(crd_url).status_code != 404:
            assert time.monotonic() < deadline
            time.sleep(0.3)
        try:
            kube = Kube(new_client_from_config(config_file=str(apiserver.kubeconfig)))  # fresh discovery
            _create_omendb(apiserver, namespace, _sample())
            assert Reconciler(kube).reconcile(namespace, "db") == "changed"
            status = kube.get("omendb.io/v1alpha1", "OmenDB", "db", namespace)["status"]
            conds = {c["type"]: c for c in status["conditions"]}
            assert conds["MonitoringReady"]["status"] == "False"
            assert "not installed" in conds["MonitoringReady"]["message"]
            assert kube.get("apps/v1", "StatefulSet", "db", namespace) is not None
            assert kube.get("monitoring.coreos.com/v1", "ServiceMonitor", "db", namespace) is None
            events = http.get(f"/api/v1/namespaces/{namespace}/events").json()["items"]
            assert any(e["reason"] == "MonitoringCRDsMissing" and e["type"] == "Warning" for e in events)
        finally:
            for key in ("resourceVersion", "uid", "creationTimestamp", "generation", "managedFields"):
                saved["metadata"].pop(key, None)
            saved.pop("status", None)
            assert (
                http.post("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", json=saved).status_code
                == 201
            )
            while True:
                crd = http.get(crd_url).json()
                conds = {c["type"]: c["status"] for c in (crd.get("status") or {}).get("conditions") or []}
                if conds.get("Established") == "True":
                    break
                assert time.monotonic() < deadline + 60
                time.sleep(0.3)
        kube = Kube(new_client_from_config(config_file=str(apiserver.kubeconfig)))
        deadline = time.monotonic() + 60
        while not kube.has_kind("monitoring.coreos.com/v1", "PrometheusRule"):
            assert time.monotonic() < deadline, "PrometheusRule did not reappear in discovery"
            time.sleep(0.5)
            kube = Kube(new_client_from_config(config_file=str(apiserver.kubeconfig)))
        Reconciler(kube).reconcile(namespace, "db")
        assert kube.get("monitoring.coreos.com/v1", "PrometheusRule", "db", namespace) is not None
        status = kube.get("omendb.io/v1alpha1", "OmenDB", "db", namespace)["status"]
        assert {c["type"]: c for c in status["conditions"]}["MonitoringReady"]["status"] == "True"
