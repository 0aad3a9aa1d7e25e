"""Online backups (`--source URL`) of a real `omendb serve` over TLS with authentication, under a
concurrent write load: every backup restores to exactly the state the server had at the backup's LSN."""

from __future__ import annotations

import json
import ssl
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from omendb.backup.columns import unpack
from omendb.backup.layout import resolve
from tests.backup.conftest import read_state, run, tool
from tests.server.certs import CertificateAuthority
from tests.server.harness import Server, htpasswd_bcrypt

ADMIN, ADMIN_PW = "admin", "backup-admin-pw"
READER, READER_PW = "reader", "reader-pw"


class Writer(threading.Thread):
    """Writes batches (upserts and deletes) as fast as the server takes them, logging each batch's LSN."""

    def __init__(self, url: str, verify: ssl.SSLContext) -> None:
        super().__init__(daemon=True)
        self.client = httpx.Client(base_url=url, verify=verify, auth=(ADMIN, ADMIN_PW), timeout=30)
        self.log: list[tuple[int, np.ndarray, np.ndarray | None]] = []
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.rng = np.random.default_rng(5)

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                keys = self.rng.integers(0, 5000, 50, dtype=np.int64)
                if len(self.log) % 4 == 3:
                    r = self.client.post("/v1/records/delete", json={"keys": keys.tolist()})
                    values = None
                else:
                    values = np.round(self.rng.random(50), 6)
                    r = self.client.post("/v1/records", json={"records": [
                        {"key": int(k), "value": float(v)} for k, v in zip(keys, values, strict=True)]})
                r.raise_for_status()
                self.log.append((r.json()["lsn"], keys, values))
        except BaseException as exc:  # reported by the test
            self.error = exc

    def state_at(self, lsn: int) -> dict[int, float]:
        data: dict[int, float] = {}
        for batch_lsn, keys, values in sorted(self.log, key=lambda b: b[0]):
            if batch_lsn > lsn:
                break
            if values is None:
                for k in keys.tolist():
                    data.pop(k, None)
            else:
                data.update(zip(keys.tolist(), values.tolist(), strict=True))
        return data


@pytest.fixture
def tls_server(tmp_path: Path):
    ca = CertificateAuthority.create()
    ca_file = ca.write_ca(tmp_path / "ca.crt")
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    ca.issue(cert, key)
    users = tmp_path / "users.htpasswd"
    users.write_text(htpasswd_bcrypt(ADMIN, ADMIN_PW) + "\n" + htpasswd_bcrypt(READER, READER_PW) + "\n")
    server = Server(tmp_path / "srv", {
        "security": {"auth_enabled": True, "htpasswd_file": str(users), "admin_users": [ADMIN],
                     "tls_enabled": True, "tls_cert_file": str(cert), "tls_key_file": str(key)},
        "index": {"retrain_threshold": 2000},  # background merges and checkpoints during the load
        "wal": {"max_file_size_mb": 1},
    })
    context = ssl.create_default_context(cafile=str(ca_file))
    with server:
        server.start(verify=context)
        yield server, ca_file, context


def test_online_backups_under_concurrent_writes_restore_consistently(tls_server, tmp_path):
    server, ca_file, context = tls_server
    backups = tmp_path / "backups"
    creds = tmp_path / "credentials"
    creds.write_text(f"{ADMIN}:{ADMIN_PW}\n")
    json_creds = tmp_path / "credentials.json"
    json_creds.write_text(json.dumps({"username": ADMIN, "password": ADMIN_PW}))
    writer = Writer(server.url, context)
    writer.start()
    try:
        while len(writer.log) < 20:
            assert writer.error is None and writer.is_alive()
            time.sleep(0.01)
        base = ["--source", server.url, "--ca-file", str(ca_file), "--backup-dir", str(backups)]
        # The guide passes --data-dir too; online it is not read.
        tool("--data-dir", "/nonexistent", *base, "--credentials-file", str(creds), "full-backup",
             "--database", "production")
        tool(*base, "--credentials-file", str(json_creds), "incremental-backup", "--database", "production")
        # As the operator's backup Jobs run it: the credentials file (NAME-users' `credentials`, mounted) and
        # the CA named by the environment, no password in it.
        tool("--source", server.url, "--backup-dir", str(backups), "incremental-backup", "--database",
             "production", env={"OMENDB_CREDENTIALS_FILE": str(creds), "OMENDB_CA_FILE": str(ca_file)})
    finally:
        writer.stop.set()
        writer.join(30)
    assert writer.error is None, writer.error
    listed = json.loads(run("--backup-dir", str(backups), "list", "--output", "json").stdout)
    assert [b["type"] for b in listed] == ["incremental", "incremental", "full"]
    assert all(b["source"]["kind"] == "online" for b in listed)
    assert writer.log[-1][0] > listed[0]["end_lsn"]  # writes went on after the last backup
    assert listed[-1]["end_lsn"] > 20  # ... and before the first one finished
    # The streamed checkpoint is stored packed (snapshot.odb.cols) like a local one.
    assert {f["name"] for f in listed[-1]["files"]} == {"snapshot.odb.cols", "wal.frames.zst"}
    unpack(backups / listed[-1]["id"] / "snapshot.odb.cols", tmp_path / "snapshot.odb")
    snapshot = (tmp_path / "snapshot.odb").read_bytes()
    for backup in listed:
        target = tmp_path / f"restore-{backup['id']}"
        run("--data-dir", str(target), "--backup-dir", str(backups), "restore", "--backup-id", backup["id"])
        # The streamed checkpoint goes back as is (the server sent its index description with it).
        base_file = json.loads((target / "data" / "MANIFEST").read_text())["base_file"]
        assert (target / "data" / base_file).read_bytes() == snapshot
        data, lsn = read_state(resolve(target))
        assert lsn == backup["end_lsn"]
        assert data == writer.state_at(lsn)
    # Point in time inside the online chain.
    middle = (listed[-1]["end_lsn"] + listed[0]["end_lsn"]) // 2
    target = tmp_path / "pitr"
    run("--data-dir", str(target), "--backup-dir", str(backups), "restore", "--backup-id", "latest",
        "--to-lsn", str(middle))
    assert read_state(resolve(target)) == (writer.state_at(middle), middle)
    # The server recorded what backups archived.
    with httpx.Client(base_url=server.url, verify=context, auth=(ADMIN, ADMIN_PW)) as client:
        info = client.get("/admin/backup/info").json()
        assert info["archived_lsn"] == listed[0]["end_lsn"] and info["database"] == "test"


