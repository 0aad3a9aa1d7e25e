"""Which of several operator replicas acts: kopf peering, also honoured by the periodic resync.

kopf pauses its own handlers while a live peer with a higher priority exists (same-priority peers only
warn), so each replica starts with a distinct random priority. The resync loop is ours, not kopf's, and
asks the same question of the same peering object before it enqueues anything.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from omendb_operator.times import parse_time

PEERING_API = "kopf.dev/v1"


def live_higher_peers(peers: dict[str, Any], identity: str, priority: int, now: dt.datetime) -> list[str]:
    """Identities of peers (from a KopfPeering's status) that are alive and outrank us."""
    out = []
    for peer_id, info in (peers or {}).items():
        if peer_id == identity or not isinstance(info, dict):
            continue
        seen = parse_time(info.get("lastseen"))
        lifetime = dt.timedelta(seconds=int(info.get("lifetime", 60)))
        alive = seen is not None and seen + lifetime > now
        if alive and int(info.get("priority", 0)) > priority:
            out.append(peer_id)
    return out
