"""The operations guide's own commands against ``omendb serve --config configs/development.toml``: the
health-check script, the log analyses and the metrics greps (ports moved with the environment
overrides so parallel test runs do not collide)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.server.harness import HOST, Server, free_port

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

# The guide's performance log analysis, on a log file instead of `kubectl logs`.
DURATIONS = """grep "duration" {log} | awk '{{print $NF}}' | sort -n"""


def test_guide_health_check_against_the_development_config(tmp_path: Path) -> None:
    port, metrics_port = free_port(), free_port()
    env = {**os.environ, "OMENDB_DATA_DIR": str(tmp_path / "data"), "OMENDB_HTTP_PORT": str(port),
           "OMENDB_PROMETHEUS_PORT": str(metrics_port)}
    env.pop("OMENDB_AUTH_DISABLED", None)
    log_path = tmp_path / "server.log"
    with log_path.open("wb") as log:
        command = [sys.executable, "-m", "omendb.cli", "serve", "--config",
                   str(REPO / "configs" / "development.toml")]
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log_path.read_text()
            try:
                if httpx.get(f"http://{HOST}:{port}/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.1)
        script = tmp_path / "health_check.sh"
        script.write_text(HEALTH_CHECK.replace("3000", str(port)).replace("9090", str(metrics_port)))
        result = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "All health checks passed" in result.stdout

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
