"""Authentication against a real server: both htpasswd schemes, sessions and their expiry, the admin role,
password file reloads, and what 401/403 responses leave in the log."""

from __future__ import annotations

import base64
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from omendb.config import Config
from omendb.errors import ConfigError
from omendb.server.lifecycle import build_server
from tests.server.conftest import PASSWORDS
from tests.server.harness import Server, htpasswd_apr1, htpasswd_bcrypt


def test_basic_auth_with_bcrypt_and_apr1_users(auth_server: Server) -> None:
    for user in ("bob", "alice"):  # bob is bcrypt ($2y$), alice apr1 ($apr1$)
        r = httpx.get(f"{auth_server.url}/v1/stats", auth=(user, PASSWORDS[user]))
        assert r.status_code == 200, (user, r.text)
    r = httpx.get(f"{auth_server.url}/v1/stats", auth=("alice", "wrong"))
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith("Basic")
    assert r.json()["error"]["code"] == "unauthorized"
    assert httpx.get(f"{auth_server.url}/v1/stats", auth=("nobody", "x")).status_code == 401
    garbled = {"Authorization": "Basic !!notbase64"}
    assert httpx.get(f"{auth_server.url}/v1/stats", headers=garbled).status_code == 401
    assert httpx.get(f"{auth_server.url}/v1/stats", headers={"Authorization": "Digest x"}).status_code == 401


def test_login_token_works_and_expires(auth_server: Server) -> None:
    r = httpx.post(f"{auth_server.url}/auth/login", json={"username": "bob", "password": PASSWORDS["bob"]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 2
    bearer = {"Authorization": f"Bearer {body['token']}"}
    assert httpx.get(f"{auth_server.url}/v1/stats", headers=bearer).status_code == 200
    # HTTP Basic on the login endpoint works too.
    basic = httpx.post(f"{auth_server.url}/auth/login", auth=("alice", PASSWORDS["alice"]))
    assert basic.status_code == 200
    assert httpx.post(f"{auth_server.url}/auth/login",
                      json={"username": "bob", "password": "nope"}).status_code == 401
    time.sleep(2.2)  # session_timeout_seconds = 2
    r = httpx.get(f"{auth_server.url}/v1/stats", headers=bearer)
    assert r.status_code == 401 and "expired" in r.json()["error"]["message"]
    r = httpx.get(f"{auth_server.url}/v1/stats", headers={"Authorization": "Bearer made-up"})
    assert r.status_code == 401 and "unknown session token" in r.json()["error"]["message"]


def test_auth_failures_are_logged_without_secrets(auth_server: Server) -> None:
    secret = "the-wrong-password-xyz"
    httpx.get(f"{auth_server.url}/v1/records/1", auth=("alice", secret))
    line = auth_server.wait_for_log(lambda r: r.get("msg") == "auth failure" and r.get("user") == "alice"
                                    and r.get("path") == "/v1/records/1")
    assert line["remote"] == "127.0.0.1" and line["status"] == 401 and line["reason"] == "bad_credentials"
    httpx.post(f"{auth_server.url}/admin/checkpoint", auth=("bob", PASSWORDS["bob"]))
    line = auth_server.wait_for_log(lambda r: r.get("msg") == "auth failure" and r.get("status") == 403
                                    and r.get("user") == "bob")
    assert line["path"] == "/admin/checkpoint" and line["reason"] == "not_admin"
    log = auth_server.log_text()
    assert secret not in log and PASSWORDS["bob"] not in log
    assert base64.b64encode(f"alice:{secret}".encode()).decode() not in log
    # The guide's audit greps find them.
    audit = subprocess.run(["bash", "-c", f'grep "auth" {auth_server.log_path} | grep "401\\|403"'],
                           capture_output=True, text=True, check=True).stdout
    assert "bad_credentials" in audit and "not_admin" in audit
    metrics = httpx.get(auth_server.metrics_url).text
    assert 'omendb_auth_failures_total{reason="bad_credentials"}' in metrics


def test_password_file_changes_apply_without_restart(auth_server: Server) -> None:
    users: Path = Path(auth_server.config.security.htpasswd_file)
    original = users.read_text()
    try:
        time.sleep(1.1)  # the file is checked at most once a second
        users.write_text(original + htpasswd_apr1("carol", "carol-pw") + "\n")
        deadline = time.monotonic() + 5
        while httpx.get(f"{auth_server.url}/v1/stats", auth=("carol", "carol-pw")).status_code != 200:
            assert time.monotonic() < deadline, "new user not picked up"
            time.sleep(0.2)
        token = httpx.post(f"{auth_server.url}/auth/login",
                           json={"username": "carol", "password": "carol-pw"}).json()["token"]
        # A broken file is refused and the previous users stay.
        users.write_text(original + "mallory:{SHA}plaintextish\n")
        time.sleep(1.3)
        assert httpx.get(f"{auth_server.url}/v1/stats", auth=("carol", "carol-pw")).status_code == 200
        auth_server.wait_for_log(lambda r: "could not reload the htpasswd file" in r.get("msg", ""))
        # Removing a user also ends their sessions.
        replacement = users.with_suffix(".new")
        replacement.write_text(original.replace(original.splitlines()[0],
                                                htpasswd_bcrypt("admin", PASSWORDS["admin"])))
        replacement.replace(users)  # atomic swap, as a Secret update does
        deadline = time.monotonic() + 5
        while httpx.get(f"{auth_server.url}/v1/stats", auth=("carol", "carol-pw")).status_code != 401:
            assert time.monotonic() < deadline, "removed user still accepted"
            time.sleep(0.2)
        r = httpx.get(f"{auth_server.url}/v1/stats", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 401
        assert httpx.get(f"{auth_server.url}/v1/stats", auth=("admin", PASSWORDS["admin"])).status_code == 200
    finally:
        users.write_text(original)


def test_unsupported_hash_scheme_is_refused_at_startup(tmp_path: Path) -> None:
    users = tmp_path / "users.htpasswd"
    users.write_text("ok:$apr1$abcdefgh$0123456789012345678901\nold:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n")
    server = Server(tmp_path, {"security": {"auth_enabled": True, "htpasswd_file": str(users)}})
    with server:
        server.start(wait_ready=False)
        assert server.proc is not None
        assert server.proc.wait(30) == 2
    log = server.log_text()
    assert "line 2: user 'old' has a SHA-1 password hash" in log and "htpasswd -B" in log


def test_unreadable_password_file_is_refused_at_startup(tmp_path: Path) -> None:
    # A missing file is a first run (test_first_run.py); one that exists but cannot be read is an error.
    config = Config().replace("security", auth_enabled=True, htpasswd_file=str(tmp_path))
    config = config.replace("database", data_dir=str(tmp_path / "data"))
    with pytest.raises(ConfigError, match="htpasswd_file .* cannot be read.*auth_enabled = false"):
        build_server(config)
