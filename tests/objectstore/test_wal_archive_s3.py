"""Continuous WAL archiving to the real S3 server: a keyed primary ships its WAL into the bucket beside its
backups, is killed, and `backup_tool restore` from the bucket brings back every acknowledged write shipped;
every piece is signed with the backup key."""

from __future__ import annotations

import os
import signal
import time
import uuid

import httpx

from omendb.objectstore import ObjectStore
from omendb.wal_archive import parse_name
from tests.backup.conftest import tool
from tests.server.harness import Server

KEY = "0123456789abcdef" * 4


def _metric(server: Server, name: str) -> float:
    for line in httpx.get(server.metrics_url, timeout=5).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} is not exported")


def test_a_killed_primary_is_restored_from_the_bucket_with_every_shipped_write(tmp_path, s3_env):
    url = f"s3://{s3_env['OMENDB_TEST_BUCKET']}/wal-{uuid.uuid4().hex[:10]}/shop"
    aws = {k: v for k, v in s3_env.items() if k.startswith("AWS_")}
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("AWS_")}, **aws, "OMENDB_BACKUP_KEY": KEY}
    acked: dict[int, float] = {}
    primary = Server(tmp_path / "primary", {"database": {"name": "shop"},
                                            "wal_archive": {"url": url, "interval_seconds": 0.5}}, env=env)
    with primary.start():
        def write(batch: int) -> int:
            records = [{"key": batch * 100 + j, "value": float(batch)} for j in range(50)]
            r = httpx.post(f"{primary.url}/v1/records", json={"records": records}, timeout=10)
            assert r.status_code == 200, r.text
            acked.update((rec["key"], rec["value"]) for rec in records)
            return int(r.json()["lsn"])

        write(0)
        tool("--backup-dir", url, "--source", primary.url, "full-backup", "--database", "shop", env=env)
        last = max(write(batch) for batch in range(1, 30))
        deadline = time.monotonic() + 30
        while _metric(primary, "omendb_wal_archive_shipped_lsn") < last:
            assert time.monotonic() < deadline, primary.log_text()[-3000:]
            time.sleep(0.1)
        assert _metric(primary, "omendb_wal_archive_failures_total") == 0
        primary.stop(signal.SIGKILL)

    objects = ObjectStore.from_url(url, s3_env).list("wal/")
    assert objects, "nothing was shipped to the bucket"
    assert all((parse_name(o.key.rsplit("/", 1)[1]) or _bad(o.key)).mac for o in objects), "unsigned piece"

    out = tool("--backup-dir", url, "--data-dir", str(tmp_path / "restored"), "restore", "--backup-id", "latest",
               env=env).stdout
    assert f"to LSN {last}" in out and "archived writes after its end" in out, out
    with Server(tmp_path / "restored", {"database": {"name": "shop"}}).start() as restored:
        assert httpx.get(f"{restored.url}/v1/stats", timeout=5).json()["records"] == len(acked)
        for key in (0, 149, 2949):
            got = httpx.get(f"{restored.url}/v1/records/{key}", timeout=5).json()
            assert got.get("value") == acked[key], (key, got)

    # Restoring with another key refuses the pieces (and the backup): nothing unsigned by our key is used.
    other = tool("--backup-dir", url, "--data-dir", str(tmp_path / "other"), "restore", "--backup-id", "latest",
                 env={**env, "OMENDB_BACKUP_KEY": "f" * 64}, check=None)
    assert other.returncode != 0, other.stdout


def _bad(key: str) -> None:
    raise AssertionError(f"{key} is not a WAL piece name")