def test_online_errors_say_what_to_fix(tls_server, tmp_path):
    server, ca_file, context = tls_server
    backups = str(tmp_path / "backups")
    args = ["--backup-dir", backups, "full-backup", "--database", "production"]
    proc = tool("--source", server.url, "--ca-file", str(ca_file), *args,
                env={"OMENDB_USER": ADMIN, "OMENDB_PASSWORD": "wrong"}, check=7)
    assert "refused the credentials" in proc.stderr
    proc = tool("--source", server.url, "--ca-file", str(ca_file), *args,
                env={"OMENDB_USER": READER, "OMENDB_PASSWORD": READER_PW}, check=7)
    assert "admin_users" in proc.stderr
    proc = tool("--source", server.url, *args, env={"OMENDB_USER": ADMIN, "OMENDB_PASSWORD": ADMIN_PW},
                check=7)
    assert "--ca-file" in proc.stderr
    proc = tool("--source", server.url, "--ca-file", str(ca_file), *args,
                env={"OMENDB_CREDENTIALS_FILE": str(tmp_path / "missing")}, check=None)
    assert proc.returncode != 0 and f"cannot read OMENDB_CREDENTIALS_FILE {tmp_path / 'missing'}" in proc.stderr
    proc = tool("--source", "https://127.0.0.1:1", "--ca-file", str(ca_file), *args,
                env={"OMENDB_USER": ADMIN, "OMENDB_PASSWORD": ADMIN_PW}, check=7)
    assert "cannot reach" in proc.stderr
    assert json.loads(run("--backup-dir", backups, "list", "--output", "json").stdout) == []


def test_wal_stream_endpoint(tls_server):
    server, _, context = tls_server
    with httpx.Client(base_url=server.url, verify=context, auth=(ADMIN, ADMIN_PW), timeout=30) as client:
        lsns = [client.post("/v1/records", json={"records": [{"key": i, "value": 1.0}]}).json()["lsn"]
                for i in range(5)]
        r = client.get("/admin/wal", params={"after_lsn": lsns[1]})
        assert r.status_code == 200 and int(r.headers["x-omendb-last-lsn"]) == lsns[-1]
        from omendb.backup.payload import decode_frames

        assert [f.lsn for f in decode_frames(r.content, "stream")] == lsns[2:]
        r = client.get("/admin/wal", params={"after_lsn": lsns[0], "limit": 2})
        assert [f.lsn for f in decode_frames(r.content, "stream")] == lsns[1:3]
        assert client.get("/admin/wal", params={"after_lsn": lsns[-1] + 10}).status_code == 409
        for _ in range(6):  # ~2 MB: the WAL rotates into several 1 MB segments
            client.post("/v1/records", json={"records": [{"key": k, "value": 0.5} for k in range(20_000)]}
                        ).raise_for_status()
        client.post("/admin/checkpoint").raise_for_status()  # no ARCHIVED yet: covered segments are released
        r = client.get("/admin/wal", params={"after_lsn": 0})
        assert r.status_code == 410 and r.json()["error"]["code"] == "wal_gone"
        assert client.get("/admin/wal", params={"after_lsn": 0}, auth=(READER, READER_PW)).status_code == 403
        assert client.get("/admin/backup/snapshot", auth=None).status_code == 401
