"""backup_tool with ``--backup-dir s3://bucket/prefix`` against the real SeaweedFS: every command of the
guide, point in time, retention keeping chains, keyed backups, tampering, a run killed mid-upload, locking,
and the errors a misconfigured store gives (with exit code 8)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from datetime import UTC, datetime

import numpy as np
import pytest
from cryptography.hazmat.primitives import serialization

from e2e import objectstore as seaweed
from e2e import pki
from omendb import Database
from omendb.backup.errors import EXIT_BUSY, EXIT_CORRUPT, EXIT_STORE
from omendb.backup.layout import resolve
from omendb.objectlock import ObjectLock
from omendb.objectstore import ObjectStore
from tests.backup.conftest import BACKUP_TOOL, Model, engine_config, read_state, run, tool, write_batches

AWS_KEYS = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_CA_BUNDLE", "AWS_REGION",
            "AWS_DEFAULT_REGION")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20261204)


@pytest.fixture
def bucket(s3_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> tuple[str, ObjectStore]:
    """A fresh prefix of the test bucket, and the AWS variables set for backup_tool (in and out of process)."""
    for name in os.environ:
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    for name in AWS_KEYS:
        monkeypatch.setenv(name, s3_env[name])
    url = f"s3://{s3_env['OMENDB_TEST_BUCKET']}/bt-{uuid.uuid4().hex[:10]}/omendb"
    return url, ObjectStore.from_url(url, s3_env)


def _ids(url: str, database: str = "production") -> list[str]:
    return [line.split("\t")[0] for line in run("--backup-dir", url, "list", "--database", database)
            .stdout.splitlines()]


def test_every_guide_command_against_s3(tmp_path, rng, bucket):
    url, objects = bucket
    root, model = tmp_path / "omendb", Model()
    with Database.open(engine_config(root)) as db:
        write_batches(db, model, rng, 8)
        full_lsn = model.remember()
    out = run("--data-dir", str(root), "--backup-dir", url, "full-backup", "--database", "production").stdout
    assert "full backup of production" in out
    with Database.open(engine_config(root)) as db:
        write_batches(db, model, rng, 5)
        db.checkpoint()
        write_batches(db, model, rng, 3)
        mid_lsn = model.remember()
    run("--data-dir", str(root), "--backup-dir", url, "incremental-backup", "--database", "production")
    time.sleep(0.05)
    mid_time = datetime.now(UTC).isoformat()  # after mid_lsn's commit, before the next write's
    time.sleep(0.05)
    with Database.open(engine_config(root)) as db:
        write_batches(db, model, rng, 4)
        last_lsn = model.remember()
    run("--data-dir", str(root), "--backup-dir", url, "incremental-backup", "--database", "production")

    listing = run("--backup-dir", url, "list", "--database", "production").stdout.splitlines()
    assert [line.split("\t")[1] for line in listing] == ["incremental", "incremental", "full"]
    ids = [line.split("\t")[0] for line in listing]
    # The bucket holds exactly the layout docs/backup.md describes: <id>/manifest.json and payloads.
    keys = {o.key for o in objects.list()}
    assert {f"{i}/manifest.json" for i in ids} <= keys
    assert all(k.split("/")[0] in ids for k in keys), keys  # no lock, no leftovers after the runs
    as_json = json.loads(run("--backup-dir", url, "list", "--output", "json").stdout)
    assert [b["id"] for b in as_json] == ids

    verify = run("--backup-dir", url, "verify", "--backup-id", "latest").stdout
    assert verify.count("sha256 and WAL frame checksums match") == 3
    deep = run("--backup-dir", url, "verify", "--backup-id", ids[0], "--deep").stdout
    assert "deep check" in deep and f"{len(model.data)} records" in deep

    target = tmp_path / "restored"
    run("--data-dir", str(target), "--backup-dir", url, "restore", "--backup-id", "latest")
    assert read_state(resolve(target)) == (model.at[last_lsn], last_lsn)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".omendb-backup-s3-")]  # download removed
    run("--data-dir", str(target), "--backup-dir", url, "restore", "--backup-id", "latest", "--to-lsn",
        str(mid_lsn), "--force")
    assert read_state(resolve(target)) == (model.at[mid_lsn], mid_lsn)
    run("--data-dir", str(target), "--backup-dir", url, "restore", "--backup-id", "latest", "--to-time",
        mid_time, "--force")
    assert read_state(resolve(target)) == (model.at[mid_lsn], mid_lsn)
    run("--data-dir", str(target), "--backup-dir", url, "restore", "--backup-id", ids[2], "--force")
    assert read_state(resolve(target)) == (model.at[full_lsn], full_lsn)


def test_cleanup_prunes_in_the_bucket_and_keeps_chains(tmp_path, rng, bucket):
    url, objects = bucket
    root, model = tmp_path / "omendb", Model()
    for kind in ("full-backup", "incremental-backup", "full-backup", "incremental-backup"):
        with Database.open(engine_config(root)) as db:
            write_batches(db, model, rng, 3)
        run("--data-dir", str(root), "--backup-dir", url, kind, "--database", "production")
    old_incr, old_full = _ids(url)[2:]
    newest, new_full = _ids(url)[:2]
    time.sleep(1.0)
    dry = run("--backup-dir", url, "cleanup", "--retention-days", "0.00001", "--dry-run").stdout
    assert f"would remove\t{old_incr}" in dry and len(_ids(url)) == 4
    out = run("--backup-dir", url, "cleanup", "--retention-days", "0.00001").stdout
    assert f"removed\t{old_incr}" in out and f"removed\t{old_full}" in out
    assert f"kept\t{new_full}" in out and f"{newest} depends on it" in out
    assert _ids(url) == [newest, new_full]
    assert {o.key.split("/")[0] for o in objects.list()} == {newest, new_full}  # payloads gone too
    target = tmp_path / "restored"
    run("--data-dir", str(target), "--backup-dir", url, "restore", "--backup-id", "latest")
    assert read_state(resolve(target)) == (model.data, model.lsn)


def test_the_guide_scripts_run_unchanged_against_s3(tmp_path, rng, bucket):
    """backup_schedule.sh and disaster_recovery.sh as printed, with BACKUP_DIR an s3:// URL."""
    from tests.backup.test_guide import BACKUP_SCHEDULE, DISASTER_RECOVERY, run_script, substitute

    url, _ = bucket
    lib, model = tmp_path / "var-lib-omendb", Model()
    schedule = substitute(BACKUP_SCHEDULE, {"/var/lib/omendb": lib, "/var/backups/omendb": url})  # type: ignore[dict-item]
    for dow in (7, 1, 2):
        with Database.open(engine_config(lib)) as db:
            write_batches(db, model, rng, 4)
        proc = run_script(tmp_path, "backup_schedule.sh", schedule, dow=dow)
        assert proc.returncode == 0, proc.stderr
        assert ("full" if dow == 7 else "incremental") + " backup of production" in proc.stdout
        assert "Backup completed successfully" in proc.stdout
    (lib / "data" / "MANIFEST").write_text("garbage")  # the disaster
    proc = run_script(tmp_path, "disaster_recovery.sh", DISASTER_RECOVERY,
                      env={"BACKUP_DIR": url, "DATA_DIR": str(lib)})
    assert proc.returncode == 0 and "Disaster recovery completed" in proc.stdout, proc.stderr
    assert read_state(resolve(lib)) == (model.data, model.lsn)


