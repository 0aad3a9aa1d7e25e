from __future__ import annotations

from omendb_operator.specs.pdb import build_pdbs
from omendb_operator.specs.services import build_services


def test_primary_read_and_headless_services(owner):
    primary, read, headless = build_services(owner)
    assert [s["metadata"]["name"] for s in (primary, read, headless)] == ["prod", "prod-ro", "prod-headless"]
    # The role label, moved by the operator on failover: the selector itself never changes.
    assert primary["spec"]["selector"]["role"] == "primary"
    assert primary["spec"]["ports"] == [{"name": "api", "port": 3000, "targetPort": "api", "protocol": "TCP"}]
    assert read["spec"]["selector"] == {
        "app": "omendb",
        "app.kubernetes.io/name": "omendb",
        "app.kubernetes.io/instance": "prod",
    }
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["publishNotReadyAddresses"] is True
    assert {p["name"]: p["port"] for p in headless["spec"]["ports"]} == {"api": 3000, "metrics": 9090}
    for svc in (primary, read, headless):
        assert svc["metadata"]["labels"]["app"] == "omendb"
        assert svc["metadata"]["ownerReferences"][0]["uid"] == owner["metadata"]["uid"]


def test_read_service_selects_replicas_once_there_are_any(owner):
    primary, read, _ = build_services(owner, replicas=3)
    assert primary["spec"]["selector"] == {"app": "omendb", "app.kubernetes.io/name": "omendb",
                                           "app.kubernetes.io/instance": "prod", "role": "primary"}
    assert read["spec"]["selector"] == {"app": "omendb", "app.kubernetes.io/name": "omendb",
                                        "app.kubernetes.io/instance": "prod", "role": "replica"}


def test_pdb_allows_one_disruption_at_a_time(owner):
    (pdb,) = build_pdbs(owner, 1)
    assert pdb["spec"]["maxUnavailable"] == 1
    assert "minAvailable" not in pdb["spec"]
    assert pdb["spec"]["selector"]["matchLabels"]["app.kubernetes.io/instance"] == "prod"
