"""Drains: the primary's own PodDisruptionBudget holds its eviction back, and a cordoned Node under the
primary makes the operator switch over to a ready replica on another Node (plans/failover.py); the old
primary then is a replica, which the replicas' budget lets go one at a time. Pure planners, a World by hand."""

from __future__ import annotations

import dataclasses

import pytest
from test_omendb_plan import NOW, _steady_world

from omendb_operator.plans import failover
from omendb_operator.plans import topology as T
from omendb_operator.plans.children import Observed, stale_children
from omendb_operator.plans.omendb import plan_omendb
from omendb_operator.spec import parse_spec
from omendb_operator.specs.pdb import build_pdbs


def _node(name: str, cordoned: bool = False) -> dict:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
            "spec": {"unschedulable": True} if cordoned else {}}


def _placed(nodes: dict[str, str], cordoned: set[str]):  # type: ignore[no-untyped-def]
    world = _steady_world()
    for pod, node in nodes.items():
        world.pods[pod] = dataclasses.replace(world.pods[pod], node=node)
    world.nodes = {n: _node(n, n in cordoned) for n in set(nodes.values())}
    return world


def test_two_disjoint_budgets_hold_the_primary_and_let_replicas_go_one_at_a_time(owner):
    replicas, primary = build_pdbs(owner, 3)
    assert (replicas["metadata"]["name"], primary["metadata"]["name"]) == ("prod", "prod-primary")
    # minAvailable, not maxUnavailable: the disruption controller would count the StatefulSet's whole scale.
    assert replicas["spec"] == {"minAvailable": 1, "selector": replicas["spec"]["selector"],
                                "unhealthyPodEvictionPolicy": "AlwaysAllow"}  # 2 replicas, one may go
    assert replicas["spec"]["selector"]["matchLabels"]["role"] == "replica"
    # 100%: no eviction even while a switchover briefly labels two pods primary.
    assert primary["spec"]["minAvailable"] == "100%" and primary["spec"]["selector"]["matchLabels"]["role"] == "primary"
    assert build_pdbs(owner, 2)[0]["spec"]["minAvailable"] == 0  # the one replica may go
    for pdb in (replicas, primary):  # a pod matching two budgets cannot be evicted at all
        assert pdb["spec"]["selector"]["matchLabels"]["app.kubernetes.io/instance"] == "prod"
        assert pdb["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
    (single,) = build_pdbs(owner, 1)  # nobody to switch over to: the one pod may be evicted
    assert single["spec"]["maxUnavailable"] == 1 and "role" not in single["spec"]["selector"]["matchLabels"]
    assert ("policy/v1", "PodDisruptionBudget", "-primary") in stale_children(parse_spec({"replicas": 1}), Observed())
    assert ("policy/v1", "PodDisruptionBudget", "-primary") not in stale_children(parse_spec({"replicas": 2}),
                                                                                   Observed())


def test_a_cordoned_primary_node_switches_over_to_a_replica_elsewhere():
    world = _placed({"db-0": "n1", "db-1": "n1", "db-2": "n2"}, cordoned={"n1"})
    plan = plan_omendb(world, NOW)
    (first,) = plan.status_first
    fo = first.patch["failover"]
    assert (fo["phase"], fo["reason"], fo["from"], fo["to"]) == ("Demoting", "switchover", "db-0", "db-2")
    events = {e.reason: e.message for e in plan.events}
    assert "node n1 of the primary db-0 is cordoned" in events["DrainSwitchover"] and "db-2 on node n2" in \
        events["DrainSwitchover"]


@pytest.mark.parametrize(("nodes", "cordoned"), [
    ({"db-0": "n1", "db-1": "n2", "db-2": "n3"}, set()),  # no cordon
    ({"db-0": "n1", "db-1": "n2", "db-2": "n3"}, {"n2"}),  # a replica's node: the replicas' budget handles it
    ({"db-0": "n1", "db-1": "n1", "db-2": "n1"}, {"n1"}),  # nowhere to go: the drain waits (and says so)
])
def test_no_switchover_when_the_primary_stays_or_has_nowhere_to_go(nodes, cordoned):
    world = _placed(nodes, cordoned)
    plan = plan_omendb(world, NOW)
    assert not plan.status_first and not plan.engine_actions
    assert failover.drain_target(world, "db-0", 3) is None
    warning = failover.drain_warning(world, 3)
    assert (warning is not None) == (cordoned == {"n1"}), warning
    if warning:
        assert "cordoned, but no ready replica runs on another node" in warning


def test_a_gone_node_counts_as_cordoned_and_an_unready_replica_is_never_the_target():
    world = _placed({"db-0": "n1", "db-1": "n2", "db-2": "n3"}, cordoned=set())
    world.nodes["n1"] = None  # deleted
    world.pods["db-2"] = dataclasses.replace(world.pods["db-2"], ready=False)
    target = failover.drain_target(world, "db-0", 3)
    assert target is not None and target.name == "db-1"
    world.pods["db-1"] = dataclasses.replace(world.pods["db-1"], engine=T.Engine(role="replica", lsn=3, term=1))
    world.pods["db-2"] = dataclasses.replace(world.pods["db-2"], ready=True)
    assert failover.drain_target(world, "db-0", 3).name == "db-2"  # type: ignore[union-attr]  # higher LSN
