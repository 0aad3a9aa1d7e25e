"""spec.backup.objectStore and spec.bootstrap.fromBackup.objectStore: backup_tool Jobs write to and restore
from a bucket, with the AWS settings as environment and the credentials and CA as files."""

from __future__ import annotations

import datetime as dt

import pytest
from conftest import make_owner
from operator_pss import restricted_violations

from omendb_operator.plans import bootstrap
from omendb_operator.plans.children import Observed, build_children
from omendb_operator.spec import SpecError, parse_spec
from omendb_operator.specs import jobs
from omendb_operator.specs.cronjobs import build_cronjobs

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
STORE = {"bucket": "omendb-backups", "endpointURL": "https://s3.example:8333", "region": "eu-west-1",
         "credentials": {"name": "s3-creds"}, "ca": {"name": "s3-ca", "key": "bundle.pem"}}


def _pod(cronjob):
    return cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def test_cronjobs_back_up_into_the_bucket_under_namespace_and_name(owner):
    spec = parse_spec({"backup": {"objectStore": STORE}})
    for cronjob in build_cronjobs(owner, spec):
        pod = _pod(cronjob)
        assert restricted_violations(pod) == []
        container = pod["containers"][0]
        cmd = container["command"]
        assert cmd[cmd.index("--backup-dir") + 1] == "s3://omendb-backups/omendb-prod/prod"
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["AWS_ENDPOINT_URL"] == "https://s3.example:8333" and env["AWS_REGION"] == "eu-west-1"
        assert env["AWS_SHARED_CREDENTIALS_FILE"] == "/etc/omendb/objectstore/credentials"
        assert env["AWS_CA_BUNDLE"] == "/etc/omendb/objectstore-ca/ca.crt"
        # Secrets as files only, never as environment variables.
        assert not [e for e in container["env"] if "valueFrom" in e]
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert "backups" not in volumes  # no backup volume with a bucket
        assert volumes["objectstore-credentials"]["secret"] == {
            "secretName": "s3-creds", "defaultMode": 0o440, "items": [{"key": "credentials", "path": "credentials"}]}
        assert volumes["objectstore-ca"]["secret"]["items"] == [{"key": "bundle.pem", "path": "ca.crt"}]
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert {"/etc/omendb/objectstore", "/etc/omendb/objectstore-ca"} <= mounts


def test_no_backup_volume_is_made_when_backups_go_to_a_bucket(owner):
    desired = build_children(owner, parse_spec({"backup": {"objectStore": {"bucket": "b1b", "path": "x/y"}}}),
                             Observed(), NOW)
    assert "PersistentVolumeClaim" not in {m["kind"] for m in desired.manifests}
    full = next(m for m in desired.manifests if m["metadata"]["name"] == "prod-backup-full")
    cmd = _pod(full)["containers"][0]["command"]
    assert cmd[cmd.index("--backup-dir") + 1] == "s3://b1b/x/y"
    # Without credentials and CA: the pod's own identity, the system trust; nothing mounted for them.
    env = {e["name"] for e in _pod(full)["containers"][0]["env"]}
    assert not env & {"AWS_SHARED_CREDENTIALS_FILE", "AWS_CA_BUNDLE", "AWS_ENDPOINT_URL"}


def test_restore_jobs_of_an_omendb_with_a_bucket_restore_from_it(owner):
    spec = parse_spec({"backup": {"objectStore": STORE}})
    restore = {"apiVersion": "omendb.io/v1alpha1", "kind": "OmenDBRestore",
               "metadata": {"name": "r1", "namespace": "omendb-prod", "uid": "u"}}
    job = jobs.restore_job(owner, spec, restore, "r1", "restore", 0, jobs.RestoreTarget(lsn=42), {})
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert "s3://omendb-backups/omendb-prod/prod" in container["command"]
    assert {e["name"] for e in container["env"]} >= {"AWS_SHARED_CREDENTIALS_FILE", "AWS_CA_BUNDLE"}
    assert "backups" not in {v["name"] for v in job["spec"]["template"]["spec"]["volumes"]}


