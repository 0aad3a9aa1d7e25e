"""The Grafana dashboard (dashboards/omendb.json): valid JSON with unique panel ids and the template variables
its queries use, the chart's copy up to date and shipped as a ConfigMap, every PromQL expression accepted by
promtool, and every metric it queries exported by a REAL running `omendb serve` or operator process (scraped
here), so a renamed metric or a typo in the dashboard fails this test."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import chart_tools as pkg  # scripts/chart_tools.py (conftest puts scripts/ on sys.path)
import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from omendb_operator.spec import parse_spec
from omendb_operator.specs import monitoring
from tests.ports import free_port
from tests.server.harness import Server

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "dashboards" / "omendb.json"

# Series Prometheus itself makes for every target; not exported by anyone.
PROMETHEUS_SYNTHETIC = {"up"}
# What a counter or histogram family looks like on the wire (text exposition, as Prometheus stores it).
SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"),
            "summary": ("_sum", "_count", "_created"), "gauge": ("",), "info": ("_info",),
            "unknown": ("",), "stateset": ("",), "gaugehistogram": ("_bucket", "_gsum", "_gcount")}
PROMQL_WORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left",
                "group_right", "inf", "nan", "atan2"}


def load_dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def all_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, including those nested in collapsed rows."""
    out = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def expressions(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target and every query variable."""
    out = [(f"panel {p['id']} {p['title']!r} target {t['refId']}", t["expr"])
           for p in all_panels(dashboard) for t in p.get("targets", [])]
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            out.append((f"variable {var['name']}", query))
    return out


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression (or a Grafana label_values() query) selects.

    A small lexer, not a full parser: label matchers, range selectors, strings and grouping labels are removed,
    then every identifier that is not a function call or a keyword is a metric name. promtool checks the
    syntax separately (test_promql_is_valid), so this only has to read valid expressions."""
    match = re.fullmatch(r"\s*label_values\(\s*([a-zA-Z_:][\w:]*)?.*\)\s*", expr, re.S)
    if match:
        return {match.group(1)} if match.group(1) else set()
    text = re.sub(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'', " ", expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for m in re.finditer(r"(?<![\w.$])([a-zA-Z_:][\w:]*)(\s*\()?", text):
        word, call = m.group(1), m.group(2)
        if call or word.lower() in PROMQL_WORDS:
            continue
        names.add(word)
    return names


def exported_names(exposition: str) -> set[str]:
    """Every series name a scrape of this exposition gives Prometheus, from the families it declares
    (a labelled family with no child yet still declares its name and type)."""
    names = set()
    for family in text_string_to_metric_families(exposition):
        names |= {family.name + suffix for suffix in SUFFIXES[family.type]}
        names |= {sample.name for sample in family.samples}
    return names


# ---- the file itself


def test_dashboard_is_valid_json_with_unique_panel_ids():
    dashboard = load_dashboard()
    ids = [p["id"] for p in all_panels(dashboard)]
    assert len(ids) == len(set(ids)), f"duplicate panel ids: {sorted(i for i in ids if ids.count(i) > 1)}"
    assert dashboard["uid"] and dashboard["title"] == "OmenDB"
    titles = [p["title"] for p in all_panels(dashboard)]
    for want in ("Pods up", "Read latency p50 / p95 / p99", "Failed requests", "Memory", "WAL size",
                 "WAL growth over 1h", "Index size", "Replication lag (seconds)", "Replication lag (LSNs)",
                 "Since last backup", "Read rate"):
        assert want in titles, f"no panel {want!r}"


def test_panels_fit_the_grid_without_overlapping():
    """Grafana's grid is 24 columns wide; overlapping panels are pushed around and the layout is lost."""
    cells: dict[tuple[int, int], str] = {}
    for panel in all_panels(load_dashboard()):
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["w"] > 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']!r} overlaps {cells[(x, y)]!r}"
                cells[(x, y)] = panel["title"]


def test_panels_use_the_datasource_variable_and_defined_variables():
    dashboard = load_dashboard()
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert {"namespace", "instance", "pod"} <= variables.keys()
    for panel in all_panels(dashboard):
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        for target in panel["targets"]:
            assert target.get("datasource", panel["datasource"]) == panel["datasource"], panel["title"]
    builtin = {"__rate_interval", "__interval", "__range"}
    for where, expr in expressions(dashboard):
        for name in re.findall(r"\$\{?(\w+)", expr):
            assert name in variables or name in builtin, f"{where}: ${name} is not a dashboard variable"
    for where, expr in expressions(dashboard):
        if where.startswith("panel") and "omendb_operator_" not in expr:
            # Every per-database query is scoped to the chosen OmenDB, so two databases never mix.
            assert '$namespace' in expr and '$instance' in expr, f"{where}: not scoped to $namespace/$instance"


def test_the_metric_name_lexer():
    assert metric_names('histogram_quantile(0.95, sum by (le, pod) (rate(a_bucket{x="b{c}"}[5m]))) > 1e9') == {
        "a_bucket"}
    assert metric_names("time() - max(kube_x{cronjob=~\"$instance-(a|b)\"}) / on (pod) group_left b") == {
        "kube_x", "b"}
    assert metric_names('label_values(omendb_build_info{namespace="$namespace"}, pod)') == {"omendb_build_info"}
    assert metric_names("sum(up{job=\"omendb\"}) and bool omendb_lsn offset 5m") == {"up", "omendb_lsn"}


# ---- the chart's copy and the ConfigMap


def test_chart_copy_of_the_dashboard_is_current():
    assert pkg.stale_chart_dashboards() == [], "run `make chart-crds`: the chart's dashboards/ is stale"


def helm(*args: str, kubeconfig: Path | None = None) -> str:
    argv = [str(pkg.helm()), *args] + (["--kubeconfig", str(kubeconfig)] if kubeconfig else [])
    out = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, f"helm {' '.join(args)}:\n{out.stdout}\n{out.stderr}"
    return out.stdout


def configmaps(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d and d["kind"] == "ConfigMap"]


def test_chart_ships_the_dashboard_as_a_configmap_when_enabled():
    assert configmaps(pkg.template()) == [], "the dashboard must be off by default"
    assert "grafana_dashboard" not in pkg.INSTALL.read_text(), "manifests/install.yaml renders the defaults"
    [cm] = configmaps(pkg.template("--set", "grafanaDashboard.enabled=true"))
    assert cm["metadata"]["namespace"] == pkg.NAMESPACE
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(cm["data"]["omendb.json"]) == load_dashboard()
    [cm] = configmaps(pkg.template("--set", "grafanaDashboard.enabled=true,grafanaDashboard.namespace=monitoring",
                                   "--set", "grafanaDashboard.labels.grafana_dashboard=null",
                                   "--set", "grafanaDashboard.labels.dashboards=omendb",
                                   "--set", "grafanaDashboard.annotations.grafana_folder=Databases"))
    assert cm["metadata"]["namespace"] == "monitoring"
    assert cm["metadata"]["labels"]["dashboards"] == "omendb" and "grafana_dashboard" not in cm["metadata"]["labels"]
    assert cm["metadata"]["annotations"] == {"grafana_folder": "Databases"}


def test_helm_lint_strict_is_clean_with_the_dashboard():
    out = helm("lint", "--strict", str(pkg.CHART), "--set", "grafanaDashboard.enabled=true")
    assert "[WARNING]" not in out and "[ERROR]" not in out, out


def test_bad_dashboard_values_are_refused_with_the_key_named():
    for args, key in ((["--set", "grafanaDashboard.namespace=Bad_NS"], "grafanaDashboard.namespace"),
                      (["--set", "grafanaDashboard.enable=true"], "enable")):
        out = subprocess.run([str(pkg.helm()), "template", "x", str(pkg.CHART), *args], capture_output=True,
                             text=True, timeout=120)
        assert out.returncode != 0 and key in out.stderr, out.stderr


def test_the_configmap_passes_server_side_dry_run(apiserver, namespace):
    from operator_apiserver import find_bin_dir

    manifest = pkg.template("--set", f"grafanaDashboard.enabled=true,grafanaDashboard.namespace={namespace}")
    [cm] = configmaps(manifest)
    kubectl = find_bin_dir(("kubectl",)) / "kubectl"
    out = subprocess.run([str(kubectl), f"--kubeconfig={apiserver.kubeconfig}", "apply", "--server-side",
                          "--dry-run=server", "-f", "-"], input=yaml.safe_dump(cm), capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "configmap/omendb-operator-dashboard serverside-applied (server dry run)" in out.stdout, out.stdout


# ---- the queries against what really runs


def test_promql_is_valid(tmp_path):
    """promtool (built by the e2e harness) parses every expression, with Grafana's variables filled in."""
    from operator_apiserver import find_bin_dir

    fill = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h", "$namespace": "ns",
            "$instance": "db", "$pod": ".*"}
    rules = []
    for i, (where, expr) in enumerate(expressions(load_dashboard())):
        if where.startswith("variable"):
            continue  # label_values() is Grafana's, not PromQL; its metric is checked below
        for var, value in fill.items():
            expr = expr.replace(var, value)
        rules.append({"record": f"dashboard:expr_{i}", "expr": expr})
    path = tmp_path / "dashboard-rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    promtool = find_bin_dir(("promtool",)) / "promtool"
    out = subprocess.run([str(promtool), "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, f"{out.stdout}\n{out.stderr}"
    assert f"SUCCESS: {len(rules)} rules found" in out.stdout, out.stdout


@pytest.fixture(scope="module")
def engine_metrics(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A scrape of a real `omendb serve` after reads, writes, a failure, an auth failure and a retrain."""
    from tests.server.harness import htpasswd_bcrypt

    workdir = tmp_path_factory.mktemp("dashboard-engine")
    (workdir / "users.htpasswd").write_text(htpasswd_bcrypt("admin", "dashboard-pw") + "\n")
    server = Server(workdir, {"security": {"auth_enabled": True, "htpasswd_file": str(workdir / "users.htpasswd"),
                                           "admin_users": ["admin"]}})
    with server:
        server.start()
        with httpx.Client(base_url=server.url, auth=("admin", "dashboard-pw"), timeout=30) as http:
            assert http.post("/v1/records", json={"records": [{"key": k, "value": k / 2} for k in
                                                              range(100)]}).status_code == 200
            assert http.get("/v1/records/7").status_code == 200
            assert http.post("/v1/records/lookup", json={"keys": [1, 2]}).status_code == 200
            assert http.get("/v1/records", params={"start": 0, "end": 10}).status_code == 200
            assert http.post("/v1/records/delete", json={"keys": [1]}).status_code == 200
            assert http.post("/admin/retrain-index").status_code == 200
            assert http.post("/v1/records", json={"records": [{"key": 1, "value": "x"}]}).status_code == 422
            assert httpx.get(f"{server.url}/v1/stats", timeout=10).status_code == 401
        yield httpx.get(server.metrics_url, timeout=10).text


@pytest.fixture(scope="module")
def operator_metrics(apiserver, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A scrape of a real operator process (omendb_operator.main) running against the test API server."""
    workdir = tmp_path_factory.mktemp("dashboard-operator")
    with apiserver.client() as http:
        r = http.post("/api/v1/namespaces", json={"apiVersion": "v1", "kind": "Namespace",
                                                  "metadata": {"name": "dashboard-test"}})
        assert r.status_code in (201, 409), r.text
    port = free_port()
    env = {**os.environ, "KUBECONFIG": str(apiserver.kubeconfig), "OMENDB_OPERATOR_PORT": str(port),
           "OMENDB_OPERATOR_PEERING": "none", "OMENDB_OPERATOR_NAMESPACES": "dashboard-test"}
    log_path = workdir / "operator.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "omendb_operator.main"], env=env, stdout=log,
                                stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log_path.read_text()[-3000:]
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "operator not ready:\n" + log_path.read_text()[-3000:]
            time.sleep(0.3)
        yield httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def alert_metric_names() -> set[str]:
    """Metrics the operator's own PrometheusRule relies on (kube-state-metrics' for OmenDBBackupFailing)."""
    rules = monitoring.alert_rules("db", "ns", parse_spec({}))
    return set().union(*(metric_names(r["expr"]) for r in rules))


def test_every_dashboard_metric_is_exported(engine_metrics, operator_metrics):
    engine, operator = exported_names(engine_metrics), exported_names(operator_metrics)
    assert {"omendb_query_duration_seconds_bucket", "omendb_replication_lag_seconds",
            "omendb_replication_lag_lsn", "omendb_wal_size_bytes"} <= engine, sorted(engine)
    assert "omendb_operator_reconciles_total" in operator, sorted(operator)
    # kube-state-metrics series are allowed only where the operator's alerts already depend on them.
    kube_state = {n for n in alert_metric_names() if n.startswith("kube_")}
    known = engine | operator | PROMETHEUS_SYNTHETIC | kube_state
    missing = [f"{where}: {name}" for where, expr in expressions(load_dashboard())
               for name in sorted(metric_names(expr)) if name not in known]
    assert not missing, "metrics no running component exports:\n" + "\n".join(missing)


def test_a_typo_in_a_metric_name_is_caught(engine_metrics):
    known = exported_names(engine_metrics)
    assert metric_names("rate(omendb_searches_total[5m])") <= known
    assert not metric_names("rate(omendb_serches_total[5m])") <= known
