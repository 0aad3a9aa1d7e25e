"""The PrometheusRule's alerts checked and unit-tested by Prometheus' own promtool: the expressions parse,
and each alert fires on the series that should fire it (and not on healthy ones)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml
from operator_apiserver import find_bin_dir

from omendb_operator.spec import parse_spec
from omendb_operator.specs.monitoring import alert_rules

SEL = 'namespace="prod-ns", app_kubernetes_io_instance="prod", pod="prod-0"'
CRON = 'namespace="prod-ns", cronjob="prod-backup-full"'


def _promtool() -> Path:
    return find_bin_dir(("promtool",)) / "promtool"


def _rules_file(tmp_path: Path, raw=None) -> Path:
    rules = alert_rules("prod", "prod-ns", parse_spec(raw or {}))
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "omendb", "rules": rules}]}))
    return path


def test_rules_pass_promtool_check(tmp_path):
    out = subprocess.run(
        [str(_promtool()), "check", "rules", str(_rules_file(tmp_path))], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS: 7 rules found" in out.stdout


def test_each_alert_fires_when_it_should(tmp_path):
    rules = _rules_file(tmp_path)
    gib = 1024**3
    tests = {
        "rule_files": [str(rules)],
        "evaluation_interval": "30s",
        "tests": [
            {
                "interval": "30s",
                "input_series": [
                    {"series": f'up{{job="omendb", {SEL}}}', "values": "0x10"},
                    {
                        "series": 'up{job="omendb", namespace="prod-ns", app_kubernetes_io_instance="prod", '
                        'pod="prod-1"}',
                        "values": "1x10",
                    },
                    # 2 s requests: p95 well above 1 s.
                    {"series": f'omendb_query_duration_seconds_bucket{{le="1", {SEL}}}', "values": "0+0x20"},
                    {
                        "series": f'omendb_query_duration_seconds_bucket{{le="2.5", {SEL}}}',
                        "values": "0+10x20",
                    },
                    {
                        "series": f'omendb_query_duration_seconds_bucket{{le="+Inf", {SEL}}}',
                        "values": "0+10x20",
                    },
                    {"series": f"omendb_memory_usage_bytes{{{SEL}}}", "values": f"{int(0.95 * 8 * gib)}x20"},
                    {"series": f"omendb_memory_limit_bytes{{{SEL}}}", "values": f"{8 * gib}x20"},
                    # +2 GB over the hour.
                    {"series": f"omendb_wal_size_bytes{{{SEL}}}", "values": "0+20000000x200"},
                    # last run scheduled at t=1000, last success at t=500: failing.
                    {"series": f"kube_cronjob_status_last_schedule_time{{{CRON}}}", "values": "1000x200"},
                    {"series": f"kube_cronjob_status_last_successful_time{{{CRON}}}", "values": "500x200"},
                    # 8 days left on prod-0 (healthy); prod-1's certificate has 3 days left.
                    {"series": f"omendb_tls_cert_expiry_seconds{{{SEL}}}", "values": f"{8 * 86400}-30x40"},
                    {"series": 'omendb_tls_cert_expiry_seconds{namespace="prod-ns", '
                               'app_kubernetes_io_instance="prod", pod="prod-1"}',
                     "values": f"{3 * 86400}-30x40"},
                    # prod-0 ships its WAL (lag 0); prod-1's shipping fails from t=0: the lag grows 30 s a step.
                    {"series": f"omendb_wal_archive_lag_seconds{{{SEL}}}", "values": "0x40"},
                    {"series": 'omendb_wal_archive_lag_seconds{namespace="prod-ns", '
                               'app_kubernetes_io_instance="prod", pod="prod-1"}',
                     "values": "0+30x40"},
                ],
                "alert_rule_test": [
                    {
                        "eval_time": "1m",
                        "alertname": "OmenDBDown",
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    "severity": "critical",
                                    "omendb": "prod",
                                    "namespace": "prod-ns",
                                    "job": "omendb",
                                    "app_kubernetes_io_instance": "prod",
                                    "pod": "prod-0",
                                },
                                "exp_annotations": {
                                    "summary": "OmenDB instance is down",
                                    "description": "prod-0 of OmenDB prod-ns/prod is not answering "
                                    "metrics scrapes.",
                                },
                            }
                        ],
                    },
                    {
                        "eval_time": "4m",
                        "alertname": "HighQueryLatency",
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    "severity": "warning",
                                    "omendb": "prod",
                                    "namespace": "prod-ns",
                                    "pod": "prod-0",
                                },
                                "exp_annotations": {
                                    "summary": "95th percentile query latency > 1s",
                                    "description": "prod-0: p95 query latency is 2.425s.",
                                },
                            }
                        ],
                    },
                    {"eval_time": "1m", "alertname": "HighMemoryUsage", "exp_alerts": []},
                    {
                        "eval_time": "6m",
                        "alertname": "HighMemoryUsage",
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    "severity": "critical",
                                    "omendb": "prod",
                                    "namespace": "prod-ns",
                                    "app_kubernetes_io_instance": "prod",
                                    "pod": "prod-0",
                                },
                                "exp_annotations": {
                                    "summary": "Memory usage > 90%",
                                    "description": "prod-0 uses 95% of its memory limit.",
                                },
                            }
                        ],
                    },
                    {
                        "eval_time": "90m",
                        "alertname": "WALSizeGrowth",
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    "severity": "warning",
                                    "omendb": "prod",
                                    "namespace": "prod-ns",
                                    "app_kubernetes_io_instance": "prod",
                                    "pod": "prod-0",
                                },
                                "exp_annotations": {
                                    "summary": "WAL growing faster than 1e9 bytes/hour",
                                    "description": "prod-0: the WAL grew 2.235GiB in the last hour; check "
                                    "that backups and checkpoints run.",
                                },
                            }
                        ],
                    },
                    {"eval_time": "30m", "alertname": "OmenDBBackupFailing", "exp_alerts": []},
                    {
                        "eval_time": "70m",
                        "alertname": "OmenDBBackupFailing",
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    "severity": "critical",
                                    "omendb": "prod",
                                    "namespace": "prod-ns",
                                    "cronjob": "prod-backup-full",
                                },
                                "exp_annotations": {
                                    "summary": "OmenDB scheduled backup is failing",
                                    "description": "The last run of prod-backup-full has not succeeded; see "
                                    "`kubectl -n prod-ns get jobs -l "
                                    "app.kubernetes.io/instance=prod`.",
                                },
                            }
                        ],
                    },
                    {"eval_time": "5m", "alertname": "OmenDBCertificateExpiringSoon", "exp_alerts": []},
                    {
                        "eval_time": "15m",
                        "alertname": "OmenDBCertificateExpiringSoon",
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    "severity": "warning",
                                    "omendb": "prod",
                                    "namespace": "prod-ns",
                                    "app_kubernetes_io_instance": "prod",
                                    "pod": "prod-1",
                                },
                                "exp_annotations": {
                                    "summary": "OmenDB TLS certificate expires within 7 days",
                                    "description": "prod-1 serves a certificate that expires in 2d 23h 45m "
                                    "0s (negative: expired); see the certificate-expiry runbook.",
                                },
                            }
                        ],
                    },
                    {"eval_time": "5m", "alertname": "OmenDBWALArchiveFailing", "exp_alerts": []},
                    {
                        "eval_time": "7m",
                        "alertname": "OmenDBWALArchiveFailing",
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    "severity": "critical",
                                    "omendb": "prod",
                                    "namespace": "prod-ns",
                                    "app_kubernetes_io_instance": "prod",
                                    "pod": "prod-1",
                                },
                                "exp_annotations": {
                                    "summary": "OmenDB WAL archiving is failing or behind",
                                    "description": "prod-1 has writes that waited 7m 0s to be shipped to the "
                                    "object store; see the WAL archiving runbook.",
                                },
                            }
                        ],
                    },
                ],
            }
        ],
    }
    test_file = tmp_path / "tests.yaml"
    test_file.write_text(yaml.safe_dump(tests))
    out = subprocess.run([str(_promtool()), "test", "rules", str(test_file)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
