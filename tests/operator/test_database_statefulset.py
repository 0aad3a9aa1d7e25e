from __future__ import annotations

import pytest
from operator_pss import restricted_violations

from omendb_operator.spec import parse_spec
from omendb_operator.specs.statefulset import build_statefulset


def _sts(owner, raw=None, **kw):
    return build_statefulset(owner, parse_spec(raw or {}), "abc123", **kw)


def test_pods_meet_the_restricted_pod_security_standard(owner):
    pod = _sts(owner)["spec"]["template"]["spec"]
    assert restricted_violations(pod) == []
    assert pod["automountServiceAccountToken"] is False


def test_container_runs_the_engine_with_the_guide_ports_and_probes(owner):
    sts = _sts(owner, {"version": "0.2.0", "replicas": 3})
    assert sts["metadata"]["name"] == "prod"
    assert sts["spec"]["replicas"] == 3
    assert sts["spec"]["serviceName"] == "prod-headless"
    c = sts["spec"]["template"]["spec"]["containers"][0]
    assert c["name"] == "omendb"
    assert c["image"] == "omendb/omendb:0.2.0"
    # The role comes from the primary-pod key at start; the template never names the primary.
    assert c["command"] == ["omendb", "serve", "--config", "/etc/omendb/omendb.toml",
                            "--primary-pod-file", "/etc/omendb/primary-pod", "--primary-url-template",
                            "https://{pod}.prod-headless.omendb-prod.svc:3000"]
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"api": 3000, "metrics": 9090}
    assert c["livenessProbe"]["httpGet"] == {"path": "/health", "port": "api", "scheme": "HTTPS"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "api", "scheme": "HTTPS"}
    assert c["startupProbe"]["httpGet"]["path"] == "/health"
    # Probed every second during start-up, for up to 10 minutes of WAL replay; readiness every 2 s, so a
    # restarted pod is Ready soon after its database opens, and out of the Services after 16 s of failures.
    assert c["startupProbe"]["periodSeconds"] == 1 and c["startupProbe"]["failureThreshold"] == 600
    assert c["readinessProbe"]["periodSeconds"] == 2 and c["readinessProbe"]["failureThreshold"] == 8
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    assert mounts["/var/lib/omendb/data"] == "data"
    assert mounts["/var/lib/omendb/wal"] == "wal"
    assert mounts["/etc/omendb"] == "config"
    assert mounts["/tmp"] == "tmp"  # the root filesystem is read-only


def test_probes_use_http_without_tls(owner):
    c = _sts(owner, {"tls": {"enabled": False}})["spec"]["template"]["spec"]["containers"][0]
    assert c["readinessProbe"]["httpGet"]["scheme"] == "HTTP"
    sources = _sts(owner, {"tls": {"enabled": False}})["spec"]["template"]["spec"]["volumes"][0]["projected"]
    assert all("prod-tls" not in str(s) for s in sources["sources"])


def test_config_users_and_certificates_are_one_projected_volume(owner):
    volumes = {v["name"]: v for v in _sts(owner)["spec"]["template"]["spec"]["volumes"]}
    sources = volumes["config"]["projected"]["sources"]
    paths = {
        item["path"]: (next(iter(s)), s[next(iter(s))]["name"])
        for s in sources
        for item in s[next(iter(s))]["items"]
    }
    assert paths == {
        "omendb.toml": ("configMap", "prod-config"),
        "primary-pod": ("configMap", "prod-config"),
        "users.htpasswd": ("secret", "prod-users"),
        "replication/credentials": ("secret", "prod-users"),
        "tls/tls.crt": ("secret", "prod-tls"),
        "tls/tls.key": ("secret", "prod-tls"),
        "tls/ca.crt": ("secret", "prod-tls"),
    }
    user_tls = {
        v["name"]: v
        for v in _sts(owner, {"tls": {"generate": False, "secretName": "mine"}})["spec"]["template"]["spec"][
            "volumes"
        ]
    }
    assert "mine" in str(user_tls["config"])


