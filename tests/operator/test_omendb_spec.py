from __future__ import annotations

import pytest

from omendb_operator.spec import (
    DEFAULT_CLEANUP_SCHEDULE,
    DEFAULT_FULL_SCHEDULE,
    DEFAULT_INCREMENTAL_SCHEDULE,
    SpecError,
    engine_config,
    parse_spec,
)
from omendb_operator.specs.configmap import render_config_dict


def test_defaults_follow_the_guide():
    spec = parse_spec({})
    assert spec.version == "0.1.0"
    assert spec.container_image == "omendb/omendb:0.1.0"
    assert spec.replicas == 1
    assert spec.auth.enabled and spec.tls.enabled and spec.tls.generate
    # backup_schedule.sh: full backup when `date +%u` is 7 (Sunday), incremental otherwise, 30 days kept.
    assert spec.backup.full_schedule == DEFAULT_FULL_SCHEDULE == "0 1 * * 0"
    assert spec.backup.incremental_schedule == DEFAULT_INCREMENTAL_SCHEDULE == "0 1 * * 1-6"
    assert spec.backup.cleanup_schedule == DEFAULT_CLEANUP_SCHEDULE
    assert spec.backup.retention_days == 30
    # alerts.yml thresholds
    alerts = spec.monitoring.alerts
    assert (
        alerts.query_latency_p95_seconds,
        alerts.memory_usage_ratio,
        alerts.wal_growth_bytes_per_hour,
    ) == (1.0, 0.9, 1e9)
    assert (alerts.down_for, alerts.latency_for, alerts.memory_for, alerts.wal_growth_for) == (
        "30s",
        "2m",
        "5m",
        "15m",
    )
    assert spec.storage.delete_claims_on_delete is False
    assert spec.backup.volume.delete_on_delete is False


def test_image_overrides_version():
    spec = parse_spec({"version": "0.2.0", "image": "registry.local/omendb:dev"})
    assert spec.container_image == "registry.local/omendb:dev"
    assert parse_spec({"version": "v0.3.1"}).container_image == "omendb/omendb:0.3.1"


def test_camel_case_fields_are_read():
    spec = parse_spec(
        {
            "replicas": 3,
            "storage": {
                "data": {"size": "100Gi", "storageClassName": "fast"},
                "wal": {"size": "10Gi"},
                "deleteClaimsOnDelete": True,
            },
            "auth": {"htpasswdSecretName": "users", "adminUser": "root"},
            "tls": {"generate": False, "secretName": "omendb-tls"},
            "backup": {
                "fullSchedule": "0 3 * * 6",
                "retentionDays": 7,
                "volume": {"size": "1Ti", "deleteOnDelete": True},
            },
            "monitoring": {"alerts": {"queryLatencyP95Seconds": 0.5}, "labels": {"release": "prom"}},
            "scheduling": {"podAntiAffinity": "required", "priorityClassName": "db"},
        }
    )
    assert spec.replicas == 3
    assert spec.storage.data.size == "100Gi" and spec.storage.data.storage_class_name == "fast"
    assert spec.storage.delete_claims_on_delete
    assert spec.auth.htpasswd_secret_name == "users" and spec.auth.admin_user == "root"
    assert spec.tls.secret_name == "omendb-tls" and not spec.tls.generate
    assert spec.backup.full_schedule == "0 3 * * 6" and spec.backup.retention_days == 7
    assert spec.backup.volume.size == "1Ti" and spec.backup.volume.delete_on_delete
    assert spec.monitoring.alerts.query_latency_p95_seconds == 0.5
    assert spec.monitoring.labels == {"release": "prom"}
    assert spec.scheduling.pod_anti_affinity == "required"


@pytest.mark.parametrize(
    "raw, fragment",
    [
        ({"replicas": 0}, "spec.replicas is 0"),
        ({"version": "latest"}, "spec.version 'latest' is not a version"),
        ({"tls": {"generate": False}}, "spec.tls.secretName is required"),
        ({"tls": {"durationDays": 10, "renewBeforeDays": 10}}, "renewBeforeDays"),
        (
            {"config": {"index": {"max_eror": 5}}},
            "unknown key 'max_eror' in [index] (did you mean 'max_error'?)",
        ),
        ({"config": {"indx": {}}}, "unknown section [indx]"),
        ({"config": {"index": {"max_error": 0}}}, "[index] max_error = 0 is below the minimum 1"),
        ({"config": {"http": {"port": 8080}}}, "spec.config.http.port is set by the operator"),
        (
            {"config": {"database": {"data_dir": "/x"}}},
            "spec.config.database.data_dir is set by the operator",
        ),
        ({"scheduling": {"podAntiAffinity": "sometimes"}}, "podAntiAffinity"),
    ],
)
def test_bad_specs_are_refused_with_a_message_naming_the_field(raw, fragment):
    with pytest.raises(SpecError) as err:
        parse_spec(raw)
    assert fragment in str(err.value)


def test_tls_disabled_needs_no_secret_name():
    spec = parse_spec({"tls": {"enabled": False, "generate": False}})
    assert not spec.tls.enabled


def test_engine_config_is_the_engines_own_validated_config():
    spec = parse_spec(
        {
            "config": {"index": {"max_error": 10}, "database": {"name": "production"}},
            "tls": {"enabled": False},
            "auth": {"enabled": False},
        }
    )
    config = engine_config(spec)
    assert config.index.max_error == 10
    assert config.database.name == "production" == spec.database_name
    assert config.security.tls_enabled is False and config.security.auth_enabled is False
    assert render_config_dict(spec)["http"]["port"] == 3000
