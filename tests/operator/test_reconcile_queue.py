from __future__ import annotations

import threading
import time

from omendb_operator.controller.workqueue import WorkQueue


def _wait(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False


def test_keys_are_deduplicated_and_never_run_twice_at_once():
    gate = threading.Event()
    seen: list[tuple[str, str]] = []
    running = set()
    overlap = []

    def work(key):
        if key in running:
            overlap.append(key)
        running.add(key)
        gate.wait(5)
        seen.append(key)
        running.discard(key)

    q = WorkQueue(work, workers=3)
    try:
        q.add(("ns", "a"))
        assert _wait(lambda: ("ns", "a") in running)
        for _ in range(5):  # while a runs: remembered once, run once more afterwards
            q.add(("ns", "a"))
        q.add(("ns", "b"))
        q.add(("ns", "b"))
        gate.set()
        assert _wait(lambda: q.idle() and len(seen) == 3)
        time.sleep(0.1)
        assert sorted(seen) == [("ns", "a"), ("ns", "a"), ("ns", "b")]
        assert overlap == []
    finally:
        q.stop()


def test_failures_are_retried_with_backoff():
    attempts = []

    def work(key):
        attempts.append(time.monotonic())
        if len(attempts) < 3:
            raise RuntimeError("API unavailable")

    q = WorkQueue(work, workers=1)
    try:
        q.add(("ns", "a"))
        assert _wait(lambda: len(attempts) == 3, timeout=20)
        assert attempts[2] - attempts[1] >= attempts[1] - attempts[0] >= 1.5  # 2 s, then 4 s
    finally:
        q.stop()
