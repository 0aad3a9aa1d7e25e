from __future__ import annotations

import datetime as dt

from omendb_operator.controller.peering import live_higher_peers

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def _peer(priority, seconds_ago, lifetime=60):
    return {
        "priority": priority,
        "lifetime": lifetime,
        "lastseen": (NOW - dt.timedelta(seconds=seconds_ago)).isoformat(),
    }


def test_only_live_higher_priority_peers_outrank_us():
    peers = {
        "me": _peer(10, 0),
        "higher-live": _peer(20, 5),
        "higher-dead": _peer(30, 120),
        "lower": _peer(5, 1),
        "same": _peer(10, 1),
    }
    assert live_higher_peers(peers, "me", 10, NOW) == ["higher-live"]
    assert live_higher_peers(peers, "me", 25, NOW) == []
    assert live_higher_peers({}, "me", 0, NOW) == []
