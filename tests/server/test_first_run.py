"""The guide's `docker run` (authentication on, no htpasswd file mounted) on the image's own omendb.toml:
the server starts and creates the first admin user instead of exiting 2; the password is logged once and
kept in the data directory, the user survives restarts, OMENDB_ADMIN_PASSWORD chooses it, and a mounted
htpasswd file wins over it."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import httpx

from tests.ports import HOST, free_ports
from tests.server.harness import htpasswd_bcrypt, wait_answering

REPO = Path(__file__).resolve().parents[2]


def image_config(tmp_path: Path, htpasswd_file: Path) -> Path:
    """images/engine/omendb.toml (the image's CMD config) with what a test must change: the WAL directory
    and the listen address (tests listen on loopback only), and the htpasswd path the image leaves at its
    default /etc/omendb/users.htpasswd (pointed at a file that does not exist, as in the container)."""
    text = (REPO / "images" / "engine" / "omendb.toml").read_text()
    text = text.replace('dir = "/var/lib/omendb/wal"', f'dir = "{tmp_path / "wal"}"')
    text += f'\n[http]\nhost = "{HOST}"\n\n[security]\nhtpasswd_file = "{htpasswd_file}"\n'
    path = tmp_path / "omendb.toml"
    path.write_text(text)
    return path


class Run:
    """`omendb serve` as the image runs it, with the guide's `-e OMENDB_AUTH_DISABLED=false`."""

    def __init__(self, tmp_path: Path, config: Path, **env: str) -> None:
        self.port, self.metrics_port = free_ports(2)
        self.log_path = tmp_path / f"server-{self.port}.log"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("OMENDB_") and k != "RUST_LOG"}
        self.env.update({"OMENDB_AUTH_DISABLED": "false", "OMENDB_DATA_DIR": str(tmp_path / "data"),
                         "OMENDB_HTTP_PORT": str(self.port), "OMENDB_PROMETHEUS_PORT": str(self.metrics_port),
                         **env})
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "omendb.cli", "serve", "--config", str(config)],
                                         stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=tmp_path)
        self.url = f"http://{HOST}:{self.port}"
        wait_answering(f"{self.url}/ready", self.proc, self.log_path)

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(30) == 0
        return self.log_path.read_text()


def test_guide_docker_run_creates_the_first_admin(tmp_path: Path) -> None:
    absent = tmp_path / "etc" / "users.htpasswd"
    config = image_config(tmp_path, absent)
    first = Run(tmp_path, config)
    try:
        password_file = tmp_path / "data" / "initial-admin-password"
        password = password_file.read_text().strip()
        assert len(password) >= 20
        assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
        assert httpx.get(f"{first.url}/v1/stats", timeout=10).status_code == 401
        assert httpx.get(f"{first.url}/v1/stats", auth=("admin", password), timeout=10).status_code == 200
        assert httpx.post(f"{first.url}/admin/retrain-index", auth=("admin", password), timeout=60).status_code == 200
    finally:
        log = first.stop()
    # Said once, at WARNING, with the password and where it is kept.
    lines = [line for line in log.splitlines() if "first run: " in line]
    assert len(lines) == 1 and '"level":"WARNING"' in lines[0] and password in lines[0], log
    assert "initial-admin-password" in lines[0] and "OMENDB_ADMIN_PASSWORD" in lines[0]
    assert "$2y$" in (tmp_path / "data" / "users.htpasswd").read_text()

    # A restart keeps the user: no new password.
    second = Run(tmp_path, config)
    try:
        assert httpx.get(f"{second.url}/v1/stats", auth=("admin", password), timeout=10).status_code == 200
    finally:
        log = second.stop()
    assert "first run: " not in log and "users file created at first run" in log
    assert password_file.read_text().strip() == password

    # A real htpasswd file mounted at the configured path wins.
    absent.parent.mkdir()
    absent.write_text(htpasswd_bcrypt("alice", "alice-pw") + "\n")
    third = Run(tmp_path, config)
    try:
        assert httpx.get(f"{third.url}/v1/stats", auth=("alice", "alice-pw"), timeout=10).status_code == 200
        assert httpx.get(f"{third.url}/v1/stats", auth=("admin", password), timeout=10).status_code == 401
    finally:
        third.stop()


def test_admin_password_from_the_environment(tmp_path: Path) -> None:
    config = image_config(tmp_path, tmp_path / "absent.htpasswd")
    run = Run(tmp_path, config, OMENDB_ADMIN_PASSWORD="chosen-by-me-42")
    try:
        assert httpx.get(f"{run.url}/v1/stats", auth=("admin", "chosen-by-me-42"), timeout=10).status_code == 200
    finally:
        log = run.stop()
    assert "chosen-by-me-42" not in log  # a password the operator chose is never logged
    assert not (tmp_path / "data" / "initial-admin-password").exists()
