"""SIGKILL a writer at random moments, reopen, and check that every acknowledged write survived and no batch
is half-applied."""

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from omendb import Config, Database

WRITER = str(Path(__file__).with_name("crash_writer.py"))

KILLS = 24


def _run_and_kill(data: Path, wal: Path, first: int, rng: random.Random) -> list[str]:
    proc = subprocess.Popen([sys.executable, WRITER, str(data), str(wal), str(first)], stdout=subprocess.PIPE,
                            text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)
    reader.start()
    deadline = time.monotonic() + 60
    while "ready\n" not in lines and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.01)
    assert "ready\n" in lines, f"writer did not start (exit {proc.poll()})"
    time.sleep(rng.uniform(0.0, 0.6))
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    reader.join()
    return [line.strip() for line in lines if line != "ready\n"]


def test_sigkill_never_loses_acknowledged_writes_or_half_applies_a_batch(tmp_path):
    data, wal = tmp_path / "data", tmp_path / "wal"
    config = Config().replace("database", data_dir=str(data)).replace("wal", dir=str(wal))
    rng = random.Random(20261127)
    put_acked: set[int] = set()
    deleted_acked: set[int] = set()
    first = 0
    for _ in range(KILLS):
        for line in _run_and_kill(data, wal, first, rng):
            op, batch = line.split()
            (put_acked if op == "put" else deleted_acked).add(int(batch))
        with Database.open(config) as db:
            keys, values = db.range(0, None)
        by_batch: dict[int, set[float]] = {}
        counts: dict[int, int] = {}
        for k, v in zip(keys.tolist(), values.tolist(), strict=True):
            b = k // 2000
            by_batch.setdefault(b, set()).add(v)
            counts[b] = counts.get(b, 0) + 1
        for b, vals in by_batch.items():
            assert vals == {float(b)}, f"batch {b} holds foreign values {vals}"
            assert counts[b] == (1, 50, 999, 1500)[b % 4], f"batch {b} is half-applied ({counts[b]} keys)"
        for b in put_acked - deleted_acked:
            # Batch b+3 may delete b; if that delete was in flight at the kill, b may legitimately be gone.
            if (b + 3) % 7 != 0:
                assert b in by_batch, f"acknowledged batch {b} was lost"
        for b in deleted_acked:
            assert b not in by_batch, f"acknowledged delete of batch {b} was lost"
        first = max([*by_batch, *put_acked, *(b + 3 for b in deleted_acked), first]) + 1
    assert len(put_acked) > KILLS, "the writer acknowledged too few batches for the test to mean anything"
    assert np.unique(keys // 2000).size > 10
