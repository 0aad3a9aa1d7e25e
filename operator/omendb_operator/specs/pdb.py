"""PodDisruptionBudgets: a drain never takes the primary; replicas go one at a time.

With two or more pods the primary has a budget of its own that allows no eviction (``NAME-primary``,
selecting ``role: primary``, ``minAvailable: 100%``), and the replicas share one that allows one
(``NAME``, ``role: replica``, ``minAvailable``: the replicas but one). Both are ``minAvailable``: with
``maxUnavailable`` the disruption controller counts the StatefulSet's whole scale as expected pods, not the
ones the budget selects, so a budget over part of a StatefulSet would never allow anything. The primary's
is a percentage for the same reason turned to use: 100% of the StatefulSet's scale is never met by the
pods labelled primary, so it allows nothing even while a switchover relabels the pods and two of them
carry ``role: primary`` for a moment (``minAvailable: 1`` allowed one eviction then, and the e2e
journey saw a drain take the new primary).
A ``kubectl drain`` of the primary's node therefore waits (the eviction API answers 429) while the
operator, seeing the node cordoned, switches over to a replica on another node (plans/failover.py); the
old primary is then a replica and is evicted like one. A pod must never match two budgets (the eviction
API refuses such pods), hence two disjoint selectors. The CloudNativePG layout.

With one pod there is nobody to switch over to: one budget over the pod allows its eviction, so a drain
is never blocked forever (the database is down until the pod restarts elsewhere, as with any single pod).
Unhealthy pods may always be evicted, so a broken pod never blocks a drain.
"""

from __future__ import annotations

from typing import Any

from omendb_operator import labels as L
from omendb_operator.specs.services import ROLE_LABEL


def _pdb(owner: dict[str, Any], name: str, budget: dict[str, int | str], role: str | None) -> dict[str, Any]:
    selector = {**L.selector_labels(owner["metadata"]["name"]), **({ROLE_LABEL: role} if role else {})}
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": L.metadata(owner, name, "database"),
        "spec": {
            **budget,
            "selector": {"matchLabels": selector},
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }


def build_pdbs(owner: dict[str, Any], replicas: int) -> list[dict[str, Any]]:
    names = L.Names(owner["metadata"]["name"])
    if replicas < 2:
        return [_pdb(owner, names.pdb, {"maxUnavailable": 1}, None)]
    return [_pdb(owner, names.pdb, {"minAvailable": replicas - 2}, "replica"),
            _pdb(owner, names.primary_pdb, {"minAvailable": "100%"}, "primary")]
