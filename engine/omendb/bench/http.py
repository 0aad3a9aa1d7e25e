"""``make bench-http``: the HTTP server under wrk on loopback, against a baseline in the same run.

Measured (each for ``--seconds``, after a short warm-up):

1. single-key ``GET /v1/records/{key}`` (random existing keys) requests/s, as a ratio to a bare ASGI app
   that returns the same JSON served by uvicorn with the same settings (uvloop, httptools, one process,
   no access log) — the cost of FastAPI, validation, the request guard, logging, metrics and the engine;
2. the same GET with HTTP Basic authentication on (the verified-password cache path), also as a ratio to
   the unauthenticated GET (issue 19's target: at least 0.9);
3. batch ``POST /v1/records/lookup`` of 1,000 random keys per request: keys/s;
4. durable batch ``POST /v1/records`` of 10,000 records per request (fsync on every batch): records/s;

with wrk's p50/p99 latencies for each. Results go to docs/benchmarks.md under "## HTTP server".
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from omendb.cli import render_toml
from omendb.config import Config

HOST = "127.0.0.1"
REPO = Path(__file__).resolve().parents[3]
RECORDS = 200_000
BODY = b'{"key":12345,"value":6172.5}'


async def bare_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The baseline: the smallest ASGI app that answers a GET with a record-sized JSON body."""
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]})
    await send({"type": "http.response.body", "body": BODY})


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer 200 within {timeout}s")


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if not m:
        raise ValueError(f"unexpected wrk latency {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk(url: str, script: Path, seconds: int, connections: int, threads: int = 1,
        pid: int | None = None) -> dict[str, float]:
    cpu_before = cpu_seconds(pid) if pid else 0.0
    out = subprocess.run(["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s", "--latency",
                          "-s", str(script), url], capture_output=True, text=True, check=True).stdout
    print(f"wrk {url} {script.name} -c {connections}", file=sys.stderr)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"\s50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*", out)
    if non2xx or errors:
        raise RuntimeError(f"wrk saw failures against {url}:\n{out}")
    result = {"rps": rps, "p50_ms": p50, "p99_ms": p99}
    if pid:
        requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
        result["cpu_us_per_request"] = (cpu_seconds(pid) - cpu_before) / requests * 1e6
    print(f"  {result}", file=sys.stderr)
    return result


def lua_get(records: int, auth: str | None = None) -> str:
    header = f'wrk.headers["Authorization"] = "{auth}"\n' if auth else ""
    return header + f"""math.randomseed(42)
request = function()
  return wrk.format("GET", "/v1/records/" .. math.random(0, {records - 1}) * 2)
end
"""


def lua_post(path: str, bodies: list[str]) -> str:
    quoted = ",\n".join(f"[[{b}]]" for b in bodies)
    return f"""local bodies = {{
{quoted}
}}
local n = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  n = n % #bodies + 1
  return wrk.format("POST", "{path}", nil, bodies[n])
end
"""


