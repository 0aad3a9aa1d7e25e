"""Replication support in the engine: timelines (terms) and synchronous-replication acknowledgements.

Every WAL frame carries the term of the primary that wrote it. Promoting a replica starts a new term at the
next LSN and records ``(term, first LSN)`` in the term history (the manifest). A node that returns from an
older term compares its own last term and LSN with the new primary's history to find where its timeline
left the new one: everything it holds from that LSN on was never replicated and must be discarded
(rewound) before it can follow. The functions here are pure; the database and server call them.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from omendb.errors import OmenDBError

TermHistory = list[tuple[int, int]]  # (term, first LSN of that term), ascending


class Fenced(OmenDBError):
    """A frame or request from an older term: its primary has been replaced."""

    code = "fenced"


class ReplicationTimeout(OmenDBError):
    """A synchronous write is durable on the primary but too few replicas confirmed it in time."""

    code = "replication_timeout"


def term_at(history: TermHistory, lsn: int) -> int:
    """The term that wrote `lsn` according to a history."""
    term = history[0][0] if history else 1
    for t, first in history:
        if first <= lsn:
            term = t
        else:
            break
    return term


def divergence_lsn(local_history: TermHistory, local_lsn: int, primary_history: TermHistory) -> int | None:
    """The first LSN at which a node's timeline left the primary's, or None if the node's log is a prefix of
    the primary's (it can simply follow). Records from that LSN on must be discarded before following."""
    if local_lsn == 0:
        return None
    local_term = term_at(local_history, local_lsn)
    # The primary's timeline switched away from ours at the first term after our last one.
    for term, first in primary_history:
        if term > local_term:
            return first if local_lsn >= first else None
    # Same last term: if the primary also wrote that term, our log is a prefix of its log (or equal).
    if any(term == local_term for term, _ in primary_history):
        return None
    return 1  # our term is unknown to the primary: nothing in common can be proven


@dataclass
class _Replica:
    lsn: int
    seen_at: float


class ReplicaTracker:
    """The primary's view of its replicas: how far each has durably applied the WAL, and waiting for a
    synchronous write to reach enough of them."""

    def __init__(self) -> None:
        self._replicas: dict[str, _Replica] = {}
        self._changed = threading.Condition()

    def report(self, replica: str, lsn: int) -> None:
        """A replica says it holds every frame through `lsn` durably."""
        with self._changed:
            current = self._replicas.get(replica)
            if current is None or lsn >= current.lsn:
                self._replicas[replica] = _Replica(lsn, time.monotonic())
            self._changed.notify_all()

    def forget(self, replica: str) -> None:
        with self._changed:
            self._replicas.pop(replica, None)

    def positions(self) -> dict[str, tuple[int, float]]:
        """replica -> (acknowledged LSN, seconds since it last reported)."""
        now = time.monotonic()
        with self._changed:
            return {name: (r.lsn, now - r.seen_at) for name, r in self._replicas.items()}

    def confirmed(self, lsn: int) -> int:
        with self._changed:
            return sum(1 for r in self._replicas.values() if r.lsn >= lsn)

    def wait(self, lsn: int, replicas: int, timeout_s: float) -> None:
        """Return once `replicas` replicas hold `lsn`; raise ReplicationTimeout after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while sum(1 for r in self._replicas.values() if r.lsn >= lsn) < replicas:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    have = sum(1 for r in self._replicas.values() if r.lsn >= lsn)
                    raise ReplicationTimeout(
                        f"LSN {lsn} is durable on the primary but only {have} of the {replicas} required replicas "
                        f"confirmed it within {timeout_s:g}s; the write is NOT rolled back. Check the replicas "
                        f"(replication lag, readiness), or lower synchronous_replicas")
                self._changed.wait(remaining)
