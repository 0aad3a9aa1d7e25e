"""PrometheusRule (the guide's four alerts plus OmenDBBackupFailing, OmenDBCertificateExpiringSoon and
OmenDBWALArchiveFailing) and ServiceMonitor for one OmenDB.

The guide's alerts.yml is written for one standalone server (``job="omendb"``); here every expression is
scoped to this OmenDB's namespace and instance so two OmenDBs never fire each other's alerts. The
ServiceMonitor keeps the guide's ``job="omendb"`` (jobLabel: app) and copies the instance label onto every
series, so the guide's queries still work with one more matcher.
"""

from __future__ import annotations

from typing import Any

from omendb_operator import labels as L
from omendb_operator.spec import OmenDBSpec
from omendb_operator.specs.services import METRICS_SERVICE_LABEL

MONITORING_API = "monitoring.coreos.com/v1"
INSTANCE_TARGET_LABEL = "app_kubernetes_io_instance"  # how Prometheus spells the copied pod label
# The server logs a WARNING from the same point (omendb.server.tls.EXPIRY_WARNING_SECONDS); renewal
# (cert-manager, or the operator's renewBeforeDays = 30) normally happens long before.
CERT_EXPIRY_ALERT_SECONDS = 7 * 86400
# Durable writes older than this not yet in the WAL archive: a region failure now would lose them.
WAL_ARCHIVE_LAG_ALERT_SECONDS = 300


def _number(value: float) -> str:
    # Prometheus accepts 1e+09 but 1e9 reads like the guide; integers print without a trailing .0.
    if float(value).is_integer() and abs(value) >= 1e6:
        return f"{value:.0e}".replace("e+0", "e").replace("e+", "e")
    if float(value).is_integer():
        return str(int(value))
    return repr(float(value))


