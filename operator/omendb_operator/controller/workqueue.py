"""A de-duplicating work queue of OmenDB keys, worked by a few threads.

Every trigger (the OmenDB changed, a child changed, the periodic resync) only enqueues
``(namespace, name)``; a key already waiting is not added twice, and one key is never reconciled by two
threads at once. A failed reconcile is retried with exponential backoff.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

Key = tuple[str, str]


class WorkQueue:
    def __init__(self, work: Callable[[Key], None], workers: int = 2, max_backoff: float = 300.0) -> None:
        self._work = work
        self._cond = threading.Condition()
        self._pending: list[Key] = []
        self._queued: set[Key] = set()
        self._running: set[Key] = set()
        self._dirty: set[Key] = set()  # enqueued while running: run again after
        self._failures: dict[Key, int] = {}
        self._timers: dict[Key, threading.Timer] = {}
        self._stopped = False
        self._max_backoff = max_backoff
        self._threads = [threading.Thread(target=self._loop, name=f"reconcile-{i}", daemon=True)
                         for i in range(workers)]
        for t in self._threads:
            t.start()

    def add(self, key: Key) -> None:
        with self._cond:
            if self._stopped:
                return
            if key in self._running:
                self._dirty.add(key)
                return
            if key not in self._queued:
                self._queued.add(key)
                self._pending.append(key)
                self._cond.notify()

    def add_after(self, key: Key, delay: float) -> None:
        """Enqueue ``key`` in ``delay`` seconds (a failover waiting out its delay, a switchover polling)."""
        self._add_later(key, delay)

    def _add_later(self, key: Key, delay: float) -> None:
        with self._cond:
            old = self._timers.pop(key, None)
            if old:
                old.cancel()
            timer = threading.Timer(delay, self.add, args=(key,))
            timer.daemon = True
            self._timers[key] = timer
            timer.start()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._stopped:
                    self._cond.wait()
                if self._stopped:
                    return
                key = self._pending.pop(0)
                self._queued.discard(key)
                self._running.add(key)
            try:
                self._work(key)
                failed = False
            except Exception:  # noqa: BLE001 - logged and retried; a worker thread must not die
                log.exception("reconcile of %s/%s failed; retrying", *key)
                failed = True
            with self._cond:
                self._running.discard(key)
                rerun = key in self._dirty
                self._dirty.discard(key)
                if failed:
                    count = self._failures.get(key, 0) + 1
                    self._failures[key] = count
                    delay = min(self._max_backoff, 2.0 ** count)
                else:
                    self._failures.pop(key, None)
            if failed:
                self._add_later(key, delay)
            elif rerun:
                self.add(key)

    def idle(self) -> bool:
        with self._cond:
            return not self._pending and not self._running

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            for timer in self._timers.values():
                timer.cancel()
            self._cond.notify_all()
        for t in self._threads:
            t.join(timeout=30)
