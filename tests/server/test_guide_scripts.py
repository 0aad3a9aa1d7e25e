"""The operations guide's own commands against ``omendb serve --config configs/development.toml``: the
health-check script, the log analyses and the metrics greps (ports moved with the environment
overrides so parallel test runs do not collide)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from tests.ports import HOST, free_ports
from tests.server.harness import Server, htpasswd_bcrypt, wait_answering

REPO = Path(__file__).resolve().parents[2]

# health_check.sh from the guide, verbatim except for the two ports.
HEALTH_CHECK = """#!/bin/bash
# health_check.sh

# Basic connectivity
curl -f http://localhost:3000/health || exit 1

# Detailed status
curl -f http://localhost:3000/ready || exit 1

# Metrics endpoint
curl -f http://localhost:9090/metrics | grep -q "omendb_" || exit 1

echo "✅ All health checks passed"
"""

# The guide's omendb.toml, verbatim (Configuration Management > Core Configuration).
GUIDE_TOML = """[database]
name = "omendb_production"
data_dir = "/var/lib/omendb/data"
max_memory_mb = 8192
expected_size = 100000000

[storage]
enable_compression = true
batch_size = 100000
sync_interval_ms = 5000

[index]
model_type = "recursive"
max_error = 50
retrain_threshold = 1000000

[wal]
enabled = true
sync_on_write = true
max_file_size_mb = 100
rotation_interval_hours = 24

[http]
host = "0.0.0.0"
port = 3000
request_timeout_ms = 30000
max_concurrent_requests = 1000

[security]
auth_enabled = true
session_timeout_seconds = 3600
tls_enabled = true

[monitoring]
prometheus_enabled = true
prometheus_port = 9090
health_check_interval_ms = 10000
log_level = "info"
log_format = "json"

[performance]
worker_threads = 8
io_threads = 4
enable_simd = true
prefetch_size = 2000

[limits]
max_connections = 1000
max_query_duration_ms = 30000
max_insert_batch_size = 50000
memory_limit_mb = 8192
"""

# The guide's certificate command (Security Operations > TLS Certificate Management); its prompts are
# answered with Enter, as a user accepting the defaults would.
GUIDE_OPENSSL = "openssl req -new -x509 -keyout server.key -out server.pem -days 365 -nodes"


def guide_config(tmp_path: Path, **security: str) -> Path:
    """The guide's omendb.toml with the least change a test needs: loopback instead of 0.0.0.0 (tests
    never listen on every interface) and the files the guide leaves at their /etc defaults pointed into
    tmp_path (added to [security]); data_dir and the ports move with the guide's environment variables."""
    text = GUIDE_TOML.replace('host = "0.0.0.0"', f'host = "{HOST}"')
    extra = "".join(f'{key} = "{value}"\n' for key, value in security.items())
    text = text.replace("tls_enabled = true\n", "tls_enabled = true\n" + extra)
    path = tmp_path / "omendb.toml"
    path.write_text(text)
    return path


def guide_env(tmp_path: Path, port: int, metrics_port: int) -> dict[str, str]:
    env = {**os.environ, "OMENDB_DATA_DIR": str(tmp_path / "data"), "OMENDB_HTTP_PORT": str(port),
           "OMENDB_PROMETHEUS_PORT": str(metrics_port)}
    for name in ("OMENDB_AUTH_DISABLED", "OMENDB_LOG_LEVEL", "RUST_LOG"):
        env.pop(name, None)
    return env


def _run_health_check(tmp_path: Path, port: int, metrics_port: int, log_path: Path) -> None:
    """The guide's health_check.sh, its ports replaced by the test server's."""
    script = tmp_path / "health_check.sh"
    script.write_text(HEALTH_CHECK.replace("3000", str(port)).replace("9090", str(metrics_port)))
    result = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr + log_path.read_text()
    assert "All health checks passed" in result.stdout


def test_guide_health_check_against_the_guide_config_with_tls(tmp_path: Path) -> None:
    """The guide's health_check.sh (plain http:// to port 3000) against the guide's own omendb.toml, which
    turns TLS on for that port: the probes are answered, everything else still needs HTTPS."""
    subprocess.run(["bash", "-c", f"yes '' | {GUIDE_OPENSSL}"], cwd=tmp_path, check=True, capture_output=True,
                   timeout=60)
    users = tmp_path / "users.htpasswd"
    users.write_text(htpasswd_bcrypt("admin", "guide-admin-pw") + "\n")
    config = guide_config(tmp_path, tls_cert_file=str(tmp_path / "server.pem"),
                          tls_key_file=str(tmp_path / "server.key"), htpasswd_file=str(users))
    port, metrics_port = free_ports(2)
    log_path = tmp_path / "server.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "omendb.cli", "serve", "--config", str(config)],
                                stdout=log, stderr=subprocess.STDOUT, env=guide_env(tmp_path, port, metrics_port),
                                cwd=tmp_path)
    try:
        # certificates unchecked: the guide's is self-signed
        wait_answering(f"https://{HOST}:{port}/ready", proc, log_path, verify=False)
        _run_health_check(tmp_path, port, metrics_port, log_path)

        # Anything but the probes over plain HTTP is refused with the https:// URL to use, before auth.
        plain = httpx.get(f"http://localhost:{port}/v1/records/1", auth=("admin", "guide-admin-pw"), timeout=10)
        assert plain.status_code == 400, plain.text
        assert plain.json()["error"]["code"] == "https_required"
        assert f"https://localhost:{port}/v1/records/1" in plain.json()["error"]["message"]
        # HTTPS serves the API, with authentication as configured.
        secure = f"https://localhost:{port}"
        assert httpx.get(f"{secure}/v1/stats", verify=False, timeout=10).status_code == 401
        stored = httpx.post(f"{secure}/v1/records", json={"records": [{"key": 1, "value": 1.5}]},
                            auth=("admin", "guide-admin-pw"), verify=False, timeout=30)
        assert stored.status_code == 200, stored.text
        # The certificate is the one the guide's openssl command made.
        assert "Internet Widgits" in subprocess.run(
            ["bash", "-c", f"openssl s_client -connect {HOST}:{port} </dev/null 2>/dev/null | "
                           "openssl x509 -noout -subject"], capture_output=True, text=True, timeout=30).stdout
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log_path.read_text()