def alert_rules(name: str, namespace: str, spec: OmenDBSpec) -> list[dict[str, Any]]:
    a = spec.monitoring.alerts
    sel = f'namespace="{namespace}",{INSTANCE_TARGET_LABEL}="{name}"'
    cron_sel = f'namespace="{namespace}",cronjob=~"{name}-backup-(full|incremental)"'
    common = {"omendb": name, "namespace": namespace}
    rules: list[dict[str, Any]] = [
        {
            "alert": "OmenDBDown",
            "expr": f'up{{job="omendb",{sel}}} == 0',
            "for": a.down_for,
            "labels": {"severity": "critical", **common},
            "annotations": {"summary": "OmenDB instance is down",
                            "description": f"{{{{ $labels.pod }}}} of OmenDB {namespace}/{name} "
                                           "is not answering metrics scrapes."},
        },
        {
            "alert": "HighQueryLatency",
            # The guide's histogram_quantile over raw buckets measures all-time latency; over a 5m rate
            # it measures the latency now, which is what an alert should fire on.
            "expr": ("histogram_quantile(0.95, sum by (le, pod) "
                     f"(rate(omendb_query_duration_seconds_bucket{{{sel}}}[5m]))) > "
                     f"{_number(a.query_latency_p95_seconds)}"),
            "for": a.latency_for,
            "labels": {"severity": "warning", **common},
            "annotations": {"summary": "95th percentile query latency > "
                                       f"{_number(a.query_latency_p95_seconds)}s",
                            "description": "{{ $labels.pod }}: p95 query latency is {{ $value }}s."},
        },
        {
            "alert": "HighMemoryUsage",
            "expr": (f"omendb_memory_usage_bytes{{{sel}}} / omendb_memory_limit_bytes{{{sel}}} > "
                     f"{_number(a.memory_usage_ratio)}"),
            "for": a.memory_for,
            "labels": {"severity": "critical", **common},
            "annotations": {"summary": f"Memory usage > {round(a.memory_usage_ratio * 100)}%",
                            "description": "{{ $labels.pod }} uses {{ $value | humanizePercentage }} "
                                           "of its memory limit."},
        },
        {
            "alert": "WALSizeGrowth",
            "expr": f"increase(omendb_wal_size_bytes{{{sel}}}[1h]) > {_number(a.wal_growth_bytes_per_hour)}",
            "for": a.wal_growth_for,
            "labels": {"severity": "warning", **common},
            "annotations": {"summary": f"WAL growing faster than {_number(a.wal_growth_bytes_per_hour)} "
                                       "bytes/hour",
                            "description": "{{ $labels.pod }}: the WAL grew {{ $value | humanize1024 }}B "
                                           "in the last hour; check that backups and checkpoints run."},
        },
        {
            "alert": "OmenDBBackupFailing",
            # kube-state-metrics: a scheduled backup whose last run has not succeeded (or that has never
            # succeeded since it was first scheduled) for backupFailingFor.
            "expr": (f"(kube_cronjob_status_last_schedule_time{{{cron_sel}}} > on (namespace, cronjob) "
                     f"kube_cronjob_status_last_successful_time{{{cron_sel}}}) or "
                     f"(kube_cronjob_status_last_schedule_time{{{cron_sel}}} unless on (namespace, cronjob) "
                     f"kube_cronjob_status_last_successful_time{{{cron_sel}}})"),
            "for": a.backup_failing_for,
            "labels": {"severity": "critical", **common},
            "annotations": {"summary": "OmenDB scheduled backup is failing",
                            "description": "The last run of {{ $labels.cronjob }} has not succeeded; "
                                           f"see `kubectl -n {namespace} get jobs -l "
                                           f"app.kubernetes.io/instance={name}`."},
        },
        {
            "alert": "OmenDBCertificateExpiringSoon",
            # Exported by each pod for the certificate it serves (TLS only): it is what clients see, even
            # when the Secret was renewed but not yet loaded.
            "expr": f"omendb_tls_cert_expiry_seconds{{{sel}}} < {CERT_EXPIRY_ALERT_SECONDS}",
            "for": "10m",
            "labels": {"severity": "warning", **common},
            "annotations": {"summary": "OmenDB TLS certificate expires within 7 days",
                            "description": "{{ $labels.pod }} serves a certificate that expires in "
                                           "{{ $value | humanizeDuration }} (negative: expired); see the "
                                           "certificate-expiry runbook."},
        },
        {
            "alert": "OmenDBWALArchiveFailing",
            # Exported by the primary while [wal_archive] ships (spec.backup.objectStore with archiveWal): the
            # age of the oldest durable write not yet shipped, which grows while shipping fails.
            "expr": f"omendb_wal_archive_lag_seconds{{{sel}}} > {WAL_ARCHIVE_LAG_ALERT_SECONDS}",
            "for": "1m",
            "labels": {"severity": "critical", **common},
            "annotations": {"summary": "OmenDB WAL archiving is failing or behind",
                            "description": "{{ $labels.pod }} has writes that waited {{ $value | "
                                           "humanizeDuration }} to be shipped to the object store; see the "
                                           "WAL archiving runbook."},
        },
    ]
    return rules


def build_prometheus_rule(owner: dict[str, Any], spec: OmenDBSpec) -> dict[str, Any]:
    name, namespace = owner["metadata"]["name"], owner["metadata"]["namespace"]
    meta = L.metadata(owner, L.Names(name).prometheus_rule, "monitoring")
    meta["labels"].update(spec.monitoring.labels)
    return {
        "apiVersion": MONITORING_API,
        "kind": "PrometheusRule",
        "metadata": meta,
        "spec": {"groups": [{"name": f"omendb.{namespace}.{name}",
                             "rules": alert_rules(name, namespace, spec)}]},
    }


def build_service_monitor(owner: dict[str, Any], spec: OmenDBSpec) -> dict[str, Any]:
    name = owner["metadata"]["name"]
    meta = L.metadata(owner, L.Names(name).service_monitor, "monitoring")
    meta["labels"].update(spec.monitoring.labels)
    return {
        "apiVersion": MONITORING_API,
        "kind": "ServiceMonitor",
        "metadata": meta,
        "spec": {
            "jobLabel": "app",  # job="omendb", as the guide's OmenDBDown expression expects
            "selector": {"matchLabels": {**L.selector_labels(name), METRICS_SERVICE_LABEL: "true"}},
            "namespaceSelector": {"matchNames": [owner["metadata"]["namespace"]]},
            "podTargetLabels": ["app.kubernetes.io/instance"],
            "endpoints": [{"port": "metrics", "path": "/metrics", "interval": spec.monitoring.scrape_interval,
                           "scheme": "http"}],
        },
    }
