"""The Helm chart: lint, CRDs identical to crds/, RBAC equal to manifests/rbac.yaml, the Deployment matching
what the operator serves, and its output accepted by a real kube-apiserver (server-side dry run, and a real
`helm install` + `helm upgrade`) in both RBAC modes."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import chart_tools as pkg  # scripts/chart_tools.py (conftest puts scripts/ on sys.path)
import pytest
import yaml
from operator_pss import restricted_violations

from omendb_operator.main import Settings, settings_from
from omendb_operator.specs import security

ROOT = Path(__file__).resolve().parents[2]
# Kinds only ever cluster-scoped: in namespaced mode none of their rights may be granted by a Role.
CLUSTER_SCOPED = {("apiextensions.k8s.io", "customresourcedefinitions"), ("", "namespaces"),
                  ("kopf.dev", "clusterkopfpeerings"), ("storage.k8s.io", "storageclasses"), ("", "nodes")}


def docs(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def by_kind(objs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objs if o["kind"] == kind]


def triples(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    """RBAC rules flattened to (group, resource, verb), so equal grants compare equal however grouped."""
    out = set()
    for r in rules:
        assert "*" not in r["verbs"] + r["resources"] + r["apiGroups"], f"wildcard in {r}"
        out |= {(g, res, v) for g in r["apiGroups"] for res in r["resources"] for v in r["verbs"]}
    return out


AGGREGATED = ("omendb-view", "omendb-edit")


def operator_cluster_roles(objs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The operator's own ClusterRoles (the aggregated user-facing roles aside)."""
    return [r for r in by_kind(objs, "ClusterRole") if r["metadata"]["name"] not in AGGREGATED]


def reference_rules() -> set[tuple[str, str, str]]:
    role = by_kind(docs((ROOT / "manifests" / "rbac.yaml").read_text()), "ClusterRole")[0]
    return triples(role["rules"])


def helm(*args: str, kubeconfig: Path | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    # Offline commands render for the e2e pin (helm's own default, v1.20, is below the chart's kubeVersion).
    offline = ["--kube-version", pkg.KUBE_VERSION] if args[0] in ("lint", "template") else []
    argv = [str(pkg.helm()), *args, *offline] + (["--kubeconfig", str(kubeconfig)] if kubeconfig else [])
    out = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    if check:
        assert out.returncode == 0, f"helm {' '.join(args)}:\n{out.stdout}\n{out.stderr}"
    return out


NAMESPACED = ["--set", "watchNamespaces={team-a,team-b}"]


@pytest.mark.parametrize("extra", [[], NAMESPACED, ["--set", "serviceMonitor.enabled=true"]],
                         ids=["cluster", "namespaced", "servicemonitor"])
def test_helm_lint_is_clean(extra):
    out = helm("lint", "--strict", str(pkg.CHART), *extra)
    assert "0 chart(s) failed" in out.stdout
    assert "[WARNING]" not in out.stdout and "[ERROR]" not in out.stdout, out.stdout


def test_chart_crds_are_identical_to_crds_dir():
    assert sorted(p.name for p in pkg.CRDS.glob("*.yaml")), "crds/ is empty"
    assert pkg.stale_chart_crds() == [], "run `make chart-crds`"


def test_install_yaml_is_rendered_from_the_current_chart():
    assert pkg.INSTALL.read_text() == pkg.render_install(), "manifests/install.yaml is stale: run `make manifests`"
    objs = docs(pkg.INSTALL.read_text())
    assert {o["metadata"]["name"] for o in by_kind(objs, "CustomResourceDefinition")} == {
        d["metadata"]["name"] for p in pkg.CRDS.glob("*.yaml") for d in docs(p.read_text())}


def test_cluster_mode_rbac_equals_manifests_rbac():
    objs = docs(pkg.template())
    [role] = operator_cluster_roles(objs)
    assert triples(role["rules"]) == reference_rules()
    [binding] = by_kind(objs, "ClusterRoleBinding")
    [sa] = by_kind(objs, "ServiceAccount")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa["metadata"]["name"],
                                    "namespace": pkg.NAMESPACE}]
    assert not by_kind(objs, "Role")
    assert [p["metadata"]["name"] for p in by_kind(objs, "ClusterKopfPeering")] == ["omendb-operator"]


