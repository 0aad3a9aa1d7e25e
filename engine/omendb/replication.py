"""Replication support in the engine: timelines (terms) and synchronous-replication acknowledgements.

Every WAL frame carries the term of the primary that wrote it. Promoting a replica starts a new term at the
next LSN and records ``(term, first LSN)`` in the term history (the manifest). A node that returns from an
older term compares its own last term and LSN with the new primary's history to find where its timeline
left the new one: everything it holds from that LSN on was never replicated and must be discarded
(rewound) before it can follow. The functions here are pure; the database and server call them.
"""

from __future__ import annotations

import collections
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
        """A replica says it holds every frame through `lsn` durably. A stale report never moves it back (the
        WAL route checks a report is on this timeline first, so within one stint as primary a replica's
        position only grows), but every report is a sign of life for self-fencing."""
        with self._changed:
            current = self._replicas.get(replica)
            self._replicas[replica] = _Replica(max(lsn, current.lsn) if current else lsn, time.monotonic())
            self._changed.notify_all()

    def forget(self, replica: str) -> None:
        with self._changed:
            self._replicas.pop(replica, None)

    def clear(self) -> None:
        """Forget every replica: on promotion, what replicas held under an earlier stint as primary (maybe on
        another timeline) must neither confirm synchronous writes nor count for self-fencing."""
        with self._changed:
            self._replicas.clear()

    def positions(self) -> dict[str, tuple[int, float]]:
        """replica -> (acknowledged LSN, seconds since it last reported)."""
        now = time.monotonic()
        with self._changed:
            return {name: (r.lsn, now - r.seen_at) for name, r in self._replicas.items()}

    def floor(self, max_age_s: float) -> int | None:
        """The lowest LSN held by a replica that reported within `max_age_s` (None if there is none): the
        primary keeps the WAL after it."""
        now = time.monotonic()
        with self._changed:
            recent = [r.lsn for r in self._replicas.values() if now - r.seen_at <= max_age_s]
        return min(recent) if recent else None

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


class FrameRing:
    """The newest encoded WAL frames, kept in memory (bounded by bytes) so a primary can stream them to
    replicas without re-reading and decoding whole WAL segments for every poll. Frames are added in LSN
    order under the database's write lock; older ones fall out when the byte bound is exceeded, and a
    replica further behind is served from the WAL files instead."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._frames: collections.deque[tuple[int, bytes]] = collections.deque()
        self._bytes = 0
        self._lock = threading.Lock()

    def add(self, lsn: int, frame: bytes) -> None:
        with self._lock:
            if self._frames and self._frames[-1][0] != lsn - 1:
                self._frames.clear()  # a gap (should not happen): never serve a non-contiguous run
                self._bytes = 0
            self._frames.append((lsn, frame))
            self._bytes += len(frame)
            while self._bytes > self.max_bytes and len(self._frames) > 1:
                self._bytes -= len(self._frames.popleft()[1])

    def after(self, after_lsn: int, through_lsn: int, max_bytes: int) -> tuple[bytes, int] | None:
        """Frames after_lsn+1 .. at most through_lsn (and about max_bytes, at least one frame), concatenated,
        with the last LSN included; None when the ring no longer (or not yet) holds frame after_lsn+1."""
        with self._lock:
            if not self._frames or after_lsn >= through_lsn:
                return None
            first = self._frames[0][0]
            if not first <= after_lsn + 1 <= self._frames[-1][0]:
                return None
            parts: list[bytes] = []
            size, last = 0, after_lsn
            for i in range(after_lsn + 1 - first, len(self._frames)):
                lsn, frame = self._frames[i]
                if lsn > through_lsn or (parts and size + len(frame) > max_bytes):
                    break
                parts.append(frame)
                size += len(frame)
                last = lsn
            return b"".join(parts), last