def test_bootstrap_from_another_clusters_bucket_uses_its_path_and_this_omendbs_key():
    owner = make_owner("db", "dr", spec={})
    raw = {"bootstrap": {"fromBackup": {"objectStore": {**STORE, "path": "prod/db"},
                                        "pointInTime": {"time": "2026-12-04T10:00:00Z"}}}}
    spec = parse_spec(raw)
    job = bootstrap.bootstrap_job(owner, spec)
    container = job["spec"]["template"]["spec"]["containers"][0]
    cmd = container["command"]
    assert "s3://omendb-backups/prod/db" in cmd and "2026-12-04T10:00:00Z" in cmd
    volumes = {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}
    # The backups are authenticated with this OmenDB's NAME-backup-key: a copy of the source's.
    key = [v for v in volumes.values() if v.get("secret", {}).get("secretName", "").endswith("backup-key")]
    assert key and key[0]["secret"]["secretName"] == "db-backup-key"
    plan = bootstrap.plan_bootstrap(owner, spec, {}, False, set(), None, [], NOW)
    # No source volume to wait for: the claims and the Job are created at once.
    assert plan.status["phase"] == bootstrap.RUNNING and plan.create[-1]["kind"] == "Job"
    assert plan.status["source"]["objectStore"] == "s3://omendb-backups/prod/db"


@pytest.mark.parametrize("store, message", [
    ({"bucket": "Bad_Bucket"}, "is not an S3 bucket name"),
    ({"bucket": "ok-bucket", "endpointURL": "s3.example:8333"}, "must start with https://"),
    ({"bucket": "ok-bucket", "credentials": {"key": "x"}}, r"credentials.name is required"),
])
def test_bad_object_stores_are_refused_naming_the_field(store, message):
    with pytest.raises(SpecError, match=message):
        parse_spec({"backup": {"objectStore": store}})


def test_a_bootstrap_needs_a_cluster_or_a_bucket():
    with pytest.raises(SpecError, match="needs cluster.name .* or objectStore"):
        parse_spec({"bootstrap": {"fromBackup": {"backupId": "latest"}}})


def _database_pod(desired):
    sts = next(m for m in desired.manifests if m["kind"] == "StatefulSet")
    return sts["spec"]["template"]["spec"]


def _toml(desired):
    return next(m for m in desired.manifests if m["kind"] == "ConfigMap" and "omendb.toml" in m.get("data", {})
                )["data"]["omendb.toml"]


def test_the_primary_ships_its_wal_beside_the_backups_signed_with_the_backup_key(owner):
    spec = parse_spec({"backup": {"objectStore": STORE}, "config": {"wal_archive": {"interval_seconds": 2}}})
    desired = build_children(owner, spec, Observed(), NOW)
    toml = _toml(desired)
    assert '[wal_archive]\ninterval_seconds = 2\nurl = "s3://omendb-backups/omendb-prod/prod"' in toml
    pod = _database_pod(desired)
    assert restricted_violations(pod) == []
    container = pod["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["AWS_ENDPOINT_URL"] == "https://s3.example:8333"
    assert env["AWS_SHARED_CREDENTIALS_FILE"] == "/etc/omendb/objectstore/credentials"
    assert env["AWS_CA_BUNDLE"] == "/etc/omendb/objectstore-ca/ca.crt"
    assert env["OMENDB_BACKUP_KEY_FILE"] == "/etc/omendb/backup-key/key"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["backup-key"]["secret"]["secretName"] == "prod-backup-key"
    assert volumes["objectstore-credentials"]["secret"]["secretName"] == "s3-creds"
    assert not [e for e in container["env"] if "valueFrom" in e and e["name"].startswith(("AWS", "OMENDB_B"))]


def test_archive_wal_false_keeps_the_database_pods_off_the_bucket(owner):
    spec = parse_spec({"backup": {"objectStore": {**STORE, "archiveWal": False}}})
    desired = build_children(owner, spec, Observed(), NOW)
    assert "[wal_archive]" not in _toml(desired)
    env = {e["name"] for e in _database_pod(desired)["containers"][0]["env"]}
    assert not env & {"AWS_ENDPOINT_URL", "AWS_SHARED_CREDENTIALS_FILE", "OMENDB_BACKUP_KEY_FILE"}
    # Without an object store there is nothing to archive to either.
    assert "[wal_archive]" not in _toml(build_children(owner, parse_spec({}), Observed(), NOW))


@pytest.mark.parametrize(("raw", "message"), [
    ({"backup": {"objectStore": STORE}, "config": {"wal_archive": {"url": "s3://elsewhere"}}},
     "spec.config.wal_archive.url is set by the operator"),
    ({"backup": {"objectStore": STORE}, "config": {"wal": {"enabled": False}}},
     r"\[wal_archive\] url is set but \[wal\] enabled = false"),
])
def test_wal_archive_settings_the_operator_owns_or_cannot_honour_are_refused(raw, message):
    with pytest.raises(SpecError, match=message):
        parse_spec(raw)
