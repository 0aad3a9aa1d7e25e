"""manifests/: RBAC least privilege that still covers every child, and samples the operator accepts."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import yaml
from conftest import make_owner

from omendb_operator.plans.children import Observed, build_children
from omendb_operator.spec import parse_spec

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = sorted((ROOT / "manifests" / "samples").glob("*.yaml"))


def _rules():
    docs = list(yaml.safe_load_all((ROOT / "manifests" / "rbac.yaml").read_text()))
    (role,) = [d for d in docs if d and d["kind"] == "ClusterRole"]
    return role["rules"]


def _allowed(group: str, resource: str) -> set[str]:
    verbs: set[str] = set()
    for rule in _rules():
        if group in rule["apiGroups"] and resource in rule["resources"]:
            verbs |= set(rule["verbs"])
    return verbs


def test_rbac_has_no_wildcards():
    for rule in _rules():
        for key in ("apiGroups", "resources", "verbs"):
            assert all("*" not in v for v in rule[key]), rule


def test_rbac_covers_every_child_the_operator_applies():
    owner = make_owner()
    desired = build_children(owner, parse_spec({}), Observed(monitoring_api=True), dt.datetime.now(dt.UTC))
    plural = {
        "ConfigMap": "configmaps",
        "Secret": "secrets",
        "Service": "services",
        "ServiceAccount": "serviceaccounts",
        "StatefulSet": "statefulsets",
        "PodDisruptionBudget": "poddisruptionbudgets",
        "PersistentVolumeClaim": "persistentvolumeclaims",
        "CronJob": "cronjobs",
        "PrometheusRule": "prometheusrules",
        "ServiceMonitor": "servicemonitors",
    }
    for m in desired.manifests:
        group = m["apiVersion"].rpartition("/")[0]
        assert {"get", "create", "patch"} <= _allowed(group, plural[m["kind"]]), m["kind"]
    assert {"get", "list", "watch", "patch"} <= _allowed("omendb.io", "omendbs")
    assert "patch" in _allowed("omendb.io", "omendbs/status")
    assert "create" in _allowed("", "events")
    # Backups and data outlive the OmenDB: the operator cannot delete claims at all.
    assert "delete" not in _allowed("", "persistentvolumeclaims")
    assert "update" not in _allowed("omendb.io", "omendbs")  # it never writes spec


@pytest.mark.parametrize("path", SAMPLES, ids=[p.name for p in SAMPLES])
def test_samples_are_valid_omendbs(path):
    (doc,) = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert (doc["apiVersion"], doc["kind"]) == ("omendb.io/v1alpha1", "OmenDB")
    spec = parse_spec(doc["spec"])  # includes the engine's own validation of spec.config
    assert spec.auth.enabled and spec.tls.enabled
    assert set(doc["spec"]["config"]) == {
        "database",
        "storage",
        "index",
        "wal",
        "http",
        "security",
        "monitoring",
        "performance",
        "limits",
    }


def test_sample_names():
    assert [p.name for p in SAMPLES] == [
        "omendb-development.yaml",
        "omendb-production.yaml",
        "omendb-staging.yaml",
    ]
