"""Client overhead: ``omendb.client.Client`` against raw httpx requests doing the same work, in one run
against one local ``omendb serve`` (loopback, no TLS, no auth, WAL without fsync per write so the
figures show the HTTP and client cost rather than the disk's).

    python -m omendb.bench.client [--quick]

Each operation is timed alternately with the client and with the raw-httpx baseline (the code an
application would otherwise write: build the JSON from numpy arrays, post it, decode the answer into
arrays), and the ratio of medians is reported: 1.00 means the client adds nothing.
"""

from __future__ import annotations

import argparse
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from omendb.cli import render_toml
from omendb.client import Client
from omendb.config import Config

HOST = "127.0.0.1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


class LocalServer:
    def __init__(self, workdir: Path) -> None:
        self.port = _free_port()
        config = Config.from_dict({
            "database": {"name": "bench", "data_dir": str(workdir / "data"), "max_memory_mb": 2048},
            "wal": {"dir": str(workdir / "wal"), "sync_on_write": False},
            "http": {"host": HOST, "port": self.port},
            "security": {"auth_enabled": False},
            "monitoring": {"prometheus_port": _free_port(), "log_level": "warning"},
            "limits": {"memory_limit_mb": 2048},
        })
        self.config_path = workdir / "omendb.toml"
        self.config_path.write_text(render_toml(config))
        self.log = (workdir / "server.log").open("wb")
        command = [sys.executable, "-m", "omendb.cli", "serve", "--config", str(self.config_path)]
        self.proc = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT)
        self.url = f"http://{HOST}:{self.port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"omendb serve exited with {self.proc.returncode}; see {workdir}/server.log")
            try:
                if httpx.get(f"{self.url}/ready", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise SystemExit("omendb serve did not become ready within 120 s")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def _raw_put(http: httpx.Client, keys: np.ndarray, values: np.ndarray) -> int:
    body = {"records": [{"key": k, "value": v} for k, v in zip(keys.tolist(), values.tolist(), strict=True)]}
    r = http.post("/v1/records", json=body)
    r.raise_for_status()
    return int(r.json()["lsn"])


def _raw_get(http: httpx.Client, key: int) -> float | None:
    r = http.get(f"/v1/records/{key}")
    if r.status_code == 404:
        return None
    r.raise_for_status()
    return float(r.json()["value"])


def _raw_get_many(http: httpx.Client, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r = http.post("/v1/records/lookup", json={"keys": keys.tolist()})
    r.raise_for_status()
    got = [rec["value"] for rec in r.json()["records"]]
    found = np.array([v is not None for v in got], dtype=bool)
    return np.array([0.0 if v is None else v for v in got], dtype=np.float64), found


def _raw_range(http: httpx.Client, start: int, end: int, page: int) -> tuple[np.ndarray, np.ndarray]:
    keys: list[int] = []
    values: list[float] = []
    params: dict[str, Any] = {"start": start, "end": end, "limit": page}
    while True:
        r = http.get("/v1/records", params=params)
        r.raise_for_status()
        data = r.json()
        keys += [rec["key"] for rec in data["records"]]
        values += [rec["value"] for rec in data["records"]]
        if not data["next_cursor"]:
            return np.array(keys, dtype=np.int64), np.array(values, dtype=np.float64)
        params = {"end": end, "limit": page, "cursor": data["next_cursor"]}


def _time(fn: Callable[[], Any]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def compare(name: str, per: str, units: int, client_fn: Callable[[], Any], raw_fn: Callable[[], Any],
            rounds: int) -> dict[str, Any]:
    client_fn(), raw_fn()  # warm up connections and code paths
    client_t, raw_t = [], []
    for _ in range(rounds):  # alternate, so drift on a shared machine hits both sides alike
        client_t.append(_time(client_fn))
        raw_t.append(_time(raw_fn))
    c, r = statistics.median(client_t), statistics.median(raw_t)
    return {"operation": name, "per": per, "client_us": c / units * 1e6, "raw_us": r / units * 1e6,
            "ratio": c / r}


def run(quick: bool) -> list[dict[str, Any]]:
    rounds = 5 if quick else 15
    calls = 200 if quick else 1000
    batch = 5_000 if quick else 20_000
    scan = 20_000 if quick else 100_000
    rng = np.random.default_rng(42)
    with tempfile.TemporaryDirectory(prefix="omendb-bench-client-") as tmp:
        server = LocalServer(Path(tmp))
        try:
            keys = np.arange(0, scan * 2, 2, dtype=np.int64)
            with Client(server.url) as db, httpx.Client(base_url=server.url, timeout=60) as http:
                db.put_many(keys, keys * 0.5)
                probe = rng.choice(keys, size=calls)
                lookup = rng.choice(keys, size=batch)
                wkeys = np.arange(10**9, 10**9 + batch, dtype=np.int64)
                wvalues = rng.random(batch)
                results = [
                    compare("get (one record)", "call", calls,
                            lambda: [db.get(int(k)) for k in probe],
                            lambda: [_raw_get(http, int(k)) for k in probe], rounds),
                    compare("put_many (1 record)", "call", calls // 4,
                            lambda: [db.put_many(probe[i:i + 1], [1.0]) for i in range(calls // 4)],
                            lambda: [_raw_put(http, probe[i:i + 1], np.ones(1)) for i in range(calls // 4)],
                            rounds),
                    compare(f"put_many ({batch} records)", "record", batch,
                            lambda: db.put_many(wkeys, wvalues), lambda: _raw_put(http, wkeys, wvalues),
                            rounds),
                    compare(f"get_many ({batch} keys)", "record", batch,
                            lambda: db.get_many(lookup), lambda: _raw_get_many(http, lookup), rounds),
                    compare(f"range ({scan} records, pages of 10000)", "record", scan,
                            lambda: db.range(0, int(keys[-1]) + 1),
                            lambda: _raw_range(http, 0, int(keys[-1]) + 1, 10_000), rounds),
                ]
        finally:
            server.stop()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer and smaller rounds (a smoke run)")
    args = parser.parse_args(argv)
    results = run(args.quick)
    print(f"# omendb.client vs raw httpx ({platform.machine()}, {platform.python_version()}, "
          f"{'quick' if args.quick else 'full'} run)")
    print("| operation | per | client µs | raw httpx µs | ratio |")
    print("|---|---|---:|---:|---:|")
    for r in results:
        print(f"| {r['operation']} | {r['per']} | {r['client_us']:.1f} | {r['raw_us']:.1f} "
              f"| {r['ratio']:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
