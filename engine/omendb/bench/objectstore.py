"""backup_tool to an object store against a local backup directory, in the same run: wall time, MB/s and
peak memory (max RSS) of `full-backup` and `restore`.

    python -m e2e.objectstore up && eval "$(python -m e2e.objectstore env)"
    python -m omendb.bench.objectstore --records 1000000 --url "s3://$OMENDB_TEST_BUCKET/bench"

A database of N records is built (omendb.bench.backup.build_database: checkpointed, with a WAL tail), then
each operation runs as the console script under /usr/bin/time, which reports the child's peak RSS. Prints
a Markdown table; MB/s is the database size (data + WAL) divided by the wall time.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from omendb.bench.backup import TOOL, build_database, dir_size
from omendb.objectstore import ObjectStore


def timed(*args: str) -> tuple[float, int]:
    """(wall seconds, peak RSS in KiB) of one backup_tool run."""
    started = time.perf_counter()
    res = subprocess.run(["/usr/bin/time", "-f", "%M", str(TOOL), "--quiet", *args], capture_output=True,
                         text=True, env=os.environ)
    wall = time.perf_counter() - started
    if res.returncode != 0:
        raise SystemExit(f"backup_tool {' '.join(args)} failed:\n{res.stderr}")
    return wall, int(res.stderr.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--url", required=True, help="s3://bucket/prefix (emptied first)")
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="omendb-bench-s3-", dir=args.workdir))
    try:
        root = work / "omendb"
        count = build_database(root, args.records)
        size_mb = dir_size(root) / 1e6
        store = ObjectStore.from_url(args.url)
        store.delete(o.key for o in store.list())
        rows = []
        for name, backup_dir in (("local directory", str(work / "backups")), ("s3://", args.url)):
            wall, rss = timed("--data-dir", str(root), "--backup-dir", backup_dir, "full-backup",
                              "--database", "bench")
            rows.append((name, "full-backup", wall, rss))
            target = work / f"restored-{len(rows)}"
            wall, rss = timed("--data-dir", str(target), "--backup-dir", backup_dir, "restore", "--backup-id",
                              "latest")
            rows.append((name, "restore", wall, rss))
            shutil.rmtree(target)
        stored = sum(o.size for o in store.list())
        print(f"{count} records, {size_mb:.0f} MB on disk (data + WAL); {stored / 1e6:.0f} MB in the bucket; "
              f"{os.cpu_count()} CPUs, {sys.version.split()[0]}\n")
        print("| backup dir | operation | seconds | MB/s | peak RSS MiB |")
        print("|---|---|---|---|---|")
        for name, op, wall, rss in rows:
            print(f"| {name} | {op} | {wall:.1f} | {size_mb / wall:.0f} | {rss / 1024:.0f} |")
        store.delete(o.key for o in store.list())
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
