from __future__ import annotations

import datetime as dt

from omendb_operator.plans.children import Observed, build_children, stale_children
from omendb_operator.spec import parse_spec
from omendb_operator.specs.secrets import decode_secret_data

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
LABELS = {
    "app": "omendb",
    "app.kubernetes.io/name": "omendb",
    "app.kubernetes.io/instance": "prod",
    "app.kubernetes.io/managed-by": "omendb-operator",
}


def _names(desired):
    return [(m["kind"], m["metadata"]["name"]) for m in desired.manifests]


def test_every_child_of_the_design(owner):
    desired = build_children(owner, parse_spec({}), Observed(monitoring_api=True), NOW)
    assert _names(desired) == [
        ("ConfigMap", "prod-config"),
        ("Secret", "prod-users"),
        ("Secret", "prod-backup-key"),
        ("Secret", "prod-ca"),
        ("Secret", "prod-tls"),
        ("Service", "prod"),
        ("Service", "prod-ro"),
        ("Service", "prod-headless"),
        ("ServiceAccount", "prod"),
        ("StatefulSet", "prod"),
        ("PodDisruptionBudget", "prod"),
        ("PersistentVolumeClaim", "prod-backups"),
        ("CronJob", "prod-backup-full"),
        ("CronJob", "prod-backup-incremental"),
        ("CronJob", "prod-backup-cleanup"),
        ("PrometheusRule", "prod"),
        ("ServiceMonitor", "prod"),
    ]
    for m in desired.manifests:
        assert LABELS.items() <= m["metadata"]["labels"].items(), m["metadata"]["name"]
        assert m["metadata"]["namespace"] == "omendb-prod"
        owned = "ownerReferences" in m["metadata"]
        # Children are garbage-collected with the OmenDB, except the backups' volume and their key.
        assert owned == (m["metadata"]["name"] not in ("prod-backups", "prod-backup-key")), m["metadata"]["name"]
    assert [r for r, _ in desired.actions] == [
        "CredentialsGenerated",
        "BackupKeyGenerated",
        "CertificateIssued",
        "CertificateIssued",
    ]
    assert any("generated credentials" in m for _, m in desired.actions)
    assert desired.cert_not_after is not None and not desired.skipped_monitoring


def test_second_build_from_observed_state_is_identical(owner):
    spec = parse_spec({})
    first = build_children(owner, spec, Observed(monitoring_api=True), NOW)
    by_name = {m["metadata"]["name"]: m for m in first.manifests if m["kind"] == "Secret"}
    observed = Observed(
        users_secret=decode_secret_data(by_name["prod-users"]),
        backup_key_secret=decode_secret_data(by_name["prod-backup-key"]),
        ca_secret=decode_secret_data(by_name["prod-ca"]),
        tls_secret=decode_secret_data(by_name["prod-tls"]),
        monitoring_api=True,
    )
    second = build_children(owner, spec, observed, NOW + dt.timedelta(hours=1))
    assert second.manifests == first.manifests
    assert second.actions == []


def test_monitoring_without_its_crds_is_skipped_not_fatal(owner):
    desired = build_children(owner, parse_spec({}), Observed(monitoring_api=False), NOW)
    assert desired.skipped_monitoring
    assert not {"PrometheusRule", "ServiceMonitor"} & {k for k, _ in _names(desired)}


def test_switches(owner):
    spec = parse_spec(
        {
            "backup": {"enabled": False},
            "tls": {"enabled": False},
            "monitoring": {"prometheusRule": False, "serviceMonitor": True},
        }
    )
    desired = build_children(owner, spec, Observed(monitoring_api=True), NOW)
    kinds = {k for k, _ in _names(desired)}
    assert "CronJob" not in kinds and "PersistentVolumeClaim" not in kinds and "PrometheusRule" not in kinds
    assert ("Secret", "prod-tls") not in _names(desired)
    assert ("ServiceMonitor", "prod") in _names(desired)
    stale = stale_children(spec, Observed(monitoring_api=True))
    assert ("batch/v1", "CronJob", "-backup-full") in stale
    assert ("monitoring.coreos.com/v1", "PrometheusRule", "") in stale
    assert ("v1", "Secret", "-tls") in stale
    assert all(kind != "PersistentVolumeClaim" for _, kind, _ in stale)


def test_the_database_pods_run_as_their_own_account_with_no_token(owner):
    desired = build_children(owner, parse_spec({}), Observed(), NOW)
    (account,) = [m for m in desired.manifests if m["kind"] == "ServiceAccount"]
    assert account["metadata"]["name"] == "prod" and account["automountServiceAccountToken"] is False
    assert account["metadata"]["ownerReferences"][0]["name"] == "prod"
    (sts,) = [m for m in desired.manifests if m["kind"] == "StatefulSet"]
    pod = sts["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "prod" and pod["automountServiceAccountToken"] is False
