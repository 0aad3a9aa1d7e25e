"""The CRDs against a real kube-apiserver: every bad spec of issue 5 is rejected at create/update time
with a message that says what to fix, good specs and the samples are accepted, and the scale subresource
and printer columns work as `kubectl scale` and `kubectl get` use them."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BASE = "/apis/omendb.io/v1alpha1"


def _omendb(name="db", **spec):
    return {"apiVersion": "omendb.io/v1alpha1", "kind": "OmenDB", "metadata": {"name": name}, "spec": spec}


def _create(http, namespace, obj, plural="omendbs"):
    # fieldValidation=Strict is what kubectl sends by default (--validate=strict).
    return http.post(
        f"{BASE}/namespaces/{namespace}/{plural}", params={"fieldValidation": "Strict"}, json=obj
    )


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"replicas": 0}, "spec.replicas must be at least 1"),
        ({"replicas": -2}, "spec.replicas must be at least 1"),
        ({"version": "latest"}, "spec.version latest is not a release version"),
        ({"version": "1.2"}, "use MAJOR.MINOR.PATCH"),
        ({"storage": {"data": {"size": "lots"}}}, "spec.storage.data.size must be a size such as 10Gi"),
        (
            {"backup": {"fullSchedule": "61 * * * *"}},
            "spec.backup.fullSchedule 61 * * * * is not a valid cron",
        ),
        ({"backup": {"incrementalSchedule": "every day"}}, "is not a valid cron schedule"),
        ({"backup": {"cleanupSchedule": "0 1 * *"}}, "is not a valid cron schedule"),
        ({"config": {"index": {"max_eror": 5}}}, 'unknown field "spec.config.index.max_eror"'),
        ({"config": {"indexes": {}}}, 'unknown field "spec.config.indexes"'),
        ({"config": {"index": {"max_error": 0}}}, "should be greater than or equal to 1"),
        ({"config": {"index": {"model_type": "btree"}}}, 'supported values: "recursive", "linear"'),
        ({"config": {"wal": {"sync_on_write": "yes"}}}, "spec.config.wal.sync_on_write: Invalid value"),
        ({"config": {"http": {"port": 8080}}}, "config.http.port is set by the operator"),
        ({"config": {"database": {"data_dir": "/tmp"}}}, "config.database.data_dir is set by the operator"),
        (
            {"tls": {"enabled": True, "generate": False}},
            "spec.tls.secretName is required when TLS is enabled",
        ),
        ({"tls": {"generate": False, "secretName": ""}}, "spec.tls.secretName is required"),
        ({"tls": {"durationDays": 10, "renewBeforeDays": 20}}, "renewBeforeDays must be less than"),
        ({"tls": {"issuerRef": {"name": "ca"}, "secretName": "mine"}},
         "spec.tls.issuerRef and spec.tls.secretName are both set"),
        ({"tls": {"issuerRef": {"name": "ca"}, "generate": True}}, "remove generate"),
        ({"tls": {"issuerRef": {"name": "ca", "kind": "Vault"}}}, 'supported values: "Issuer", "ClusterIssuer"'),
        ({"tls": {"issuerRef": {"kind": "Issuer"}}}, "spec.tls.issuerRef.name: Required value"),
        ({"auth": {"adminUser": "root:x"}}, "spec.auth.adminUser may only contain"),
        (
            {"scheduling": {"podAntiAffinity": "sometimes"}},
            'supported values: "preferred", "required", "none"',
        ),
        ({"monitoring": {"alerts": {"downFor": "soon"}}}, "spec.monitoring.alerts.downFor"),
        ({"surprise": True}, 'unknown field "spec.surprise"'),
    ],
)
def test_bad_specs_are_rejected_with_a_message(apiserver, namespace, spec, message):
    with apiserver.client() as http:
        r = _create(http, namespace, _omendb(**spec))
    # 422 for schema and CEL errors; 400 for unknown fields under strict field validation.
    assert r.status_code in (400, 422), r.text
    assert message in r.json()["message"], r.json()["message"]


@pytest.mark.parametrize(
    "spec",
    [
        {},
        {"tls": {"enabled": False, "generate": False}},
        {"tls": {"generate": False, "secretName": "my-tls"}},
        {"tls": {"issuerRef": {"name": "ca", "kind": "ClusterIssuer", "group": "cert-manager.io"}}},
        {"tls": {"generate": False, "issuerRef": {"name": "ca"}}},
        {"backup": {"fullSchedule": "@weekly", "incrementalSchedule": "*/30 2-4 * * MON-SAT"}},
        {
            "config": {
                "index": {"max_error": 100, "model_type": "linear"},
                "security": {"admin_users": ["a", "b"]},
            }
        },
    ],
)
def test_good_specs_are_accepted(apiserver, namespace, spec):
    with apiserver.client() as http:
        r = _create(http, namespace, _omendb(**spec))
    assert r.status_code == 201, r.text


@pytest.mark.parametrize(
    "path", sorted((ROOT / "manifests" / "samples").glob("*.yaml")), ids=lambda p: p.name
)
def test_samples_are_accepted(apiserver, namespace, path):
    (doc,) = [d for d in yaml.safe_load_all(path.read_text()) if d]
    with apiserver.client() as http:
        r = _create(http, namespace, doc)
    assert r.status_code == 201, r.text


@pytest.mark.parametrize("field", ["data", "wal"])
def test_storage_may_grow_but_never_shrink(apiserver, namespace, field):
    with apiserver.client() as http:
        assert _create(http, namespace, _omendb(storage={field: {"size": "10Gi"}})).status_code == 201
        url = f"{BASE}/namespaces/{namespace}/omendbs/db"
        merge = {"Content-Type": "application/merge-patch+json"}
        shrink = http.patch(url, headers=merge, json={"spec": {"storage": {field: {"size": "5Gi"}}}})
        assert shrink.status_code == 422, shrink.text
        assert f"spec.storage.{field}.size cannot shrink from 10Gi to 5Gi" in shrink.json()["message"]
        grow = http.patch(url, headers=merge, json={"spec": {"storage": {field: {"size": "20Gi"}}}})
        assert grow.status_code == 200, grow.text
        same_value = http.patch(url, headers=merge, json={"spec": {"storage": {field: {"size": "20480Mi"}}}})
        assert same_value.status_code == 200, same_value.text


def test_backup_volume_never_shrinks(apiserver, namespace):
    with apiserver.client() as http:
        assert _create(http, namespace, _omendb(backup={"volume": {"size": "20Gi"}})).status_code == 201
        r = http.patch(
            f"{BASE}/namespaces/{namespace}/omendbs/db",
            headers={"Content-Type": "application/merge-patch+json"},
            json={"spec": {"backup": {"volume": {"size": "1Gi"}}}},
        )
    assert r.status_code == 422 and "cannot shrink" in r.json()["message"]


def test_scale_subresource_and_printer_columns(apiserver, namespace):
    with apiserver.client() as http:
        assert _create(http, namespace, _omendb(replicas=1, version="0.1.0")).status_code == 201
        url = f"{BASE}/namespaces/{namespace}/omendbs/db"
        status = {
            "status": {
                "replicas": 1,
                "readyReplicas": 1,
                "phase": "Ready",
                "currentVersion": "0.1.0",
                "selector": "app=omendb,app.kubernetes.io/instance=db",
            }
        }
        r = http.patch(f"{url}/status", headers={"Content-Type": "application/merge-patch+json"}, json=status)
        assert r.status_code == 200, r.text
        # What `kubectl scale omendb/db --replicas=3` does:
        r = http.patch(
            f"{url}/scale",
            headers={"Content-Type": "application/merge-patch+json"},
            json={"spec": {"replicas": 3}},
        )
        assert r.status_code == 200, r.text
        scale = http.get(f"{url}/scale").json()
        assert scale["spec"]["replicas"] == 3
        assert scale["status"]["selector"] == "app=omendb,app.kubernetes.io/instance=db"
        assert http.get(url).json()["spec"]["replicas"] == 3
        r = http.patch(
            f"{url}/scale",
            headers={"Content-Type": "application/merge-patch+json"},
            json={"spec": {"replicas": 0}},
        )
        assert r.status_code == 422 and "spec.replicas must be at least 1" in r.json()["message"]
        table = http.get(url, headers={"Accept": "application/json;as=Table;g=meta.k8s.io;v=v1"}).json()
        assert [c["name"] for c in table["columnDefinitions"]] == [
            "Name",
            "Version",
            "Replicas",
            "Ready",
            "Phase",
            "Primary",
            "Age",
        ]
        assert table["rows"][0]["cells"][:5] == ["db", "0.1.0", 3, 1, "Ready"]
        # The short name used by the guide-style commands: kubectl get odb.
        resources = http.get(BASE).json()["resources"]
        assert next(r for r in resources if r["name"] == "omendbs")["shortNames"] == ["odb"]


def test_status_is_a_subresource_so_spec_writes_cannot_change_it(apiserver, namespace):
    with apiserver.client() as http:
        obj = _omendb()
        obj["status"] = {"phase": "Ready"}
        r = _create(http, namespace, obj)
        assert r.status_code == 201
        assert "status" not in r.json() or r.json()["status"].get("phase") != "Ready"


def test_backup_and_restore_resources(apiserver, namespace):
    backup = {
        "apiVersion": "omendb.io/v1alpha1",
        "kind": "OmenDBBackup",
        "metadata": {"name": "b1"},
        "spec": {"cluster": {"name": "db"}, "type": "full"},
    }
    restore = {
        "apiVersion": "omendb.io/v1alpha1",
        "kind": "OmenDBRestore",
        "metadata": {"name": "r1"},
        "spec": {"cluster": {"name": "db"}, "backupId": "latest", "pointInTime": {"lsn": 42},
                 "allowUnkeyed": True},
    }
    with apiserver.client() as http:
        assert _create(http, namespace, backup, "omendbbackups").status_code == 201
        assert _create(http, namespace, restore, "omendbrestores").status_code == 201
        r = http.patch(
            f"{BASE}/namespaces/{namespace}/omendbbackups/b1",
            headers={"Content-Type": "application/merge-patch+json"},
            json={"spec": {"type": "incremental"}},
        )
        assert r.status_code == 422 and "spec is immutable" in r.json()["message"]
        both = copy.deepcopy(restore)
        both["metadata"]["name"] = "r2"
        both["spec"]["pointInTime"] = {"lsn": 1, "time": "2026-01-01T00:00:00Z"}
        r = _create(http, namespace, both, "omendbrestores")
        assert r.status_code == 422 and "takes time or lsn, not both" in r.json()["message"]
        no_cluster = copy.deepcopy(backup)
        no_cluster["metadata"]["name"] = "b2"
        del no_cluster["spec"]["cluster"]
        r = _create(http, namespace, no_cluster, "omendbbackups")
        assert r.status_code == 422 and "spec.cluster: Required value" in r.json()["message"]