def test_namespaced_mode_grants_only_per_namespace_plus_crd_reads():
    objs = docs(pkg.template(*NAMESPACED))
    roles = by_kind(objs, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    namespaced = {t for t in reference_rules() if (t[0], t[1]) not in CLUSTER_SCOPED}
    for role in roles:
        assert triples(role["rules"]) == namespaced
    [cluster_role] = operator_cluster_roles(objs)
    assert triples(cluster_role["rules"]) == {("apiextensions.k8s.io", "customresourcedefinitions", v)
                                              for v in ("get", "list", "watch")} | {
        ("storage.k8s.io", "storageclasses", "get")} | {("", "nodes", v) for v in ("get", "list", "watch")}
    assert sorted(b["metadata"]["namespace"] for b in by_kind(objs, "RoleBinding")) == ["team-a", "team-b"]
    assert sorted(p["metadata"]["namespace"] for p in by_kind(objs, "KopfPeering")) == ["team-a", "team-b"]
    assert not by_kind(objs, "ClusterKopfPeering")


def test_deployment_matches_what_the_operator_serves():
    [dep] = by_kind(docs(pkg.template(*NAMESPACED)), "Deployment")
    pod = dep["spec"]["template"]["spec"]
    assert restricted_violations(pod) == []
    [c] = pod["containers"]
    assert c["securityContext"] == security.container_security_context()
    assert pod["securityContext"]["runAsUser"] == security.RUN_AS_USER
    env = {e["name"]: e.get("value", "") for e in c["env"]}
    settings = Settings.from_env(env)  # the operator's own parser accepts what the chart sets
    assert settings.namespaces == ("team-a", "team-b")
    assert settings.peering == "omendb-operator" and settings.log_format == "json"
    [port] = c["ports"]
    assert port["containerPort"] == settings.port == Settings().port
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert {m["mountPath"] for m in c["volumeMounts"]} == {"/tmp"}  # the read-only root's one writable dir
    assert c["image"] == "omendb/omendb-operator:0.1.0"
    standalone = by_kind(docs(pkg.template("--set", "peering.enabled=false")), "Deployment")[0]
    env = {e["name"]: e.get("value", "") for e in standalone["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert Settings.from_env(env).peering is None and Settings.from_env(env).namespaces == ()


def test_the_operator_cannot_list_or_watch_secrets():
    """It reads Secrets by name only; list/watch would let it enumerate every credential it can reach."""
    for objs in (docs(pkg.template()), docs(pkg.template(*NAMESPACED))):
        for role in operator_cluster_roles(objs) + by_kind(objs, "Role"):
            granted = {verb for group, res, verb in triples(role["rules"]) if (group, res) == ("", "secrets")}
            assert not granted & {"list", "watch"}, role["metadata"]["name"]
    assert {v for g, r, v in reference_rules() if (g, r) == ("", "secrets")} == {"get", "create", "patch", "delete"}


def test_rbac_create_false_renders_no_rbac():
    objs = docs(pkg.template("--set", "rbac.create=false"))
    assert not [o for o in objs if o["kind"] in ("ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")]
    assert by_kind(objs, "Deployment") and by_kind(objs, "ServiceAccount")


def test_aggregated_roles_reach_view_edit_and_admin():
    objs = {r["metadata"]["name"]: r for r in by_kind(docs(pkg.template()), "ClusterRole")}
    agg = "rbac.authorization.k8s.io/aggregate-to-"
    view, edit = objs["omendb-view"], objs["omendb-edit"]
    assert {k for k, v in view["metadata"]["labels"].items() if k.startswith(agg) and v == "true"} == {
        agg + "view", agg + "edit", agg + "admin"}
    assert {k for k, v in edit["metadata"]["labels"].items() if k.startswith(agg) and v == "true"} == {
        agg + "edit", agg + "admin"}
    assert {v for _, _, v in triples(view["rules"])} == {"get", "list", "watch"}
    assert {("omendb.io", "omendbs", "delete"), ("omendb.io", "omendbrestores", "create")} <= triples(edit["rules"])
    assert not [r for r in by_kind(docs(pkg.template("--set", "rbac.aggregateToDefaultRoles=false")),
                                   "ClusterRole") if r["metadata"]["name"] in AGGREGATED]


def test_crds_are_templates_kept_on_uninstall_and_optional():
    crds = by_kind(docs(pkg.template()), "CustomResourceDefinition")
    assert {c["metadata"]["name"] for c in crds} == {
        d["metadata"]["name"] for p in pkg.CRDS.glob("*.yaml") for d in docs(p.read_text())}
    assert all(c["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep" for c in crds)
    assert not (pkg.CHART / "crds").exists(), "Helm never upgrades a chart's crds/ directory"
    assert not by_kind(docs(pkg.template("--set", "crds.create=false")), "CustomResourceDefinition")


def test_extra_env_args_spread_and_a_strategy_that_never_runs_two_operators():
    values = ["--set-json", 'extraEnv=[{"name":"HTTPS_PROXY","value":"http://proxy:3128"}]',
              "--set-json", 'extraArgs=["--log-level=debug","--workers=4"]',
              "--set-json", 'topologySpreadConstraints=[{"maxSkew":1,"topologyKey":"topology.kubernetes.io/zone",'
                            '"whenUnsatisfiable":"ScheduleAnyway","labelSelector":{"matchLabels":{"a":"b"}}}]',
              "--set", "podAnnotations.team=db"]
    [dep] = by_kind(docs(pkg.template(*values)), "Deployment")
    pod = dep["spec"]["template"]
    [c] = pod["spec"]["containers"]
    env = {e["name"]: e.get("value", "") for e in c["env"]}
    assert env["HTTPS_PROXY"] == "http://proxy:3128"
    settings = settings_from(c["args"], env)  # the operator's own parser takes the extra flags
    assert settings.log_level == "debug" and settings.workers == 4
    assert pod["spec"]["topologySpreadConstraints"][0]["topologyKey"] == "topology.kubernetes.io/zone"
    assert pod["metadata"]["annotations"] == {"team": "db"}
    assert dep["spec"]["strategy"] == {"type": "Recreate"}
    [rolling] = by_kind(docs(pkg.template("--set", "updateStrategy.type=RollingUpdate")), "Deployment")
    assert rolling["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}


def test_chart_metadata_names_kube_version_icon_and_sources():
    chart = yaml.safe_load((pkg.CHART / "Chart.yaml").read_text())
    assert chart["kubeVersion"].startswith(">=1.29") and chart["sources"] and chart["icon"].startswith("https://")
    assert chart["icon"].endswith("/docs/images/omendb-icon.svg") and (ROOT / "docs/images/omendb-icon.svg").is_file()


def test_service_and_service_monitor_select_the_operator_pods():
    objs = docs(pkg.template("--set", "serviceMonitor.enabled=true,serviceMonitor.labels.release=prom"))
    [dep], [svc], [sm] = by_kind(objs, "Deployment"), by_kind(objs, "Service"), by_kind(objs, "ServiceMonitor")
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= pod_labels.items()
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert sm["spec"]["endpoints"][0]["port"] == svc["spec"]["ports"][0]["name"] == "http-metrics"
    assert sm["metadata"]["labels"]["release"] == "prom"
    assert not by_kind(docs(pkg.template()), "ServiceMonitor")


@pytest.mark.parametrize("args, message", [
    (["--set", "replicas=0"], "replicas"),
    (["--set", "operator.logFormat=xml"], "logFormat"),
    (["--set", "watchNamespaces={Bad_Name}"], "watchNamespaces"),
    (["--set", "nosuchkey=1"], "nosuchkey"),
    (["--set", "serviceMonitor.enabled=true,metricsService.enabled=false"], "metricsService.enabled"),
    (["--set", "updateStrategy.type=Surge"], "updateStrategy"),
    (["--set-json", 'extraEnv=[{"value":"x"}]'], "extraEnv"),
])
def test_bad_values_are_refused_with_the_key_named(args, message):
    out = helm("template", "x", str(pkg.CHART), *args, check=False)
    assert out.returncode != 0 and message in out.stderr, out.stderr




# ---- against the real API server


def test_notes_tell_the_user_what_to_do_next(apiserver):
    out = helm("install", "omendb-operator", str(pkg.CHART), "--dry-run", "--namespace", pkg.NAMESPACE,
               *NAMESPACED, "--set", "crds.create=false", kubeconfig=apiserver.kubeconfig)
    assert "kubectl -n omendb-system rollout status deployment/omendb-operator" in out.stdout
    assert "watches: team-a, team-b" in out.stdout
    assert "omendb-development.yaml" in out.stdout and "kubectl omendb status" in out.stdout


def ensure_namespace(apiserver, name: str) -> None:
    with apiserver.client() as http:
        r = http.post("/api/v1/namespaces", json={"apiVersion": "v1", "kind": "Namespace", "metadata": {
            "name": name, "labels": {"pod-security.kubernetes.io/enforce": "restricted"}}})
        assert r.status_code in (201, 409), r.text


def kubectl(apiserver, *args: str, stdin: str) -> subprocess.CompletedProcess[str]:
    from operator_apiserver import find_bin_dir

    bin_dir = find_bin_dir(("kubectl",))
    out = subprocess.run([str(bin_dir / "kubectl"), f"--kubeconfig={apiserver.kubeconfig}", *args],
                         input=stdin, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, f"kubectl {' '.join(args)}:\n{out.stdout}\n{out.stderr}"
    return out


def server_dry_run(apiserver, manifests: str) -> str:
    out = kubectl(apiserver, "apply", "--server-side", "--dry-run=server", "--field-manager=chart-test",
                  "-f", "-", stdin=manifests)
    # The restricted namespace makes the API server warn about any pod template breaking the profile.
    assert "PodSecurity" not in out.stderr, out.stderr
    return out.stdout


def test_the_dry_run_check_catches_a_pod_breaking_the_restricted_profile(apiserver):
    """The PodSecurity check above is live: the same Deployment without its container security context
    draws the API server's warning."""
    ensure_namespace(apiserver, pkg.NAMESPACE)
    [dep] = by_kind(docs(pkg.template()), "Deployment")
    del dep["spec"]["template"]["spec"]["containers"][0]["securityContext"]
    out = kubectl(apiserver, "apply", "--server-side", "--dry-run=server", "-f", "-", stdin=yaml.safe_dump(dep))
    assert "would violate PodSecurity" in out.stderr, out.stderr


def test_cluster_mode_passes_server_side_dry_run(apiserver):
    ensure_namespace(apiserver, pkg.NAMESPACE)
    out = server_dry_run(apiserver, pkg.template("--set", "serviceMonitor.enabled=true"))
    for what in ("deployment.apps/omendb-operator", "clusterrole.rbac.authorization.k8s.io/omendb-operator",
                 "servicemonitor.monitoring.coreos.com/omendb-operator",
                 "clusterkopfpeering.kopf.dev/omendb-operator", "service/omendb-operator-metrics"):
        assert f"{what} serverside-applied (server dry run)" in out, out


def test_namespaced_mode_passes_server_side_dry_run(apiserver, namespace):
    ensure_namespace(apiserver, pkg.NAMESPACE)
    out = server_dry_run(apiserver, pkg.template("--set", f"watchNamespaces={{{namespace}}}"))
    assert "role.rbac.authorization.k8s.io/omendb-operator serverside-applied (server dry run)" in out, out
    assert "kopfpeering.kopf.dev/omendb-operator serverside-applied (server dry run)" in out, out


def test_install_yaml_passes_server_side_dry_run(apiserver):
    ensure_namespace(apiserver, pkg.NAMESPACE)
    out = server_dry_run(apiserver, pkg.INSTALL.read_text())
    assert "deployment.apps/omendb-operator serverside-applied (server dry run)" in out, out


def test_helm_install_then_upgrade_in_namespaced_mode(apiserver, namespace):
    """A real `helm install` and `helm upgrade` (no controllers run here, so no --wait): the objects exist
    and the upgrade's new value reaches the Deployment."""
    release_ns = namespace + "-op"
    ensure_namespace(apiserver, release_ns)
    # The shared API server has the CRDs already (not Helm's), and other tests may own the aggregated roles.
    common = ["--namespace", release_ns, "--set", f"watchNamespaces={{{namespace}}}",
              "--set", "fullnameOverride=op-" + namespace[-8:],
              "--set", "crds.create=false", "--set", "rbac.aggregateToDefaultRoles=false"]
    helm("install", "op", str(pkg.CHART), *common, kubeconfig=apiserver.kubeconfig)
    helm("upgrade", "op", str(pkg.CHART), *common, "--set", "operator.logLevel=debug",
         kubeconfig=apiserver.kubeconfig)
    name = "op-" + namespace[-8:]
    with apiserver.client() as http:
        dep = http.get(f"/apis/apps/v1/namespaces/{release_ns}/deployments/{name}").json()
        env = {e["name"]: e.get("value") for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert env["OMENDB_OPERATOR_LOG_LEVEL"] == "debug"
        assert dep["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"
        role = http.get(f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/roles/{name}")
        assert role.status_code == 200, role.text
    history = helm("history", "op", "--namespace", release_ns, kubeconfig=apiserver.kubeconfig).stdout
    assert "deployed" in history and "superseded" in history
    helm("uninstall", "op", "--namespace", release_ns, kubeconfig=apiserver.kubeconfig)


def test_helm_upgrade_upgrades_the_crds_and_uninstall_keeps_them(tmp_path):
    """On an API server of its own (the shared one has the CRDs already, not installed by Helm): install,
    then upgrade to a chart whose OmenDB CRD has a new field; the field is accepted afterwards (and refused
    before, with strict field validation); uninstall leaves the CRDs."""
    import shutil

    from operator_apiserver import running_apiserver

    changed = tmp_path / "omendb-operator"
    shutil.copytree(pkg.CHART, changed)
    crd_file = changed / "templates" / "crds" / "omendb.io_omendbs.yaml"
    text = crd_file.read_text()
    anchor = "            properties:\n              version:\n"
    assert anchor in text, "the OmenDB CRD's spec.version moved: update this test's anchor"
    crd_file.write_text(text.replace(anchor, "            properties:\n              chartUpgradeProbe:\n"
                                             "                type: string\n              version:\n", 1))
    obj = {"apiVersion": "omendb.io/v1alpha1", "kind": "OmenDB",
           "metadata": {"name": "probe", "namespace": "default"},
           "spec": {"version": "0.1.0", "chartUpgradeProbe": "x"}}
    with running_apiserver() as server, server.client() as http:
        release = ["--namespace", "default", "--set", "peering.enabled=false"]
        helm("install", "op", str(pkg.CHART), *release, kubeconfig=server.kubeconfig)
        url = "/apis/omendb.io/v1alpha1/namespaces/default/omendbs?fieldValidation=Strict&dryRun=All"
        before = _post_when_served(http, url, obj)
        assert before.status_code == 400 and "chartUpgradeProbe" in before.text, before.text
        helm("upgrade", "op", str(changed), *release, kubeconfig=server.kubeconfig)
        after = _post_when_served(http, url, obj, accepted=True)
        assert after.status_code == 201, after.text
        helm("uninstall", "op", "--namespace", "default", kubeconfig=server.kubeconfig)
        crds = http.get("/apis/apiextensions.k8s.io/v1/customresourcedefinitions").json()["items"]
        assert "omendbs.omendb.io" in {c["metadata"]["name"] for c in crds}, "uninstall deleted the CRD"


def _post_when_served(http, url: str, obj: dict[str, Any], accepted: bool = False):
    """POST once the API server serves the (new) schema: a CRD change takes a moment to reach the handler."""
    import time

    deadline = time.monotonic() + 60
    while True:
        r = http.post(url, json=obj)
        if r.status_code != 404 and (not accepted or r.status_code == 201) or time.monotonic() > deadline:
            return r
        time.sleep(0.3)
