"""What the builders make of replication: the primary-pod key (outside the config hash, so moving the
primary restarts no pod), the shared [replication] keys, the mounted credentials and CA, the spec fields."""

from __future__ import annotations

import tomllib

import pytest

from omendb_operator.plans.children import Observed, build_children
from omendb_operator.spec import SpecError, parse_spec
from omendb_operator.specs.configmap import build_configmap, config_hash


def _by_kind(owner, spec, observed):
    import datetime as dt

    desired = build_children(owner, spec, observed, dt.datetime(2026, 11, 27, tzinfo=dt.UTC))
    return {(m["kind"], m["metadata"]["name"]): m for m in desired.manifests}


def test_moving_the_primary_changes_the_key_but_not_the_pod_template(owner):
    spec = parse_spec({"replicas": 3})
    a = _by_kind(owner, spec, Observed(primary_pod="prod-0"))
    b = _by_kind(owner, spec, Observed(primary_pod="prod-2"))
    assert a[("ConfigMap", "prod-config")]["data"]["primary-pod"] == "prod-0\n"
    assert b[("ConfigMap", "prod-config")]["data"]["primary-pod"] == "prod-2\n"
    assert a[("StatefulSet", "prod")]["spec"]["template"] == b[("StatefulSet", "prod")]["spec"]["template"]
    assert a[("Service", "prod")] == b[("Service", "prod")]
    cm = a[("ConfigMap", "prod-config")]
    assert cm["metadata"]["annotations"]["omendb.io/config-hash"] == config_hash(cm["data"]["omendb.toml"])


def test_shared_replication_keys_credentials_and_ca(owner):
    rendered = tomllib.loads(build_configmap(owner, parse_spec({}))["data"]["omendb.toml"])["replication"]
    assert rendered == {"credentials_file": "/etc/omendb/replication/credentials",
                        "ca_file": "/etc/omendb/tls/ca.crt"}
    plain = parse_spec({"auth": {"enabled": False}, "tls": {"enabled": False}})
    assert tomllib.loads(build_configmap(owner, plain)["data"]["omendb.toml"])["replication"] == {
        "credentials_file": "", "ca_file": ""}
    # The user's TLS Secret: its ca.crt is mounted and trusted only when it has one.
    user = parse_spec({"tls": {"generate": False, "secretName": "mine"}})
    for has_ca, want in ((False, ""), (True, "/etc/omendb/tls/ca.crt")):
        children = _by_kind(owner, user, Observed(user_tls_ca=has_ca))
        toml = tomllib.loads(children[("ConfigMap", "prod-config")]["data"]["omendb.toml"])
        assert toml["replication"]["ca_file"] == want
        volume = children[("StatefulSet", "prod")]["spec"]["template"]["spec"]["volumes"][0]
        mine = next(s["secret"] for s in volume["projected"]["sources"] if s.get("secret", {}).get("name") == "mine")
        assert ("ca.crt" in [i["key"] for i in mine["items"]]) is has_ca
    sync = parse_spec({"replicas": 3, "replication": {"synchronousReplicas": 2}})
    assert tomllib.loads(build_configmap(owner, sync)["data"]["omendb.toml"])["replication"][
        "synchronous_replicas"] == 2


def test_users_secret_holds_the_replication_credentials(owner):
    import base64

    users = _by_kind(owner, parse_spec({}), Observed())[("Secret", "prod-users")]["data"]
    user = base64.b64decode(users["username"]).decode()
    password = base64.b64decode(users["password"]).decode()
    assert base64.b64decode(users["credentials"]).decode() == f"{user}:{password}\n"


def test_replication_spec_fields_and_their_errors():
    spec = parse_spec({"replicas": 3, "failover": {"enabled": False, "delaySeconds": 5},
                       "storage": {"deleteClaimsOnScaleDown": True}})
    assert (spec.failover.enabled, spec.failover.delay_seconds) == (False, 5)
    assert spec.storage.delete_claims_on_scale_down and spec.replication.synchronous_replicas is None
    assert parse_spec({}).failover.delay_seconds == 30
    with pytest.raises(SpecError, match="only 0 replica\\(s\\) can acknowledge"):
        parse_spec({"replication": {"synchronousReplicas": 1}})
    with pytest.raises(SpecError, match="set spec.replicas to at least 3"):
        parse_spec({"replicas": 2, "config": {"replication": {"synchronous_replicas": 2}}})
    with pytest.raises(SpecError, match="disagree"):
        parse_spec({"replicas": 3, "replication": {"synchronousReplicas": 1},
                    "config": {"replication": {"synchronous_replicas": 2}}})
    with pytest.raises(SpecError, match="delaySeconds"):
        parse_spec({"failover": {"delaySeconds": 0}})
    with pytest.raises(SpecError, match="spec.config.replication.role is set by the operator"):
        parse_spec({"config": {"replication": {"role": "replica"}}})


@pytest.mark.parametrize(("failover", "fence"), [
    ({}, None),  # the default delay (30 s): the engine's default, 15 s, so omendb.toml stays as it was
    ({"delaySeconds": 60}, 30.0),
    ({"delaySeconds": 4}, 5.0),  # never below 5 s: a replica polls at least every poll_wait_ms (2 s)
    ({"enabled": False}, 0.0),  # no automatic failover: nobody replaces the primary, so it never fences
])
def test_self_fencing_stays_under_the_failover_delay(owner, failover, fence):
    spec = parse_spec({"replicas": 3, "failover": failover})
    replication = tomllib.loads(build_configmap(owner, spec)["data"]["omendb.toml"])["replication"]
    assert replication.get("fence_after_seconds") == fence
    single = parse_spec({"replicas": 1, "failover": failover})  # scaling never changes omendb.toml
    assert build_configmap(owner, single)["data"] == build_configmap(owner, spec)["data"]