def test_keyed_backups_and_tampering_are_refused(tmp_path, rng, bucket):
    url, objects = bucket
    key = tmp_path / "backup.key"
    key.write_bytes(os.urandom(32).hex().encode())
    root, model = tmp_path / "omendb", Model()
    with Database.open(engine_config(root)) as db:
        write_batches(db, model, rng, 5)
    run("--key-file", str(key), "--data-dir", str(root), "--backup-dir", url, "full-backup", "--database",
        "production")
    with Database.open(engine_config(root)) as db:
        write_batches(db, model, rng, 3)
    run("--key-file", str(key), "--data-dir", str(root), "--backup-dir", url, "incremental-backup",
        "--database", "production")
    incr, full = _ids(url)
    assert "signature verified" in run("--key-file", str(key), "--backup-dir", url, "verify", "--backup-id",
                                       "latest").stdout

    # A payload changed in the bucket: sha256 mismatch, verify and restore refuse.
    wal_key = f"{full}/wal.frames.zst"
    original = objects.get(wal_key)
    damaged = bytearray(original)
    damaged[len(damaged) // 2] ^= 0x01
    objects.put(wal_key, bytes(damaged))
    proc = run("--key-file", str(key), "--backup-dir", url, "verify", "--backup-id", "latest", check=EXIT_CORRUPT)
    assert f"FAIL {url}/{wal_key}: size or sha256 mismatch" in proc.stdout
    target = tmp_path / "restored"
    proc = run("--key-file", str(key), "--data-dir", str(target), "--backup-dir", url, "restore", "--backup-id",
               "latest", check=EXIT_CORRUPT)
    assert f"{url}/{wal_key}: size or sha256 mismatch" in proc.stderr
    assert not resolve(target).holds_database()
    objects.delete([wal_key])  # a payload missing from the bucket
    proc = run("--key-file", str(key), "--backup-dir", url, "verify", "--backup-id", "latest", check=EXIT_CORRUPT)
    assert f"FAIL {url}/{wal_key} is missing" in proc.stdout
    objects.put(wal_key, original)

    # A manifest changed in the bucket (more records claimed): refused, by its checksum or its signature.
    manifest_key = f"{incr}/manifest.json"
    manifest = json.loads(objects.get(manifest_key))
    manifest["records"] += 1
    objects.put(manifest_key, json.dumps(manifest).encode())
    proc = run("--key-file", str(key), "--backup-dir", url, "verify", "--backup-id", "latest", check=EXIT_CORRUPT)
    assert f"FAIL the latest backup {incr} cannot be used" in proc.stdout
    proc = run("--key-file", str(key), "--data-dir", str(target), "--backup-dir", url, "restore", "--backup-id",
               incr, check=EXIT_CORRUPT)
    assert not resolve(target).holds_database()


def test_a_backup_killed_mid_upload_is_never_listed_and_is_cleaned(tmp_path, rng, bucket):
    url, objects = bucket
    root, model = tmp_path / "omendb", Model()
    with Database.open(engine_config(root)) as db:
        write_batches(db, model, rng, 40, size=20_000, key_space=10**9)
    # A long WAL after the checkpoint: its upload, after the snapshot's, is the window the kill aims at.
    db = Database.open(engine_config(root))
    write_batches(db, model, rng, 40, size=20_000, key_space=10**9)
    db.close(checkpoint=False)
    env = {**os.environ, "OMENDB_S3_LOCK_TTL": "600"}
    proc = subprocess.Popen([str(BACKUP_TOOL), "--data-dir", str(root), "--backup-dir", url, "full-backup",
                             "--database", "production"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if any(not o.key.startswith(".") for o in objects.list()):
                break  # the first payload is in, the manifest is not (yet)
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    listed = _ids(url)
    published = {o.key.split("/")[0] for o in objects.list() if o.key.endswith("/manifest.json")}
    assert set(listed) == published  # listed only with its manifest
    # An earlier run killed after its snapshot went up, for certain (what the kill above leaves if it won).
    orphan = "production-20260101T000000000Z-full"
    objects.put(f"{orphan}/snapshot.odb", b"half a backup")
    assert orphan not in _ids(url)
    # The killed run's lock is taken over at once: it ran on this machine and its pid is gone.
    run("--data-dir", str(root), "--backup-dir", url, "full-backup", "--database", "production")
    tops = {o.key.split("/")[0] for o in objects.list()}
    assert orphan not in tops and tops == set(_ids(url)), tops
    assert not any(o.key == ".lock" for o in objects.list())


def test_a_second_writer_is_refused_while_the_lock_is_held(tmp_path, rng, bucket):
    url, objects = bucket
    root, model = tmp_path / "omendb", Model()
    with Database.open(engine_config(root)) as db:
        write_batches(db, model, rng, 3)
    lock = ObjectLock(objects, ttl=30)
    lock.acquire()
    try:
        proc = run("--data-dir", str(root), "--backup-dir", url, "full-backup", "--database", "production",
                   check=EXIT_BUSY)
        assert "in use by another backup_tool run" in proc.stderr and f"pid {os.getpid()}" in proc.stderr
        proc = run("--backup-dir", url, "cleanup", "--retention-days", "1", check=EXIT_BUSY)
        assert "--lock-timeout" in proc.stderr
    finally:
        lock.release()
    run("--data-dir", str(root), "--backup-dir", url, "full-backup", "--database", "production")


def test_misconfigured_store_gives_clear_errors(tmp_path, rng, bucket, s3_env, monkeypatch):
    url, _ = bucket
    root, model = tmp_path / "omendb", Model()
    with Database.open(engine_config(root)) as db:
        write_batches(db, model, rng, 2)
    backup = ("--data-dir", str(root), "--backup-dir", url, "full-backup", "--database", "production")
    monkeypatch.setenv("OMENDB_S3_MAX_RETRIES", "1")
    monkeypatch.setenv("OMENDB_S3_RETRY_TIMEOUT", "5")

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    proc = run(*backup, check=EXIT_STORE)
    assert "secret key does not match" in proc.stderr and "AWS_SECRET_ACCESS_KEY" in proc.stderr
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_env["AWS_SECRET_ACCESS_KEY"])

    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("HOME", str(tmp_path))
    proc = run("--backup-dir", url, "list", check=EXIT_STORE)
    assert "no credentials" in proc.stderr and "AWS_SHARED_CREDENTIALS_FILE" in proc.stderr
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_env["AWS_ACCESS_KEY_ID"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_env["AWS_SECRET_ACCESS_KEY"])

    proc = run("--backup-dir", f"s3://no-such-bucket-{uuid.uuid4().hex[:6]}/x", "list", check=EXIT_STORE)
    assert "does not exist" in proc.stderr and "create it" in proc.stderr

    other_ca, _ = pki.make_ca("not-the-store-ca")
    bad_ca = tmp_path / "other-ca.pem"
    bad_ca.write_bytes(other_ca.public_bytes(serialization.Encoding.PEM))
    monkeypatch.setenv("AWS_CA_BUNDLE", str(bad_ca))
    proc = run("--data-dir", str(tmp_path / "r"), "--backup-dir", url, "restore", "--backup-id", "latest",
               check=EXIT_STORE)
    assert "could not be verified" in proc.stderr and "AWS_CA_BUNDLE" in proc.stderr
    monkeypatch.setenv("AWS_CA_BUNDLE", s3_env["AWS_CA_BUNDLE"])

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"https://127.0.0.1:{seaweed.free_ports(1)[0]}")
    proc = run(*backup, check=EXIT_STORE)
    assert "cannot reach the endpoint" in proc.stderr and "AWS_ENDPOINT_URL" in proc.stderr
    # The console script: same message, same exit code.
    assert tool("--backup-dir", url, "list", check=EXIT_STORE).stderr.startswith("backup_tool: error:")
    np.testing.assert_equal(read_state(resolve(root))[1], model.lsn)  # the database was never touched
