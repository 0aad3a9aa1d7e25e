"""spec.tls.issuerRef: the operator asks cert-manager for NAME-tls through a Certificate (issue 18, item 7).

Pure: the spec, the Certificate and the plan from a World built by hand. The same Certificate is issued by
a real cert-manager controller against a real kube-apiserver in test_apiserver_cert_manager.py.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from conftest import make_owner

from omendb_operator.plans.children import Observed, build_children, stale_children
from omendb_operator.plans.omendb import plan_omendb
from omendb_operator.plans.world import World
from omendb_operator.spec import SpecError, parse_spec, validate
from omendb_operator.specs import certificates
from omendb_operator.specs.secrets import encode_data

NOW = dt.datetime(2026, 12, 4, 12, 0, tzinfo=dt.UTC)
ISSUER = {"name": "omendb-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"}
SPEC = {"tls": {"issuerRef": ISSUER, "durationDays": 60, "renewBeforeDays": 20},
        "backup": {"enabled": True}, "monitoring": {"prometheusRule": False, "serviceMonitor": False}}


def _kinds(manifests: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(m["kind"], m["metadata"]["name"]): m for m in manifests}


def test_issuer_ref_means_cert_manager_issues_not_the_operator():
    spec = parse_spec(SPEC)
    validate(spec)
    assert spec.tls.issuer_ref is not None and spec.tls.issuer_ref.kind == "ClusterIssuer"
    assert not spec.tls.generate and not spec.tls.generated and spec.tls.cert_manager
    assert spec.tls.secret("db") == "db-tls"
    # kind and group default like cert-manager's own issuerRef.
    ref = parse_spec({"tls": {"issuerRef": {"name": "local"}}}).tls.issuer_ref
    assert ref is not None and (ref.kind, ref.group) == ("Issuer", "cert-manager.io")


@pytest.mark.parametrize("tls, fragment", [
    ({"issuerRef": ISSUER, "secretName": "mine"}, "remove secretName to use cert-manager"),
    ({"issuerRef": ISSUER, "generate": True}, "remove generate"),
    ({"issuerRef": {"name": "x", "kind": "Vault"}}, "must be Issuer or ClusterIssuer"),
    ({"issuerRef": {"name": "x", "group": "awspca.cert-manager.io"}}, "is not supported"),
    ({"issuerRef": {"kind": "Issuer"}}, "spec.tls.issuerRef.name is required"),
])
def test_conflicting_or_incomplete_issuer_refs_are_refused(tls, fragment):
    with pytest.raises(SpecError, match=fragment):
        parse_spec({"tls": tls})


def test_the_certificate_asks_for_what_the_generated_one_holds():
    owner = make_owner("db", "ns", SPEC)
    desired = build_children(owner, parse_spec(SPEC), Observed(cert_manager_api=True), NOW)
    children = _kinds(desired.manifests)
    # The operator makes neither the CA nor the server certificate.
    assert ("Secret", "db-ca") not in children and ("Secret", "db-tls") not in children
    cert = children[("Certificate", "db")]
    assert cert["apiVersion"] == "cert-manager.io/v1"
    assert cert["metadata"]["ownerReferences"][0]["uid"] == owner["metadata"]["uid"]
    spec = cert["spec"]
    assert spec["secretName"] == "db-tls"
    assert spec["issuerRef"] == ISSUER
    assert spec["dnsNames"] == certificates.server_dns_names("db", "ns")
    assert spec["ipAddresses"] == ["127.0.0.1", "::1"]
    assert (spec["duration"], spec["renewBefore"]) == ("1440h", "480h")
    assert spec["privateKey"]["algorithm"] == "ECDSA" and spec["privateKey"]["size"] == 256
    assert "server auth" in spec["usages"]
    # cert-manager's Secret carries the OmenDB's labels, so it is deleted when no longer used.
    assert spec["secretTemplate"]["labels"]["app.kubernetes.io/instance"] == "db"
    # The pods and the backup Jobs read NAME-tls (and its ca.crt, once cert-manager wrote one).
    desired = build_children(owner, parse_spec(SPEC), Observed(cert_manager_api=True, user_tls_ca=True), NOW)
    children = _kinds(desired.manifests)
    sts_volume = str(children[("StatefulSet", "db")]["spec"]["template"]["spec"]["volumes"])
    assert "'name': 'db-tls'" in sts_volume and "tls/ca.crt" in sts_volume
    cron = str(children[("CronJob", "db-backup-full")])
    assert "'secretName': 'db-tls'" in cron and "None" not in cron


def test_stale_children_follow_issuer_ref():
    with_issuer = stale_children(parse_spec(SPEC), Observed(cert_manager_api=True))
    # NAME-tls is cert-manager's output now: never deleted as "no longer generated".
    assert ("v1", "Secret", "-tls") not in with_issuer
    assert ("cert-manager.io/v1", "Certificate", "") not in with_issuer
    generated = stale_children(parse_spec({}), Observed(cert_manager_api=True))
    assert ("cert-manager.io/v1", "Certificate", "") in generated
    assert ("v1", "Secret", "-tls") not in generated
    # Without cert-manager's CRDs there is no Certificate to look for.
    assert ("cert-manager.io/v1", "Certificate", "") not in stale_children(parse_spec({}), Observed())


def _world(cert_manager_api: bool, certificate: dict[str, Any] | None = None,
           tls_data: dict[str, str] | None = None) -> World:
    omendb = {"apiVersion": "omendb.io/v1alpha1", "kind": "OmenDB",
              "metadata": {"name": "db", "namespace": "ns", "uid": "u-1", "generation": 1},
              "spec": SPEC, "status": {}}
    world = World(namespace="ns", name="db", omendb=omendb, cert_manager_api=cert_manager_api)
    if certificate is not None:
        world.children["Certificate"] = {"db": certificate}
    world.secrets["db-tls"] = None if tls_data is None else {
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db-tls", "namespace": "ns"},
        "data": encode_data(tls_data)}
    return world


def _conditions(world: World) -> dict[str, dict[str, Any]]:
    plan = plan_omendb(world, NOW)
    assert plan.status is not None
    return {c["type"]: c for c in plan.status.patch["conditions"]}


def test_without_cert_manager_the_status_says_what_to_do():
    conditions = _conditions(_world(cert_manager_api=False))
    for kind in ("TLSReady", "Degraded"):
        assert "install cert-manager or remove spec.tls.issuerRef" in conditions[kind]["message"]
    assert conditions["TLSReady"]["status"] == "False" and conditions["Degraded"]["status"] == "True"


def test_tls_ready_follows_the_certificate_and_its_secret():
    world = _world(cert_manager_api=True)
    plan = plan_omendb(world, NOW)
    assert any(a.manifest["kind"] == "Certificate" for a in plan.applies)
    assert not any(a.manifest["kind"] == "Secret" and a.manifest["metadata"]["name"] in ("db-tls", "db-ca")
                   for a in plan.applies)
    pending = _conditions(world)["TLSReady"]
    assert pending["status"] == "False" and "Certificate db is not Ready" in pending["message"]

    failing = {"status": {"conditions": [{"type": "Ready", "status": "False", "reason": "DoesNotExist",
                                          "message": "Issuer omendb-ca not found"}]}}
    assert "Issuer omendb-ca not found" in _conditions(_world(True, failing))["TLSReady"]["message"]

    ca_pem, ca_key = certificates.issue_ca("test CA", NOW)
    crt, key = certificates.issue_server_cert(ca_pem, ca_key, certificates.server_dns_names("db", "ns"), NOW,
                                              dt.timedelta(days=60))
    ready = {"status": {"conditions": [{"type": "Ready", "status": "True", "reason": "Ready"}]}}
    world = _world(True, ready, {"tls.crt": crt, "tls.key": key, "ca.crt": ca_pem})
    plan = plan_omendb(world, NOW)
    assert plan.status is not None
    tls_ready = {c["type"]: c for c in plan.status.patch["conditions"]}["TLSReady"]
    assert tls_ready["status"] == "True", tls_ready
    assert plan.status.patch["tls"] == {"secretName": "db-tls", "certificate": "db",
                                        "notAfter": "2027-02-02T12:00:00Z"}


def test_removing_issuer_ref_deletes_the_certificate_before_name_tls_is_rewritten():
    """Act deletes after it applies: writing the operator's NAME-tls while the Certificate still exists
    would let cert-manager re-issue over it, so the Secret waits for the next pass."""
    world = _world(cert_manager_api=True, certificate={
        "apiVersion": "cert-manager.io/v1", "kind": "Certificate",
        "metadata": {"name": "db", "namespace": "ns", "labels": {"app.kubernetes.io/managed-by": "omendb-operator"}}})
    assert world.omendb is not None
    world.omendb["spec"] = {**SPEC, "tls": {"durationDays": 60, "renewBeforeDays": 20}}
    plan = plan_omendb(world, NOW)
    assert [(d.kind, d.name) for d in plan.deletes] == [("Certificate", "db")]
    written = {(a.manifest["kind"], a.manifest["metadata"]["name"]) for a in plan.applies}
    assert ("Secret", "db-ca") in written and ("Secret", "db-tls") not in written
    assert plan.requeue is not None and plan.requeue <= 1.0
    # Next pass: the Certificate is gone, the operator writes its own NAME-tls.
    del world.children["Certificate"]
    plan = plan_omendb(world, NOW)
    assert ("Secret", "db-tls") in {(a.manifest["kind"], a.manifest["metadata"]["name"]) for a in plan.applies}
