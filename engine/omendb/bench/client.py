"""Client overhead: ``omendb.client.Client`` against raw httpx requests doing the same work, in one run
against one local ``omendb serve`` (loopback, no TLS, no auth, WAL without fsync per write so the
figures show the HTTP and client cost rather than the disk's).

    python -m omendb.bench.client [--quick]

Each operation is timed in turn with the client and with two raw-httpx baselines (the code an
application would otherwise write: build the JSON from numpy arrays, post it, decode the answer into
arrays; once with httpx's own JSON handling, once with orjson as the client uses), and the ratios of
the medians are reported: 1.00 means the client adds nothing.
"""

from __future__ import annotations

import argparse
import json
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson

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


class RawAdapter:
    """A Raw baseline under the client's method names, so one scenario times both."""

    def __init__(self, raw: Raw) -> None:
        self.raw = raw

    def get(self, key: int) -> float | None:
        return self.raw.get(key)

    def put_many(self, keys: np.ndarray, values: np.ndarray) -> int:
        return self.raw.put(keys, values)

    def get_many(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.raw.get_many(keys)


class Raw:
    """What an application would write without the client, with httpx's own JSON handling (the standard
    library's json) or, as a second baseline, with orjson as the client uses."""

    def __init__(self, http: httpx.Client, fast_json: bool) -> None:
        self.http = http
        self.dumps: Callable[[Any], bytes] = orjson.dumps if fast_json else (lambda o: json.dumps(o).encode())
        self.loads: Callable[[bytes], Any] = orjson.loads if fast_json else json.loads

    def _post(self, path: str, body: Any) -> Any:
        r = self.http.post(path, content=self.dumps(body), headers={"content-type": "application/json"})
        r.raise_for_status()
        return self.loads(r.content)

    def put(self, keys: np.ndarray, values: np.ndarray) -> int:
        records = [{"key": k, "value": v} for k, v in zip(keys.tolist(), values.tolist(), strict=True)]
        return int(self._post("/v1/records", {"records": records})["lsn"])

    def get(self, key: int) -> float | None:
        r = self.http.get(f"/v1/records/{key}")
        if r.status_code == 404:
            return None
        r.raise_for_status()
        return float(self.loads(r.content)["value"])

    def get_many(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        got = [rec["value"] for rec in self._post("/v1/records/lookup", {"keys": keys.tolist()})["records"]]
        found = np.array([v is not None for v in got], dtype=bool)
        return np.array([0.0 if v is None else v for v in got], dtype=np.float64), found

    def range(self, start: int, end: int, page: int) -> tuple[np.ndarray, np.ndarray]:
        keys: list[int] = []
        values: list[float] = []
        params: dict[str, Any] = {"start": start, "end": end, "limit": page}
        while True:
            r = self.http.get("/v1/records", params=params)
            r.raise_for_status()
            data = self.loads(r.content)
            keys += [rec["key"] for rec in data["records"]]
            values += [rec["value"] for rec in data["records"]]
            if not data["next_cursor"]:
                return np.array(keys, dtype=np.int64), np.array(values, dtype=np.float64)
            params = {"end": end, "limit": page, "cursor": data["next_cursor"]}


def _time(fn: Callable[[], Any]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def compare(name: str, per: str, units: int, contenders: dict[str, Callable[[], Any]],
            rounds: int) -> dict[str, Any]:
    """Median seconds per unit of each contender, timed in turn each round so that drift on a shared
    machine hits all alike."""
    for fn in contenders.values():
        fn()  # warm up connections and code paths
    times: dict[str, list[float]] = {label: [] for label in contenders}
    for _ in range(rounds):
        for label, fn in contenders.items():
            times[label].append(_time(fn))
    medians = {label: statistics.median(t) / units * 1e6 for label, t in times.items()}
    return {"operation": name, "per": per, **medians}


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
                raw, fast = Raw(http, fast_json=False), Raw(http, fast_json=True)
                single = probe[: calls // 4]
                ops: list[tuple[str, str, int, Callable[[Any], Any]]] = [
                    ("get (one record)", "call", calls, lambda c: [c.get(int(k)) for k in probe]),
                    ("put_many (1 record)", "call", len(single),
                     lambda c: [c.put_many(single[i:i + 1], np.ones(1)) for i in range(len(single))]),
                    (f"put_many ({batch} records)", "record", batch, lambda c: c.put_many(wkeys, wvalues)),
                    (f"get_many ({batch} keys)", "record", batch, lambda c: c.get_many(lookup)),
                ]
                results = [compare(name, per, units, {"client": partial(fn, db),
                                                      "raw": partial(fn, RawAdapter(raw)),
                                                      "raw_orjson": partial(fn, RawAdapter(fast))}, rounds)
                           for name, per, units, fn in ops]
                end = int(keys[-1]) + 1
                results.append(compare(f"range ({scan} records, pages of 10000)", "record", scan, {
                    "client": lambda: db.range(0, end), "raw": lambda: raw.range(0, end, 10_000),
                    "raw_orjson": lambda: fast.range(0, end, 10_000)}, rounds))
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
    print("| operation | per | client µs | raw httpx µs | raw httpx + orjson µs | ratio to raw | "
          "ratio to raw + orjson |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['operation']} | {r['per']} | {r['client']:.1f} | {r['raw']:.1f} | {r['raw_orjson']:.1f} "
              f"| {r['client'] / r['raw']:.2f} | {r['client'] / r['raw_orjson']:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
