"""The PodDisruptionBudget: voluntary disruptions (node drains) take at most one pod at a time."""

from __future__ import annotations

from typing import Any

from omendb_operator import labels as L


def build_pdb(owner: dict[str, Any]) -> dict[str, Any]:
    name = owner["metadata"]["name"]
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": L.metadata(owner, L.Names(name).pdb, "database"),
        "spec": {
            # maxUnavailable rather than minAvailable: with one replica, minAvailable 1 would block
            # every node drain forever; maxUnavailable 1 lets a drain proceed one pod at a time.
            "maxUnavailable": 1,
            "selector": {"matchLabels": L.selector_labels(name)},
            # Unhealthy pods may always be evicted, so a broken pod never blocks a drain.
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }
