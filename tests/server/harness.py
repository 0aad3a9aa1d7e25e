"""Running a real ``omendb serve`` process on loopback for tests: its ports (tests.ports), a config file
written from a dict, log capture, readiness waiting and signal-driven shutdown."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import bcrypt
import httpx
from passlib.hash import apr_md5_crypt

from omendb.cli import render_toml
from omendb.config import Config
from tests.ports import HOST, free_ports
from tests.server import zygote


def wait_answering(url: str, proc: Any, log_path: Path, timeout: float = 60, verify: Any = True) -> None:
    """Poll `url` until it answers 200. Fails with the server's log when `proc` (a Popen or a
    zygote.Forked) exits first, or after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last = ""
    # One client for all the polls: a new one costs ~30 ms of CPU (it loads the CA bundle), and the tests
    # wait for hundreds of servers.
    with httpx.Client(timeout=2, verify=verify) as http:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"server exited with {proc.returncode}:\n{read_log(log_path)}")
            try:
                r = http.get(url)
                if r.status_code == 200:
                    return
                last = r.text
            except httpx.HTTPError as exc:
                last = repr(exc)
            time.sleep(0.1)
    raise AssertionError(f"{url} did not answer 200 within {timeout}s ({last}):\n{read_log(log_path)}")


def read_log(path: Path) -> str:
    """A server's log so far ("" before it wrote any)."""
    return path.read_text(errors="replace") if path.exists() else ""


def htpasswd_bcrypt(user: str, password: str) -> str:
    # `htpasswd -B` writes the $2y$ prefix; the hash itself is bcrypt's.
    return f"{user}:$2y${bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=5)).decode()[4:]}"


def htpasswd_apr1(user: str, password: str) -> str:
    return f"{user}:{apr_md5_crypt.hash(password)}"


class Server:
    """One ``omendb serve`` subprocess. ``sections`` override the defaults of a test configuration."""

    def __init__(self, workdir: Path, sections: dict[str, dict[str, Any]] | None = None,
                 env: dict[str, str] | None = None, args: list[str] | None = None) -> None:
        self.workdir = workdir
        self.args = list(args or [])  # extra `omendb serve` arguments
        workdir.mkdir(parents=True, exist_ok=True)
        self.port, self.metrics_port = free_ports(2)
        raw: dict[str, dict[str, Any]] = {
            "database": {"name": "test", "data_dir": str(workdir / "data"), "max_memory_mb": 512},
            "wal": {"dir": str(workdir / "wal")},
            "http": {"host": HOST, "port": self.port, "shutdown_grace_seconds": 10},
            "security": {"auth_enabled": False},
            "monitoring": {"prometheus_port": self.metrics_port, "health_check_interval_ms": 200},
            "performance": {"worker_threads": 4},
            "limits": {"memory_limit_mb": 512},
        }
        for name, values in (sections or {}).items():
            raw.setdefault(name, {}).update(values)
        self.config = Config.from_dict(raw)
        self.config_path = workdir / "omendb.toml"
        self.config_path.write_text(render_toml(self.config))
        self.log_path = workdir / "server.log"
        self.env = {**os.environ, **(env or {})}
        for name in ("OMENDB_DATA_DIR", "OMENDB_HTTP_PORT", "OMENDB_PROMETHEUS_PORT", "OMENDB_AUTH_DISABLED",
                     "OMENDB_LOG_LEVEL", "RUST_LOG"):
            if env is None or name not in env:
                self.env.pop(name, None)
        self.proc: subprocess.Popen[bytes] | zygote.Forked | None = None

    @property
    def tls(self) -> bool:
        return self.config.security.tls_enabled

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{HOST}:{self.port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{HOST}:{self.metrics_port}/metrics"

    def start(self, wait_ready: bool = True, verify: Any = True) -> Server:
        args = ["serve", "--config", str(self.config_path), *self.args]
        if zygote.enabled():  # make test-fast: a fork of an interpreter that has imported the server
            self.proc = zygote.Forked(args, self.env, self.workdir, self.log_path)
        else:
            log = self.log_path.open("ab")
            self.proc = subprocess.Popen([sys.executable, "-m", "omendb.cli", *args], stdout=log,
                                         stderr=subprocess.STDOUT, env=self.env, cwd=self.workdir)
            log.close()
        if wait_ready:
            self.wait_ready(verify=verify)
        return self

    def wait_ready(self, timeout: float = 60, verify: Any = True) -> None:
        assert self.proc is not None
        wait_answering(f"{self.url}/ready", self.proc, self.log_path, timeout, verify)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"server did not stop within {timeout}s after signal {sig}:\n"
                                 f"{self.log_text()}") from None

    def log_text(self) -> str:
        return read_log(self.log_path)

    def log_records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log_text().splitlines() if line.strip()]

    def wait_for_log(self, predicate: Any, timeout: float = 10) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for record in self.log_records():
                if predicate(record):
                    return record
            time.sleep(0.05)
        raise AssertionError(f"no matching log line within {timeout}s:\n{self.log_text()}")

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.stop(signal.SIGKILL, timeout=10)
