from __future__ import annotations

from omendb_operator.spec import parse_spec
from omendb_operator.specs.monitoring import alert_rules, build_prometheus_rule, build_service_monitor

SEL = 'namespace="omendb-prod",app_kubernetes_io_instance="prod"'


def _rules(raw=None):
    return {r["alert"]: r for r in alert_rules("prod", "omendb-prod", parse_spec(raw or {}))}


def test_the_guides_four_alerts_and_a_backup_alert():
    rules = _rules()
    assert list(rules) == [
        "OmenDBDown",
        "HighQueryLatency",
        "HighMemoryUsage",
        "WALSizeGrowth",
        "OmenDBBackupFailing",
        "OmenDBCertificateExpiringSoon",
        "OmenDBWALArchiveFailing",
    ]
    assert rules["OmenDBDown"]["expr"] == f'up{{job="omendb",{SEL}}} == 0'
    assert rules["OmenDBDown"]["for"] == "30s"
    assert rules["OmenDBDown"]["labels"]["severity"] == "critical"
    assert rules["HighQueryLatency"]["expr"] == (
        "histogram_quantile(0.95, sum by (le, pod) "
        f"(rate(omendb_query_duration_seconds_bucket{{{SEL}}}[5m]))) > 1"
    )
    assert rules["HighQueryLatency"]["for"] == "2m"
    assert rules["HighQueryLatency"]["labels"]["severity"] == "warning"
    assert rules["HighMemoryUsage"]["expr"] == (
        f"omendb_memory_usage_bytes{{{SEL}}} / omendb_memory_limit_bytes{{{SEL}}} > 0.9"
    )
    assert rules["HighMemoryUsage"]["for"] == "5m"
    assert rules["WALSizeGrowth"]["expr"] == f"increase(omendb_wal_size_bytes{{{SEL}}}[1h]) > 1e9"
    assert rules["WALSizeGrowth"]["for"] == "15m"
    backup = rules["OmenDBBackupFailing"]
    cron = 'namespace="omendb-prod",cronjob=~"prod-backup-(full|incremental)"'
    assert backup["expr"] == (
        f"(kube_cronjob_status_last_schedule_time{{{cron}}} > on (namespace, cronjob) "
        f"kube_cronjob_status_last_successful_time{{{cron}}}) or "
        f"(kube_cronjob_status_last_schedule_time{{{cron}}} unless on (namespace, cronjob) "
        f"kube_cronjob_status_last_successful_time{{{cron}}})"
    )
    assert backup["for"] == "1h"
    assert rules["OmenDBWALArchiveFailing"]["expr"] == f"omendb_wal_archive_lag_seconds{{{SEL}}} > 300"
    for rule in rules.values():
        assert rule["labels"]["omendb"] == "prod" and rule["annotations"]["summary"]


def test_thresholds_are_configurable():
    rules = _rules(
        {
            "monitoring": {
                "alerts": {
                    "queryLatencyP95Seconds": 0.25,
                    "memoryUsageRatio": 0.8,
                    "walGrowthBytesPerHour": 5e8,
                    "latencyFor": "10m",
                    "backupFailingFor": "3h",
                }
            }
        }
    )
    assert rules["HighQueryLatency"]["expr"].endswith("> 0.25")
    assert rules["HighQueryLatency"]["for"] == "10m"
    assert rules["HighMemoryUsage"]["expr"].endswith("> 0.8")
    assert rules["HighMemoryUsage"]["annotations"]["summary"] == "Memory usage > 80%"
    assert rules["WALSizeGrowth"]["expr"].endswith("> 5e8")
    assert rules["OmenDBBackupFailing"]["for"] == "3h"


def test_prometheus_rule_and_service_monitor(owner):
    spec = parse_spec(
        {"monitoring": {"labels": {"release": "kube-prometheus-stack"}, "scrapeInterval": "15s"}}
    )
    rule = build_prometheus_rule(owner, spec)
    assert rule["apiVersion"] == "monitoring.coreos.com/v1" and rule["kind"] == "PrometheusRule"
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert len(rule["spec"]["groups"][0]["rules"]) == 7
    sm = build_service_monitor(owner, spec)
    assert sm["spec"]["jobLabel"] == "app"  # job="omendb", as the guide's OmenDBDown expects
    assert sm["spec"]["selector"]["matchLabels"]["omendb.io/metrics"] == "true"
    assert sm["spec"]["namespaceSelector"] == {"matchNames": ["omendb-prod"]}
    assert sm["spec"]["podTargetLabels"] == ["app.kubernetes.io/instance"]
    assert sm["spec"]["endpoints"] == [
        {"port": "metrics", "path": "/metrics", "interval": "15s", "scheme": "http"}
    ]
    assert sm["metadata"]["ownerReferences"][0]["name"] == "prod"
