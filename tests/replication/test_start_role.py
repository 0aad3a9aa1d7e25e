"""`omendb serve --primary-pod-file`: the role a server starts with comes from a file naming the primary
(the operator's ConfigMap key), so moving the primary never changes the pod template."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from omendb.cli import main
from omendb.config import Config
from omendb.errors import ConfigError
from omendb.start_role import read_primary_pod, resolve
from tests.replication.cluster import ADMIN, REPLICATOR, api, caught_up, info, write_users
from tests.server.harness import Server

TEMPLATE = "https://{pod}.db-headless.shop.svc:3000"


def test_the_named_pod_is_the_primary_and_the_others_follow_it():
    base = Config.from_dict({"replication": {"synchronous_replicas": 1, "credentials_file": "/etc/c"}})
    primary = resolve(base, "db-1", "db-1", TEMPLATE)
    assert primary.replication.role == "primary" and primary.replication.primary_url == ""
    assert primary.replication.synchronous_replicas == 1
    replica = resolve(base, "db-1", "db-0", TEMPLATE)
    assert replica.replication.role == "replica"
    assert replica.replication.primary_url == "https://db-1.db-headless.shop.svc:3000"
    assert replica.replication.replica_id == "db-0"
    assert replica.replication.credentials_file == "/etc/c"  # shared keys are kept
    # An explicit replica_id wins over the pod name.
    named = resolve(Config.from_dict({"replication": {"replica_id": "mine"}}), "db-1", "db-0", TEMPLATE)
    assert named.replication.replica_id == "mine"
    # A replica configured in the file is turned back into a primary when the file names it.
    as_replica = Config.from_dict({"replication": {"role": "replica", "primary_url": "http://x:1"}})
    assert resolve(as_replica, "db-0", "db-0", TEMPLATE).replication.role == "primary"


def test_bad_files_and_templates_are_refused_with_the_fix(tmp_path: Path):
    with pytest.raises(ConfigError, match="must contain \\{pod\\}"):
        resolve(Config(), "db-1", "db-0", "https://db-1:3000")
    with pytest.raises(ConfigError, match="cannot read it"):
        read_primary_pod(tmp_path / "missing")
    for text in ("", "Db_0", "db-0\ndb-1", "https://db-0"):
        path = tmp_path / "primary-pod"
        path.write_text(text)
        with pytest.raises(ConfigError, match="must hold one pod name"):
            read_primary_pod(path)
    path.write_text("db-0\n")
    assert read_primary_pod(path) == "db-0"


def test_cli_refuses_template_without_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    config = tmp_path / "omendb.toml"
    config.write_text("[database]\nname = \"x\"\n")
    assert main(["serve", "--config", str(config), "--primary-url-template", TEMPLATE]) == 2
    assert "only apply with --primary-pod-file" in capsys.readouterr().err


def _node(root: Path, name: str, primary_file: Path, users: Path, credentials: Path,
          primary_port: int | None) -> Server:
    # `localhost` is a valid pod name that resolves here, so the template reaches the primary on loopback.
    template = f"http://{{pod}}:{primary_port or 1}"
    sections = {"security": {"auth_enabled": True, "htpasswd_file": str(users),
                             "admin_users": [ADMIN[0], REPLICATOR[0]]},
                "replication": {"poll_wait_ms": 300, "credentials_file": str(credentials)}}
    return Server(root / name, sections, args=["--primary-pod-file", str(primary_file),
                                               "--primary-url-template", template, "--pod-name", name])


def test_servers_start_in_the_role_the_file_gives_them(tmp_path: Path):
    users, credentials = write_users(tmp_path / "auth")
    primary_file = tmp_path / "primary-pod"
    primary_file.write_text("localhost\n")
    primary = _node(tmp_path, "localhost", primary_file, users, credentials, None).start()
    replica = _node(tmp_path, "db-1", primary_file, users, credentials, primary.port).start()
    try:
        with api(primary) as c:
            c.post("/v1/records", json={"records": [{"key": k, "value": k / 2} for k in range(100)]}
                   ).raise_for_status()
        assert info(primary)["role"] == "primary"
        mine = info(replica)
        assert mine["role"] == "replica" and mine["primary"] == f"http://localhost:{primary.port}"
        caught_up(replica, primary)
        with api(replica) as c:
            stats = c.get("/v1/stats").json()
            assert stats["replication"]["replica_id"] == "db-1"
            r = c.post("/v1/records", json={"records": [{"key": 1, "value": 1.0}]})
            assert r.status_code == 409 and f"localhost:{primary.port}" in r.json()["error"]["message"]
            assert c.get("/v1/records/99").json()["value"] == 49.5
        with api(primary) as c:
            assert "db-1" in c.get("/v1/stats").json()["replicas"]
    finally:
        for server in (replica, primary):
            server.stop(15)
    # A file naming no valid pod stops the server at start with the reason.
    primary_file.write_text("not a pod name\n")
    broken = _node(tmp_path, "db-2", primary_file, users, credentials, primary.port)
    with pytest.raises(AssertionError, match="must hold one pod name"):
        broken.start()
    with pytest.raises(httpx.ConnectError):
        httpx.get(broken.url + "/health", timeout=1)
