"""Self-fencing: a primary cut off from its replicas and from whoever could replace it stops accepting writes.

Who could replace it: the operator, which promotes a replica when the primary is down for
spec.failover.delaySeconds. It sees the primary down in two ways: its pod NotReady (the node stops reporting
to the API server: about 40 s), or, sooner, its engine unreachable from the operator while every replica
says the primary has not answered them either (plans/topology.py). Whatever the old primary acknowledges
meanwhile is lost when it rejoins (its writes are rewound), so it must stop writing before the earliest
promotion: after ``[replication] fence_after_seconds`` (the operator sets half the failover delay, at least
5 s, and never promotes an unreachable primary before fence_after_seconds + 2 s; the default 15 s is half
the default delay) during which

- no replica polled it: replicas polling it are not being promoted, and a replica streaming from it holds
  its writes anyway; **and**
- the operator's heartbeat did not reach it (``GET /admin/replication/heartbeat``, every second, sent only
  to the pod the operator holds for the primary). Until the first heartbeat arrives (an operator of an
  earlier release, a server outside the operator), a TCP connect to the API server's address
  (``KUBERNETES_SERVICE_HOST``, or ``fence_probe_address``) stands in for it: reachable means its node's
  kubelet still reports the pod Ready, so no failover starts. Without either, outside Kubernetes, there is
  no fencing.

A primary that has never been polled by a replica (a single pod) never fences: nobody could replace it.
It comes down as soon as a replica polls again or the heartbeat returns. Once the operator has promoted
another pod, neither happens (the replicas follow the new primary, the heartbeat goes there), so a healed
old primary stays fenced until the operator tells it to follow the new one, and rewinds: no write it
accepts after its fence can be acknowledged and then lost. (Once heartbeats were seen, the API server
being reachable no longer lifts a fence, for that reason.)
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
        heartbeat = replication.heartbeat_at
        # The operator's heartbeat, once seen, replaces the API probe (see the module's docstring).
        outside_age = now - (heartbeat if heartbeat is not None else self.api_seen)
        # Never with no replica ever seen: a single pod has nobody who could replace it.
        cut_off = bool(replica_ages) and outside_age > self.after and all(age > self.after for age in replica_ages)
        if cut_off and db.isolated is None:
            other = ("the operator's heartbeat" if heartbeat is not None else "the Kubernetes API (" + (
                f"{self.address[0]}:{self.address[1]}" if self.address else "no address") + ")")
            reason = (f"this primary has been reached by no replica and not by {other} for {self.after:g}s "
                      "([replication] fence_after_seconds): it may be cut off by a partition and replaced, so it "
                      "refuses writes until a replica polls it or the operator reaches it again; retry against "
                      "the Service")
            db.isolated = reason
            log.error("fenced: refusing writes", extra={"reason": reason})
        elif not cut_off and db.isolated is not None:
            db.isolated = None
            log.warning("unfenced: a replica or the operator reached this primary again; accepting writes")
