"""Self-fencing: a primary cut off from its replicas and from the Kubernetes API stops accepting writes.

Why both. In a partition the operator, on the other side, sees the primary's pod go NotReady (the node stops
reporting: about 40 s) and promotes a replica after spec.failover.delaySeconds more. Whatever the old
primary acknowledges meanwhile is lost when it rejoins (its writes are rewound). So it must stop writing
before that promotion can happen: after ``[replication] fence_after_seconds`` (the operator sets half the
failover delay, at least 5 s; the default 15 s is half the default delay) during which no replica polled it
**and** the API server's address (``KUBERNETES_SERVICE_HOST``, or ``fence_probe_address``; without either,
outside Kubernetes, there is no fencing) did not answer a TCP connect. Either one still reachable means it is
not isolated:

- replicas polling it: they are not being promoted (the operator needs the primary's pod NotReady, which
  needs the node cut from the API server; a replica streaming from it holds its writes anyway);
- the API server reachable: its node's kubelet still reports the pod Ready, so no failover starts (and a
  primary whose replicas are all restarting keeps serving: losing them is no reason to stop).

So the fence is up before the earliest promotion: fence_after_seconds < NotReady grace + failover delay.
A primary that has never been polled by a replica (a single pod) never fences: nobody could replace it.
It comes down by itself as soon as a replica polls again or the API answers; the operator then either
finds the primary where it was, or demotes it (its term is older) and it rewinds.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time

from omendb.server.state import Phase, ServerState

log = logging.getLogger("omendb.server")

PROBE_SECONDS = 1.0


def probe_address(configured: str) -> tuple[str, int] | None:
    """(host, port) to probe: the configured one, else the API server's from the pod's environment."""
    text = configured or (f"{os.environ['KUBERNETES_SERVICE_HOST']}:{os.environ.get('KUBERNETES_SERVICE_PORT', '443')}"
                          if os.environ.get("KUBERNETES_SERVICE_HOST") else "")
    if not text:
        return None
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


class Fence:
    """Every second: is this primary cut off? Sets and clears ``Database.isolated``."""

    def __init__(self, state: ServerState) -> None:
        cfg = state.config.replication
        self.state, self.after = state, cfg.fence_after_seconds
        self.address = probe_address(cfg.fence_probe_address)
        self.api_seen = time.monotonic()  # a fresh start counts as reachable: the clock starts now
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.after <= 0 or self.address is None:  # outside Kubernetes, unless an address is configured
            return
        self._thread = threading.Thread(target=self._run, name="omendb-fence", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _reachable(self) -> bool:
        if self.address is None:
            return False
        try:
            with socket.create_connection(self.address, timeout=PROBE_SECONDS):
                return True
        except OSError:
            return False

    def _run(self) -> None:
        while not self._stop.wait(PROBE_SECONDS):
            if self._reachable():
                self.api_seen = time.monotonic()
            self.check()

    def check(self) -> None:
        db, replication = self.state.db, self.state.replication
        if db is None or self.state.phase is not Phase.READY or replication is None:
            return
        if replication.role != "primary":
            db.isolated = None
            return
        now = time.monotonic()
        replica_ages = [age for _lsn, age in db.replicas.positions().values()]
        api_age = now - self.api_seen
        # Never with no replica ever seen: a single pod has nobody who could replace it.
        cut_off = bool(replica_ages) and api_age > self.after and all(age > self.after for age in replica_ages)
        if cut_off and db.isolated is None:
            reason = (f"this primary has reached neither a replica nor the Kubernetes API "
                      f"({self.address[0] + ':' + str(self.address[1]) if self.address else 'no address'}) for "
                      f"{self.after:g}s ([replication] fence_after_seconds): it may be cut off by a partition "
                      "and replaced, so it refuses writes until either is reachable again; retry against the "
                      "Service")
            db.isolated = reason
            log.error("fenced: refusing writes", extra={"reason": reason})
        elif not cut_off and db.isolated is not None:
            db.isolated = None
            log.warning("unfenced: a replica or the Kubernetes API is reachable again; accepting writes")
