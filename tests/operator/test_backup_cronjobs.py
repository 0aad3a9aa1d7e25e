from __future__ import annotations

import re

import yaml
from conftest import make_owner
from operator_crd_helpers import omendb_crd_spec_schema
from operator_pss import restricted_violations

from omendb_operator.spec import parse_spec
from omendb_operator.specs.cronjobs import build_backup_volume, build_cronjobs


def _by_name(owner, raw=None):
    return {c["metadata"]["name"]: c for c in build_cronjobs(owner, parse_spec(raw or {}))}


def test_three_cronjobs_run_backup_tool_against_the_primary(owner):
    jobs = _by_name(owner, {"config": {"database": {"name": "production"}}})
    assert set(jobs) == {"prod-backup-full", "prod-backup-incremental", "prod-backup-cleanup"}
    cmd = {
        n: j["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["command"]
        for n, j in jobs.items()
    }
    base = [
        "backup_tool",
        "--source",
        "https://prod.omendb-prod.svc:3000",
        "--backup-dir",
        "/var/backups/omendb",
    ]
    result = ["--result-file", "/dev/termination-log"]  # the backup id and size, read by the operator
    assert cmd["prod-backup-full"] == base + result + ["full-backup", "--database", "production"]
    assert cmd["prod-backup-incremental"] == base + result + ["incremental-backup", "--database", "production"]
    assert cmd["prod-backup-cleanup"] == base + ["cleanup", "--retention-days", "30"]


def test_schedules_default_to_the_guide(owner):
    jobs = _by_name(owner)
    assert jobs["prod-backup-full"]["spec"]["schedule"] == "0 1 * * 0"  # Sunday
    assert jobs["prod-backup-incremental"]["spec"]["schedule"] == "0 1 * * 1-6"  # every other day
    for job in jobs.values():
        assert job["spec"]["concurrencyPolicy"] == "Forbid"
        assert job["spec"]["successfulJobsHistoryLimit"] == 3
        assert job["spec"]["failedJobsHistoryLimit"] == 3
        assert "timeZone" not in job["spec"]


def test_jobs_get_credentials_and_only_the_ca_certificate(owner):
    job = _by_name(owner)["prod-backup-full"]
    pod = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert restricted_violations(pod) == []
    container = pod["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert env["OMENDB_CA_FILE"]["value"] == "/etc/omendb/ca/ca.crt"
    # The credentials are a mounted file (only the `user:password` line of NAME-users), never environment
    # variables: backup_tool reads the file OMENDB_CREDENTIALS_FILE names.
    assert env["OMENDB_CREDENTIALS_FILE"] == {"name": "OMENDB_CREDENTIALS_FILE",
                                              "value": "/etc/omendb/credentials/credentials"}
    assert not [e for e in container["env"] if "valueFrom" in e]
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["credentials"] == {"name": "credentials", "mountPath": "/etc/omendb/credentials", "readOnly": True}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["credentials"]["secret"] == {"secretName": "prod-users", "defaultMode": 0o440,
                                                "items": [{"key": "credentials", "path": "credentials"}]}
    assert volumes["ca"]["secret"] == {
        "secretName": "prod-ca",
        "items": [{"key": "ca.crt", "path": "ca.crt"}],
    }
    assert volumes["backups"]["persistentVolumeClaim"]["claimName"] == "prod-backups"
    assert pod["restartPolicy"] == "Never"


def test_without_tls_the_source_is_http_and_no_ca_is_mounted(owner):
    job = _by_name(owner, {"tls": {"enabled": False}})["prod-backup-full"]
    pod = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["containers"][0]["command"][2] == "http://prod.omendb-prod.svc:3000"
    assert "ca" not in {v["name"] for v in pod["volumes"]}


def test_custom_schedule_time_zone_and_retention(owner):
    jobs = _by_name(
        owner,
        {
            "backup": {
                "fullSchedule": "30 2 * * 6",
                "timeZone": "Europe/Berlin",
                "retentionDays": 7,
                "suspend": True,
            }
        },
    )
    assert jobs["prod-backup-full"]["spec"]["schedule"] == "30 2 * * 6"
    assert jobs["prod-backup-full"]["spec"]["timeZone"] == "Europe/Berlin"
    assert jobs["prod-backup-full"]["spec"]["suspend"] is True
    cleanup = jobs["prod-backup-cleanup"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert cleanup["command"][-2:] == ["--retention-days", "7"]


def test_backup_volume_outlives_the_omendb_unless_asked(owner):
    kept = build_backup_volume(owner, parse_spec({}))
    assert kept["metadata"]["name"] == "prod-backups"
    assert "ownerReferences" not in kept["metadata"]
    assert kept["spec"]["resources"]["requests"]["storage"] == "20Gi"
    owned = build_backup_volume(owner, parse_spec({"backup": {"volume": {"deleteOnDelete": True}}}))
    assert owned["metadata"]["ownerReferences"][0]["name"] == "prod"


def test_default_schedules_pass_the_crd_rule():
    rule = omendb_crd_spec_schema()["properties"]["backup"]["properties"]["fullSchedule"][
        "x-kubernetes-validations"
    ][0]["rule"]
    pattern = re.search(r"self\.matches\('(.*)'\)$", rule).group(1)
    for good in ("0 1 * * 0", "0 1 * * 1-6", "0 4 * * *", "*/15 * * * *", "0 0 1,15 * MON-FRI", "@daily"):
        assert re.match(pattern, good), good
    for bad in ("61 * * * *", "0 1 * *", "every day", "0 24 * * *", "0 1 * * 8", "0 1 * * 0 extra"):
        assert not re.match(pattern, bad), bad
    assert yaml  # the CRD file parsed


def _job_resources(raw):
    return {n: j["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0].get("resources")
            for n, j in _by_name(make_owner(spec=raw), raw).items()}


def test_backup_jobs_get_resources_by_default_with_the_database_memory_limit():
    # backup_tool holds about the database's memory while it restores: the Jobs' limit is the database's.
    raw = {"resources": {"requests": {"cpu": "2", "memory": "4Gi"}, "limits": {"memory": "6Gi"}}}
    want = {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "6Gi"}}
    assert all(r == want for r in _job_resources(raw).values())
    # The database's default resources (limit 2Gi), and a database without a memory limit (1Gi).
    assert all(r["limits"] == {"memory": "2Gi"} for r in _job_resources({}).values())
    no_limit = {"resources": {"requests": {"cpu": "1", "memory": "1Gi"}}}
    assert all(r == {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}}
               for r in _job_resources(no_limit).values())


def test_spec_backup_resources_replace_the_defaults():
    own = {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": "2", "memory": "8Gi"}}
    assert all(r == own for r in _job_resources({"backup": {"resources": own}}).values())


def test_backup_and_restore_jobs_get_the_resources_and_no_secret_in_their_environment(owner):
    from omendb_operator.specs import jobs

    spec = parse_spec({})
    meta = {"namespace": "omendb-prod", "uid": "0c6e2f0a-1d2b-4c5d-9e8f-00000000000b"}
    backup = {"kind": "OmenDBBackup", "metadata": {"name": "manual", **meta}, "spec": {"type": "full"}}
    restore = {"kind": "OmenDBRestore", "metadata": {"name": "rs", **meta}, "spec": {}}
    built = [jobs.backup_job(owner, spec, backup)] + [
        jobs.restore_job(owner, spec, restore, "rs", action, 0, jobs.RestoreTarget(), {})
        for action in jobs.RESTORE_ACTIONS]
    for job in built:
        container = job["spec"]["template"]["spec"]["containers"][0]
        assert container["resources"] == {"requests": {"cpu": "100m", "memory": "256Mi"},
                                          "limits": {"memory": "2Gi"}}, job["metadata"]["name"]
        assert not [e for e in container["env"] if "valueFrom" in e], job["metadata"]["name"]
