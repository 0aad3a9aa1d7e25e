"""spec.networkPolicy: the NetworkPolicy builder, when it is a child and when it is stale, and bad input."""

from __future__ import annotations

import datetime as dt

import pytest

from omendb_operator import labels as L
from omendb_operator.plans.children import Observed, build_children, stale_children
from omendb_operator.spec import SpecError, parse_spec
from omendb_operator.specs import cronjobs
from omendb_operator.specs.networkpolicy import build_network_policy

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def _rules(policy):
    return {rule["ports"][0]["port"]: rule["from"] for rule in policy["spec"]["ingress"]}


def test_off_by_default_and_stale_when_off(owner):
    spec = parse_spec({})
    desired = build_children(owner, spec, Observed(), NOW)
    assert "NetworkPolicy" not in {m["kind"] for m in desired.manifests}
    assert ("networking.k8s.io/v1", "NetworkPolicy", "") in stale_children(spec, Observed())


def test_enabled_admits_clients_own_pods_operator_and_prometheus_only(owner):
    spec = parse_spec({"networkPolicy": {"enabled": True}})
    desired = build_children(owner, spec, Observed(operator_namespace="omendb-system"), NOW)
    (policy,) = [m for m in desired.manifests if m["kind"] == "NetworkPolicy"]
    assert ("networking.k8s.io/v1", "NetworkPolicy", "") not in stale_children(spec, Observed())
    assert policy["metadata"]["name"] == "prod" and policy["metadata"]["namespace"] == "omendb-prod"
    assert policy["metadata"]["ownerReferences"][0]["uid"] == owner["metadata"]["uid"]
    # It selects the database pods exactly as the StatefulSet does, and restricts ingress only.
    assert policy["spec"]["podSelector"] == {"matchLabels": L.selector_labels("prod")}
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    rules = _rules(policy)
    assert set(rules) == {L.API_PORT, L.METRICS_PORT}
    operator = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "omendb-system"}},
                "podSelector": {"matchLabels": {"app.kubernetes.io/name": "omendb-operator"}}}
    assert rules[L.API_PORT] == [
        {"podSelector": {"matchLabels": {"omendb.io/client": "prod"}}},
        {"podSelector": {"matchLabels": {"app.kubernetes.io/instance": "prod",
                                         "app.kubernetes.io/managed-by": "omendb-operator"}}},
        operator,
    ]
    assert rules[L.METRICS_PORT] == [
        {"namespaceSelector": {}, "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}},
        operator,
    ]


def test_backup_job_pods_match_the_own_pods_peer(owner):
    """Online backups read the primary's snapshot endpoint from a Job's pod: the policy must admit it."""
    spec = parse_spec({"networkPolicy": {"enabled": True}})
    policy = build_network_policy(owner, spec, "omendb-system")
    own = _rules(policy)[L.API_PORT][1]["podSelector"]["matchLabels"]
    job = cronjobs.job_template(owner, spec, "backup", ["true"])
    pod_labels = job["spec"]["template"]["metadata"]["labels"]
    assert own.items() <= pod_labels.items()


def test_custom_peers_replace_the_defaults_and_the_operator_stays(owner):
    clients = [{"namespaceSelector": {"matchLabels": {"team": "search"}}}]
    prometheus = [{"ipBlock": {"cidr": "10.0.0.0/8"}}]
    spec = parse_spec({"networkPolicy": {"enabled": True, "clients": clients, "prometheus": prometheus}})
    rules = _rules(build_network_policy(owner, spec, None))
    # Outside the cluster the operator's namespace is unknown: any namespace, still only its own pods.
    operator = {"namespaceSelector": {}, "podSelector": {"matchLabels": {"app.kubernetes.io/name": "omendb-operator"}}}
    assert rules[L.API_PORT][0] == clients[0] and rules[L.API_PORT][-1] == operator
    assert rules[L.METRICS_PORT] == [prometheus[0], operator]


def test_an_empty_client_list_admits_only_the_operator_and_the_database_itself(owner):
    spec = parse_spec({"networkPolicy": {"enabled": True, "clients": []}})
    peers = _rules(build_network_policy(owner, spec, "ops"))[L.API_PORT]
    assert len(peers) == 2 and "omendb.io/client" not in str(peers)


@pytest.mark.parametrize("clients", [{"podSelector": {}}, ["pods"], [{}]])
def test_peers_that_are_not_a_list_of_peers_are_refused_with_the_fix(clients):
    with pytest.raises(SpecError, match=r"spec.networkPolicy.clients must be a list of NetworkPolicy peers"):
        parse_spec({"networkPolicy": {"enabled": True, "clients": clients}})
