"""NAME-backup-key: generated once, never rotated by a reconcile, kept as long as the backups it signs, and
mounted as a file (never an env var, never on the backup volume) into every backup_tool Job."""

from __future__ import annotations

import base64

from conftest import make_owner
from operator_pss import restricted_violations

from omendb.backup import keys
from omendb_operator.plans.children import Observed, build_children
from omendb_operator.spec import parse_spec
from omendb_operator.specs import backup_key, cronjobs, jobs
from omendb_operator.specs.backup_key import build_backup_key_secret
from omendb_operator.specs.secrets import decode_secret_data


def _key(manifest) -> str:
    return base64.b64decode(manifest["data"]["key"]).decode()


def test_generated_once_and_kept(owner, spec):
    first = build_backup_key_secret(owner, spec, existing={})
    assert first.generated and first.manifest["metadata"]["name"] == "prod-backup-key"
    key = _key(first.manifest)
    assert len(bytes.fromhex(key)) == 32
    again = build_backup_key_secret(owner, spec, existing=decode_secret_data(first.manifest))
    assert not again.generated and _key(again.manifest) == key
    # What backup_tool reads from the mounted file is a valid key (same variable, same minimum length).
    assert backup_key.KEY_FILE_ENV == keys.KEY_FILE_ENV and backup_key.MIN_KEY_CHARS == keys.MIN_KEY_BYTES
    assert keys.load_key(None, {keys.KEY_ENV: key}) is not None


def test_outlives_the_omendb_like_the_backup_volume(owner):
    kept = build_backup_key_secret(owner, parse_spec({}), {}).manifest
    assert "ownerReferences" not in kept["metadata"]
    owned = build_backup_key_secret(owner, parse_spec({"backup": {"volume": {"deleteOnDelete": True}}}),
                                    {}).manifest
    assert owned["metadata"]["ownerReferences"][0]["kind"] == "OmenDB"


def test_children_include_it_and_report_its_generation(owner, spec):
    import datetime as dt

    now = dt.datetime(2026, 12, 4, tzinfo=dt.UTC)
    desired = build_children(owner, spec, Observed(), now)
    secret = next(m for m in desired.manifests if m["metadata"]["name"] == "prod-backup-key")
    assert ("BackupKeyGenerated" in [a for a, _ in desired.actions])
    kept = build_children(owner, spec, Observed(backup_key_secret=decode_secret_data(secret)), now)
    assert "BackupKeyGenerated" not in [a for a, _ in kept.actions]
    assert _key(next(m for m in kept.manifests if m["metadata"]["name"] == "prod-backup-key")) == _key(secret)


def _pod(job_spec):
    return job_spec["template"]["spec"]


def _assert_key_mounted(pod, secret="prod-backup-key"):
    assert restricted_violations(pod) == []
    container = pod["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert env["OMENDB_BACKUP_KEY_FILE"] == {"name": "OMENDB_BACKUP_KEY_FILE", "value": "/etc/omendb/backup-key/key"}
    assert "OMENDB_BACKUP_KEY" not in env  # a file, not an environment variable
    volume = next(v for v in pod["volumes"] if v["name"] == "backup-key")
    assert volume["secret"]["secretName"] == secret and volume["secret"]["defaultMode"] == 0o440
    mount = next(m for m in container["volumeMounts"] if m["name"] == "backup-key")
    assert mount == {"name": "backup-key", "mountPath": "/etc/omendb/backup-key", "readOnly": True}
    backups = next(m for m in container["volumeMounts"] if m["name"] == "backups")["mountPath"]
    assert not mount["mountPath"].startswith(backups)  # never on the backup volume


def test_every_backup_cleanup_and_restore_job_mounts_the_key(owner, spec):
    for cron in cronjobs.build_cronjobs(owner, spec):  # full, incremental, cleanup
        _assert_key_mounted(_pod(cron["spec"]["jobTemplate"]["spec"]))
    backup = {"metadata": {"name": "b1", "uid": "u1"}, "kind": "OmenDBBackup", "spec": {"type": "full"}}
    _assert_key_mounted(_pod(jobs.backup_job(owner, spec, backup)["spec"]))
    restore = {"metadata": {"name": "r1", "uid": "u2"}, "kind": "OmenDBRestore", "spec": {}}
    job = jobs.restore_job(owner, spec, restore, "r1", "restore", 0, jobs.RestoreTarget(), {})
    _assert_key_mounted(_pod(job["spec"]))
    # The set-aside / put-back / discard Jobs read no backup: no key there.
    aside = jobs.restore_job(owner, spec, restore, "r1", "set-aside", 1, jobs.RestoreTarget(), {})
    assert "backup-key" not in {v["name"] for v in _pod(aside["spec"])["volumes"]}


def test_bootstrap_uses_the_source_clusters_key():
    from omendb_operator.plans import bootstrap

    owner = make_owner(name="copy", spec={"bootstrap": {"fromBackup": {"cluster": {"name": "prod"}}}})
    job = bootstrap.bootstrap_job(owner, parse_spec(owner["spec"]))
    _assert_key_mounted(_pod(job["spec"]), secret="prod-backup-key")


def test_a_restore_accepts_unkeyed_backups_only_when_asked(owner, spec):
    from omendb_operator.plans import restores

    restore = {"metadata": {"name": "r1", "uid": "u2"}, "kind": "OmenDBRestore", "spec": {}}
    plain = restores.target_of(restore)
    assert "--allow-unkeyed" not in plain.argv()
    restore["spec"] = {"backupId": "b", "allowUnkeyed": True}
    job = jobs.restore_job(owner, spec, restore, "r1", "restore", 0, restores.target_of(restore), {})
    command = _pod(job["spec"])["containers"][0]["command"]
    assert command[-4:] == ["--backup-id", "b", "--allow-unkeyed", "--force"]
