"""Engine benchmark (`make bench-engine`): OmenDB against baselines measured in the same run.

(a) batch point lookups of existing keys among lognormal keys vs numpy.searchsorted on the sorted array
(b) single-key get from Python vs SQLite (file, WAL mode, synchronous=FULL, INTEGER PRIMARY KEY)
(c) durable inserts in batches of 10,000 vs SQLite with one transaction per batch
(d) range scans of 1,000 keys vs SQLite
(e) open and recover (checkpoint + WAL) vs SQLite opening its file and counting

Every figure is reported with its ratio to the baseline (> 1 means OmenDB is faster). Machines here are
noisy, so each timing is the best of a few repetitions.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from omendb import Config, Database, rmi


def best_of(repeats: int, fn: Callable[[], object]) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def lognormal_keys(n: int, seed: int = 42) -> np.ndarray:
    rng = np.random.default_rng(seed)
    keys = np.unique((rng.lognormal(0, 2, int(n * 1.05)) * 1e12).astype(np.int64))
    while len(keys) < n:  # top up the few collisions
        keys = np.unique(np.concatenate([keys, (rng.lognormal(0, 2, n - len(keys) + 100) * 1e12).astype(np.int64)]))
    return rng.permutation(keys)[:n]


def engine_config(root: Path, **index: int) -> Config:
    config = Config().replace("database", data_dir=str(root / "data"), max_memory_mb=16384)
    config = config.replace("limits", memory_limit_mb=16384).replace("wal", dir=str(root / "wal"))
    return config.replace("index", **index) if index else config


def sqlite_open(path: Path) -> sqlite3.Connection:
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=FULL")
    return con


class Report:
    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str, str, str]] = []

    def add(self, name: str, ours: float, base: float, unit: str, higher_is_better: bool, target: str) -> None:
        ratio = ours / base if higher_is_better else base / ours
        self.rows.append((name, f"{ours:,.1f} {unit}", f"{base:,.1f} {unit}", f"{ratio:.2f}x", target))
        print(f"{name}: omendb {ours:,.1f} {unit}, baseline {base:,.1f} {unit}, ratio {ratio:.2f}x ({target})",
              flush=True)

    def markdown(self) -> str:
        lines = ["| benchmark | OmenDB | baseline | ratio (>1 = OmenDB faster) | target |",
                 "|---|---|---|---|---|"]
        lines += [f"| {' | '.join(row)} |" for row in self.rows]
        return "\n".join(lines)


def run(records: int, lookups: int, work: Path) -> Report:
    report = Report()
    keys = lognormal_keys(records)
    values = keys.astype(np.float64) * 0.5
    sorted_keys = np.sort(keys)
    rng = np.random.default_rng(7)
    probe = keys[rng.integers(0, records, lookups)]
    print(f"data: {records:,} lognormal int64 keys; {lookups:,} lookups", flush=True)

    # Load both databases once (bulk, not timed), then checkpoint ours so reads hit the learned base.
    root = work / "omendb"
    db = Database.open(engine_config(root, retrain_threshold=2 * records))
    for i in range(0, records, 1_000_000):
        db.put_many(keys[i:i + 1_000_000], values[i:i + 1_000_000])
    db.checkpoint()
    stats = db.index_stats()
    print(f"index: {stats}", flush=True)
    con = sqlite_open(work / "sqlite.db")
    con.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v REAL)")
    con.execute("BEGIN")
    con.executemany("INSERT INTO t VALUES (?, ?)", zip(sorted_keys.tolist(), (sorted_keys * 0.5).tolist(),
                                                      strict=True))
    con.execute("COMMIT")

    # (a) batch lookups: the learned index alone, and the whole get_many, vs numpy.searchsorted.
    base = db._view.base
    searchsorted = best_of(3, lambda: np.searchsorted(sorted_keys, probe))
    index_only = best_of(3, lambda: rmi.lookup_many(base.index, base.keys, probe))
    get_many = best_of(3, lambda: db.get_many(probe))
    report.add("(a) batch lookup, learned index only", lookups / index_only / 1e6, lookups / searchsorted / 1e6,
               "M keys/s", True, ">= 3x numpy.searchsorted")
    report.add("(a) batch lookup, get_many (values + found)", lookups / get_many / 1e6,
               lookups / searchsorted / 1e6, "M keys/s", True, ">= 3x numpy.searchsorted")

    # (b) single-key get from Python.
    single = probe[:100_000].tolist()
    ours = best_of(3, lambda: [db.get(k) for k in single])
    stmt = "SELECT v FROM t WHERE k = ?"
    theirs = best_of(3, lambda: [con.execute(stmt, (k,)).fetchone() for k in single])
    report.add("(b) single-key get", len(single) / ours / 1e3, len(single) / theirs / 1e3, "k gets/s", True,
               "not slower than SQLite")

    # (d) range scans of 1,000 keys from random starting points.
    starts = sorted_keys[rng.integers(0, records - 2000, 2000)].tolist()
    ours = best_of(3, lambda: [db.range(s, None, 1000) for s in starts])
    stmt = "SELECT k, v FROM t WHERE k >= ? ORDER BY k LIMIT 1000"
    theirs = best_of(3, lambda: [con.execute(stmt, (s,)).fetchall() for s in starts])
    report.add("(d) range scan of 1,000 keys", len(starts) / ours, len(starts) / theirs, "scans/s", True,
               "(no target)")
    db.close()
    con.close()

    # (c) durable inserts, batches of 10,000, into fresh databases.
    batch, batches = 10_000, 100
    new_keys = lognormal_keys(batch * batches, seed=9)
    fresh = work / "inserts"
    fresh_db = Database.open(engine_config(fresh))

    def omendb_inserts() -> None:
        for i in range(batches):
            fresh_db.put_many(new_keys[i * batch:(i + 1) * batch], new_keys[i * batch:(i + 1) * batch] * 0.5)

    ours = best_of(1, omendb_inserts)
    fresh_db.close()
    scon = sqlite_open(work / "inserts.db")
    scon.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v REAL)")

    def sqlite_inserts() -> None:
        for i in range(batches):
            chunk = new_keys[i * batch:(i + 1) * batch]
            scon.execute("BEGIN")
            scon.executemany("INSERT OR REPLACE INTO t VALUES (?, ?)", zip(chunk.tolist(), (chunk * 0.5).tolist(),
                                                                           strict=True))
            scon.execute("COMMIT")

    theirs = best_of(1, sqlite_inserts)
    scon.close()
    report.add("(c) durable inserts, batches of 10,000", batch * batches / ours / 1e3,
               batch * batches / theirs / 1e3, "k records/s", True, ">= 5x SQLite")

    # (e) open + recover: the checkpoint of `records` plus WAL frames of 10% more records (1M at 10M).
    db = Database.open(engine_config(root, retrain_threshold=2 * records))
    wal_records = max(records // 10, batch)
    extra = lognormal_keys(wal_records, seed=11)
    for i in range(0, wal_records, batch):
        db.put_many(extra[i:i + batch], extra[i:i + batch] * 0.5)
    db.close(checkpoint=False)
    os.sync()

    def recover() -> None:
        Database.open(engine_config(root, retrain_threshold=2 * records)).close(checkpoint=False)

    ours = best_of(3, recover)

    def sqlite_count() -> None:
        c = sqlite3.connect(work / "sqlite.db")
        c.execute("SELECT count(*) FROM t").fetchone()
        c.close()

    theirs = best_of(3, sqlite_count)
    report.add(f"(e) open + recover {records:,} records + {wal_records:,} in the WAL", 1 / ours, 1 / theirs,
               "opens/s", True, "(no target)")
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=10_000_000)
    parser.add_argument("--lookups", type=int, default=1_000_000)
    parser.add_argument("--work-dir", default=None, help="scratch directory (default: a temporary one)")
    args = parser.parse_args()
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="omendb-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        report = run(args.records, args.lookups, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}, numpy {np.__version__}, SQLite {sqlite3.sqlite_version}\n")
    print(report.markdown())


if __name__ == "__main__":
    main()