# The guide's performance log analysis, on a log file instead of `kubectl logs`.
DURATIONS = """grep "duration" {log} | awk '{{print $NF}}' | sort -n"""


def test_guide_health_check_against_the_development_config(tmp_path: Path) -> None:
    port, metrics_port = free_ports(2)
    env = {**os.environ, "OMENDB_DATA_DIR": str(tmp_path / "data"), "OMENDB_HTTP_PORT": str(port),
           "OMENDB_PROMETHEUS_PORT": str(metrics_port)}
    env.pop("OMENDB_AUTH_DISABLED", None)
    log_path = tmp_path / "server.log"
    with log_path.open("wb") as log:
        command = [sys.executable, "-m", "omendb.cli", "serve", "--config",
                   str(REPO / "configs" / "development.toml")]
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
    try:
        wait_answering(f"http://{HOST}:{port}/ready", proc, log_path)
        _run_health_check(tmp_path, port, metrics_port, log_path)

        # A write, a read, an admin call as in the guide's troubleshooting section (no auth in development).
        base = f"http://localhost:{port}"
        subprocess.run(["curl", "-fsS", "-X", "POST", "-H", "Content-Type: application/json", "-d",
                        '{"records":[{"key":1,"value":1.5}]}', f"{base}/v1/records"], check=True, timeout=30,
                       capture_output=True)
        subprocess.run(["curl", "-fsS", f"{base}/v1/records/1"], check=True, timeout=30, capture_output=True)
        subprocess.run(["curl", "-fsS", "-X", "POST", f"{base}/admin/retrain-index"], check=True, timeout=60,
                       capture_output=True)
        subprocess.run(["curl", "-fsS", f"{base}/admin/index-stats"], check=True, timeout=30,
                       capture_output=True)
        metrics = f"http://localhost:{metrics_port}/metrics"
        memory = subprocess.run(["bash", "-c", f"curl -s {metrics} | grep omendb_memory"],
                                capture_output=True, text=True, timeout=30).stdout
        assert "omendb_memory_usage_bytes" in memory and "omendb_memory_limit_bytes" in memory
        buckets = subprocess.run(["bash", "-c", f"curl -s {metrics} | grep duration_seconds_bucket"],
                                 capture_output=True, text=True, timeout=30).stdout
        assert "omendb_query_duration_seconds_bucket" in buckets

        # The guide's performance log analysis: durations, sorted numerically (text log format here).
        durations = subprocess.run(["bash", "-c", DURATIONS.format(log=log_path)],
                                   capture_output=True, text=True, timeout=30).stdout.split()
        assert len(durations) >= 4
        assert [float(d) for d in durations] == sorted(float(d) for d in durations)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log_path.read_text()
    assert (tmp_path / "data").is_dir() and not (tmp_path / "omendb-dev").exists()


def test_guide_log_analyses_on_json_logs(auth_server: Server) -> None:
    """grep -E "(ERROR|WARN)" and the duration sort work on JSON lines too."""
    httpx.get(f"{auth_server.url}/health")
    httpx.get(f"{auth_server.url}/nowhere")
    durations = subprocess.run(["bash", "-c", DURATIONS.format(log=auth_server.log_path)],
                               capture_output=True, text=True, timeout=30).stdout.split()
    numbers = [float(d.rstrip("}")) for d in durations]
    assert len(numbers) >= 2 and numbers == sorted(numbers)
    # Refused logins are warnings, so the guide's error/warning grep lists them with their counts.
    counted = subprocess.run(["bash", "-c", f'grep -E "(ERROR|WARN)" {auth_server.log_path} | sort | uniq -c | '
                                            "sort -nr"], capture_output=True, text=True, timeout=30)
    assert counted.returncode == 0
    httpx.get(f"{auth_server.url}/v1/stats", auth=("alice", "not-alices-password"))
    auth_server.wait_for_log(lambda r: r.get("level") == "WARNING" and r.get("user") == "alice")
