"""The heartbeat: every second, each replicated OmenDB's primary engine is asked whether it is there.

Why. A node that dies or is cut off changes nothing in the Kubernetes API for about 40 s (until the node
lifecycle controller marks it NotReady, and with it the primary's pod), so no watch event would wake the
operator. The heartbeat is the operator's own watch on the primary: when the primary does not answer (or
no longer says it is the primary), the OmenDB is enqueued, and its reconcile observes the world as always:
the operator's own view of the engines plus what every replica says of its primary (plans/topology.py
decides from that, not from the heartbeat).

It also keeps the primary from fencing itself while the operator still reaches it (the engine's
server/fencing.py), so it goes to the pod the operator holds for the primary (status.primaryPod) and to no
other: after a failover the old primary gets no heartbeat and stays fenced until it is told to follow.

Like kopf's watches it only reads and enqueues; the reconcile registers what to watch (Plan.heartbeat).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from omendb_operator.controller.engines import Engines

log = logging.getLogger(__name__)

Key = tuple[str, str]
INTERVAL_SECONDS = 1.0
PARALLEL = 8  # primaries asked at once (each call gives up after engines.HEARTBEAT_TIMEOUT)
REMIND_SECONDS = 10.0  # a primary still missing wakes its OmenDB again this often


class Heartbeat:
    def __init__(self, enqueue: Callable[[Key], None], interval: float = INTERVAL_SECONDS) -> None:
        self.enqueue, self.interval = enqueue, interval
        self._targets: dict[Key, tuple[Engines, str]] = {}
        self._missing: dict[Key, float] = {}  # OmenDB -> when its missing primary last woke it
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=PARALLEL, thread_name_prefix="heartbeat")
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def watch(self, key: Key, engines: Engines | None, pod: str | None) -> None:
        """Heartbeat ``pod`` of OmenDB ``key`` from now on; None: stop (one pod, failover off, gone)."""
        with self._lock:
            if engines is None or pod is None:
                self._targets.pop(key, None)
                self._missing.pop(key, None)
            else:
                self._targets[key] = (engines, pod)

    def watched(self) -> dict[Key, str]:
        with self._lock:
            return {key: pod for key, (_engines, pod) in self._targets.items()}

    def beat_once(self, now: float | None = None) -> list[Key]:
        """Ask every watched primary once. Enqueue (and return) the OmenDBs whose primary just stopped
        answering as the primary, or came back, or has been missing for REMIND_SECONDS since the last
        enqueue: the first miss wakes the reconcile, whose own requeues carry the failover from there."""
        now = time.monotonic() if now is None else now
        with self._lock:
            targets = list(self._targets.items())
        answers = list(self._pool.map(lambda target: self._beat(*target[1]), targets))
        woken = []
        for (key, _target), ok in zip(targets, answers, strict=True):
            last = self._missing.get(key)
            if ok and last is not None:
                del self._missing[key]
                woken.append(key)
            elif not ok and (last is None or now - last >= REMIND_SECONDS):
                self._missing[key] = now
                woken.append(key)
        for key in woken:
            self.enqueue(key)
        return woken

    @staticmethod
    def _beat(engines: Engines, pod: str) -> bool:
        try:
            return engines.heartbeat(pod).get("role") == "primary"
        except Exception as exc:  # noqa: BLE001 - any failure is a missed beat; the reconcile finds out why
            log.debug("heartbeat to %s missed: %s", pod, exc)
            return False

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.beat_once()
            except Exception:  # noqa: BLE001 - the next beat tries again
                log.exception("heartbeat round failed")