def start(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    with log.open("wb") as fh:
        return subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def server_config(workdir: Path, port: int, metrics_port: int, auth_file: Path | None) -> Path:
    config = Config.from_dict({
        "database": {"name": "bench", "data_dir": str(workdir / "data"), "max_memory_mb": 2048},
        "wal": {"dir": str(workdir / "wal"), "sync_on_write": True},
        "index": {"retrain_threshold": 1_000_000},
        "http": {"host": HOST, "port": port},
        "security": {"auth_enabled": auth_file is not None, "htpasswd_file": str(auth_file or ""),
                     "admin_users": ["bench"]},
        "monitoring": {"prometheus_port": metrics_port, "log_format": "json", "log_level": "info"},
        "performance": {"worker_threads": 4},
        "limits": {"memory_limit_mb": 2048, "max_insert_batch_size": 10_000},
    })
    path = workdir / "omendb.toml"
    path.write_text(render_toml(config))
    return path


def load(base: str, auth: tuple[str, str] | None) -> None:
    with httpx.Client(base_url=base, auth=auth, timeout=120) as client:
        for start_key in range(0, RECORDS, 10_000):
            batch = [{"key": 2 * k, "value": k / 2} for k in range(start_key, start_key + 10_000)]
            client.post("/v1/records", json={"records": batch}).raise_for_status()
        client.post("/admin/retrain-index").raise_for_status()


def interleaved(bare_url: str, server_url: str, bare_script: Path, server_script: Path, seconds: int,
                connections: int, rounds: int, bare_pid: int,
                server_pid: int) -> tuple[dict[str, float], dict[str, float], float]:
    """Alternate baseline and server runs and take medians: other load on the machine hits both alike."""
    wrk(bare_url, bare_script, 2, connections)  # warm-up
    wrk(server_url, server_script, 2, connections)
    bare_runs, server_runs = [], []
    for _ in range(rounds):
        bare_runs.append(wrk(bare_url, bare_script, seconds, connections, pid=bare_pid))
        server_runs.append(wrk(server_url, server_script, seconds, connections, pid=server_pid))
    ratio = statistics.median(s["rps"] / b["rps"] for s, b in zip(server_runs, bare_runs, strict=True))

    def median(runs: list[dict[str, float]]) -> dict[str, float]:
        return {k: statistics.median(r[k] for r in runs) for k in runs[0]}

    return median(bare_runs), median(server_runs), ratio


def run(seconds: int, connections: int, rounds: int) -> dict[str, Any]:
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is required (apt-get install -y wrk)")
    results: dict[str, Any] = {"load_average_before": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="omendb-bench-http-") as tmp:
        work = Path(tmp)
        rng = random.Random(7)
        get_script = work / "get.lua"
        get_script.write_text(lua_get(RECORDS))
        bare_port = free_port()
        bare_url = f"http://{HOST}:{bare_port}"
        # Baseline: the bare ASGI app under the same uvicorn settings, up for the whole run.
        bare = start([sys.executable, "-m", "uvicorn", "omendb.bench.http:bare_app", "--host", HOST, "--port",
                      str(bare_port), "--loop", "uvloop", "--http", "httptools", "--no-access-log", "--ws", "none",
                      "--lifespan", "off", "--log-level", "warning", "--no-server-header"], work / "bare.log")
        try:
            wait_http(f"{bare_url}/")
            import base64

            import bcrypt

            users = work / "users.htpasswd"
            users.write_text("bench:" + bcrypt.hashpw(b"bench-pw", bcrypt.gensalt(rounds=10)).decode() + "\n")
            for label, auth_file in (("server", None), ("server_auth", users)):
                port, metrics_port = free_port(), free_port()
                shutil.rmtree(work / "data", ignore_errors=True)
                shutil.rmtree(work / "wal", ignore_errors=True)
                cfg = server_config(work, port, metrics_port, auth_file)
                proc = start([sys.executable, "-m", "omendb.cli", "serve", "--config", str(cfg)],
                             work / f"{label}.log")
                base = f"http://{HOST}:{port}"
                auth = ("bench", "bench-pw") if auth_file else None
                try:
                    wait_http(f"{base}/ready")
                    load(base, auth)
                    header = "Basic " + base64.b64encode(b"bench:bench-pw").decode() if auth else None
                    script = work / f"{label}-get.lua"
                    script.write_text(lua_get(RECORDS, header))
                    bare_get, server_get, ratio = interleaved(bare_url, base, get_script, script, seconds,
                                                              connections, rounds, bare.pid, proc.pid)
                    results[f"{label}_get"] = server_get
                    results[f"{label}_bare_get"] = bare_get
                    results[f"{label}_get_ratio"] = ratio
                    if auth:
                        continue
                    lookups = [json.dumps({"keys": [2 * rng.randrange(RECORDS) for _ in range(1000)]})
                               for _ in range(16)]
                    script = work / "lookup.lua"
                    script.write_text(lua_post("/v1/records/lookup", lookups))
                    results["lookup_1000"] = wrk(base, script, seconds, 8)
                    inserts = [json.dumps({"records": [{"key": 2 * k + 1, "value": float(k)}
                                                       for k in range(n * 10_000, (n + 1) * 10_000)]})
                               for n in range(4)]
                    script = work / "insert.lua"
                    script.write_text(lua_post("/v1/records", inserts))
                    results["insert_10000"] = wrk(base, script, seconds, 4)
                finally:
                    stop(proc)
        finally:
            stop(bare)
    results["load_average"] = os.getloadavg()
    results["bare_get"] = results["server_bare_get"]
    results["get_ratio"] = results["server_get_ratio"]
    results["get_auth_ratio"] = results["server_auth_get_ratio"]
    # Each GET ratio is against the baseline run next to it, so their quotient cancels the machine's load.
    results["auth_vs_plain_get"] = results["get_auth_ratio"] / results["get_ratio"]
    results["lookup_keys_per_s"] = results["lookup_1000"]["rps"] * 1000
    results["insert_records_per_s"] = results["insert_10000"]["rps"] * 10_000
    return results


def render(results: dict[str, Any], seconds: int, connections: int, rounds: int) -> str:
    def row(name: str, key: str, throughput: str) -> str:
        r = results[key]
        return f"| {name} | {throughput} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} |"

    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    bare_cpu = results["bare_get"]["cpu_us_per_request"]
    cpu = {k: results[k]["cpu_us_per_request"] for k in ("server_get", "server_auth_get")}
    return "\n".join([
        "## HTTP server",
        "",
        f"`make bench-http` ({time.strftime('%Y-%m-%d', time.gmtime())}, {machine}; wrk on loopback, "
        f"{seconds} s per run, {connections} connections for single GETs; the load generator shares the "
        "machine). The server runs `omendb serve` as configured by the benchmark (one uvicorn process, "
        "4 worker threads, JSON access log on, `sync_on_write = true`) over 200,000 records. GET ratios are "
        f"the median of {rounds} alternating baseline/server runs; throughputs and latencies are medians "
        "too (single runs for the batch workloads). The machine is shared: load average (`uptime`, 1 minute) "
        f"{results['load_average_before'][0]:.1f} at the start and {results['load_average'][0]:.1f} at the end "
        "of the run, so wall-clock figures move from run to run; "
        "the CPU time each process spends per request (from /proc) is the steadier comparison.",
        "",
        "| workload | throughput | p50 ms | p99 ms |",
        "|---|---|---|---|",
        row("bare ASGI app, same uvicorn settings (baseline)", "bare_get",
            f"{results['bare_get']['rps']:,.0f} req/s"),
        row("single-key GET", "server_get", f"{results['server_get']['rps']:,.0f} req/s "
                                            f"(**{results['get_ratio']:.2f}x** baseline; target ≥ 0.75)"),
        row("single-key GET, HTTP Basic auth", "server_auth_get",
            f"{results['server_auth_get']['rps']:,.0f} req/s ({results['get_auth_ratio']:.2f}x baseline, "
            f"**{results['auth_vs_plain_get']:.2f}x** the unauthenticated GET; target ≥ 0.9)"),
        "",
        "| CPU per single-key GET | µs/request | baseline ÷ this |",
        "|---|---|---|",
        f"| bare ASGI app | {bare_cpu:.0f} | 1.00 |",
        f"| `omendb serve` | {cpu['server_get']:.0f} | {bare_cpu / cpu['server_get']:.2f} |",
        f"| `omendb serve`, HTTP Basic auth | {cpu['server_auth_get']:.0f} | {bare_cpu / cpu['server_auth_get']:.2f} |",
        "",
        f"By CPU time per request, the authenticated GET runs at {cpu['server_get'] / cpu['server_auth_get']:.2f}x the "
        "unauthenticated one (unauthenticated µs ÷ authenticated µs; target ≥ 0.9).",
        "",
        "What a single-key GET goes through: uvicorn's HTTP parsing (the baseline's too), then, when nothing "
        "is pending on the connection, an answer written by the connection itself as soon as the head is "
        "parsed (fastpath.py: no ASGI task or cycle, which the baseline pays): the request id, the "
        "concurrency limit, the verified-credentials cache when authentication is on, the lookup, the "
        "metrics as lock-free tallies folded in at scrape time (tallies.py), the JSON access line, and the "
        "connection's idle timer (timeouts.py). Requests it does not take (pipelined behind another, "
        "X-Forwarded-*, anything unusual) go through the request guard (middleware.py), and everything "
        "but single-key reads through FastAPI.",
        "",
        "| workload | throughput | p50 ms | p99 ms |",
        "|---|---|---|---|",
        row("batch GET, 1,000 keys/request", "lookup_1000", f"{results['lookup_keys_per_s']:,.0f} keys/s"),
        row("durable batch insert, 10,000 records/request", "insert_10000",
            f"{results['insert_records_per_s']:,.0f} records/s (target ≥ 300,000)"),
        "",
    ])


def write_section(path: Path, section: str) -> None:
    """Replace (or append) the "## HTTP server" section, leaving the rest of the file to its owners."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    pattern = re.compile(r"^## HTTP server\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _m: section + "\n", text)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text.rstrip("\n") + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3, help="alternating baseline/server runs per ratio")
    parser.add_argument("--output", type=Path, default=REPO / "docs" / "benchmarks.md")
    args = parser.parse_args()
    results = run(args.seconds, args.connections, args.rounds)
    print(json.dumps(results, indent=2))
    section = render(results, args.seconds, args.connections, args.rounds)
    print(section)
    write_section(args.output, section)


if __name__ == "__main__":
    main()