def test_claims_and_retention(owner):
    sts = _sts(
        owner, {"storage": {"data": {"size": "100Gi", "storageClassName": "fast"}, "wal": {"size": "10Gi"}}}
    )
    claims = {c["metadata"]["name"]: c["spec"] for c in sts["spec"]["volumeClaimTemplates"]}
    assert claims["data"]["resources"]["requests"]["storage"] == "100Gi"
    assert claims["data"]["storageClassName"] == "fast"
    assert claims["wal"]["resources"]["requests"]["storage"] == "10Gi"
    assert "storageClassName" not in claims["wal"]
    # Data volumes carry no owner reference and are retained when the OmenDB goes...
    assert all("ownerReferences" not in c["metadata"] for c in sts["spec"]["volumeClaimTemplates"])
    assert sts["spec"]["persistentVolumeClaimRetentionPolicy"] == {
        "whenDeleted": "Retain",
        "whenScaled": "Retain",
    }
    # ...unless the spec says otherwise.
    gone = _sts(owner, {"storage": {"deleteClaimsOnDelete": True}})
    assert gone["spec"]["persistentVolumeClaimRetentionPolicy"]["whenDeleted"] == "Delete"


def test_labels_selector_and_owner(owner):
    sts = _sts(owner)
    selector = sts["spec"]["selector"]["matchLabels"]
    assert selector == {
        "app": "omendb",
        "app.kubernetes.io/name": "omendb",
        "app.kubernetes.io/instance": "prod",
    }
    pod_labels = sts["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= pod_labels.items()
    assert pod_labels["app.kubernetes.io/managed-by"] == "omendb-operator"
    ref = sts["metadata"]["ownerReferences"][0]
    assert (ref["kind"], ref["name"], ref["controller"], ref["blockOwnerDeletion"]) == (
        "OmenDB",
        "prod",
        True,
        False,
    )
    assert sts["spec"]["template"]["metadata"]["annotations"]["omendb.io/config-hash"] == "abc123"


def test_default_spreading_is_soft(owner):
    pod = _sts(owner)["spec"]["template"]["spec"]
    preferred = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert preferred[0]["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert (
        preferred[0]["podAffinityTerm"]["labelSelector"]["matchLabels"]["app.kubernetes.io/instance"]
        == "prod"
    )
    spread = pod["topologySpreadConstraints"]
    assert {s["topologyKey"] for s in spread} == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}
    assert all(s["whenUnsatisfiable"] == "ScheduleAnyway" for s in spread)


@pytest.mark.parametrize(
    "mode, key", [("required", "requiredDuringSchedulingIgnoredDuringExecution"), ("none", None)]
)
def test_anti_affinity_modes(owner, mode, key):
    pod = _sts(owner, {"scheduling": {"podAntiAffinity": mode}})["spec"]["template"]["spec"]
    if key:
        assert key in pod["affinity"]["podAntiAffinity"]
    else:
        assert "affinity" not in pod


def test_user_scheduling_replaces_defaults(owner):
    affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["nvme"]}]}
                ]
            }
        }
    }
    pod = _sts(
        owner,
        {
            "scheduling": {
                "affinity": affinity,
                "topologySpreadConstraints": [],
                "nodeSelector": {"pool": "db"},
                "tolerations": [{"key": "db", "operator": "Exists"}],
                "priorityClassName": "critical-db",
            }
        },
    )["spec"]["template"]["spec"]
    assert pod["affinity"] == affinity
    assert pod["topologySpreadConstraints"] == []
    assert pod["nodeSelector"] == {"pool": "db"}
    assert pod["tolerations"] == [{"key": "db", "operator": "Exists"}]
    assert pod["priorityClassName"] == "critical-db"


def test_replicas_override_holds_the_count(owner):
    assert _sts(owner, {"replicas": 3}, replicas=0)["spec"]["replicas"] == 0


def test_python_writes_only_to_tmp_on_the_read_only_root(owner):
    from omendb_operator.spec import parse_spec as p
    from omendb_operator.specs.cronjobs import build_cronjobs

    sts_env = {
        e["name"]: e.get("value") for e in _sts(owner)["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    job = build_cronjobs(owner, p({}))[0]["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    job_env = {e["name"]: e.get("value") for e in job["env"]}
    for env in (sts_env, job_env):
        assert env["NUMBA_CACHE_DIR"].startswith("/tmp/") and env["HOME"] == "/tmp"
        assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert "/tmp" in {m["mountPath"] for m in job["volumeMounts"]}


def test_claim_template_changes_are_reported_not_applied(owner):
    from omendb_operator.specs.statefulset import claim_template_drift

    live = _sts(owner, {"storage": {"data": {"size": "10Gi"}}})
    grown = _sts(owner, {"storage": {"data": {"size": "20Gi", "storageClassName": "fast"}}})
    warnings = claim_template_drift(grown, live)
    assert any(
        "spec.storage.data.size is 20Gi but the data volumes were made with 10Gi" in w for w in warnings
    )
    assert any("storageClassName cannot change" in w for w in warnings)
    assert claim_template_drift(live, live) == []
    assert claim_template_drift(live, None) == []
