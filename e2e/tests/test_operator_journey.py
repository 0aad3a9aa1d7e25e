"""The operator's journey in the local cluster (issue 5's "Done when", issue 10's in-cluster example).

The operator runs IN the cluster from its image (`omendb/omendb-operator:0.1.0`), installed from
crds/, manifests/rbac.yaml, manifests/peering.yaml and e2e/manifests/operator.yaml. One OmenDB from
manifests/samples/omendb-development.yaml goes through the steps below, in file order (pytest runs a
module's tests in the order they are written; each step builds on the state the previous one left):
Ready -> docs/client.md's in-cluster example writes and reads over TLS with auth -> backups by hand
from the CronJobs -> PrometheusRule and ServiceMonitor -> scaled to 3 pods -> a hand edit put back ->
a resync with nothing to change writes nothing -> deleted: children gone, data volumes kept.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e.kube import Kube
from e2e.operator_deploy import OPERATOR_NS
from e2e.operator_deploy import operator_pod as _operator_pod

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "manifests" / "samples" / "omendb-development.yaml"

# Children named after the OmenDB (docs/operator.md, "What one OmenDB named NAME owns").
OWNED = {
    "configmap": ["{n}-config"],
    "secret": ["{n}-users", "{n}-ca", "{n}-tls"],
    "service": ["{n}", "{n}-ro", "{n}-headless"],
    "statefulset": ["{n}"],
    "poddisruptionbudget": ["{n}"],
    "cronjob": ["{n}-backup-full", "{n}-backup-incremental", "{n}-backup-cleanup"],
    "prometheusrule": ["{n}"],
    "servicemonitor": ["{n}"],
}
GUIDE_ALERTS = {"OmenDBDown", "HighQueryLatency", "HighMemoryUsage", "WALSizeGrowth", "OmenDBBackupFailing",
                "OmenDBCertificateExpiringSoon", "OmenDBWALArchiveFailing"}


def day2_sample(name: str, **spec: Any) -> dict[str, Any]:
    """The development sample named `name` for a day-2 journey: no backups and no monitoring objects (those
    journeys test neither), with `spec`'s keys replaced."""
    sample: dict[str, Any] = yaml.safe_load(SAMPLE.read_text())
    sample["metadata"]["name"] = name
    sample["spec"].update(backup={"enabled": False}, monitoring={"prometheusRule": False, "serviceMonitor": False},
                          **spec)
    return sample


@dataclass(frozen=True)
class Db:
    namespace: str
    name: str


@pytest.fixture(scope="module")
def db(kube: Kube, operator: str, journey_namespace: str) -> Iterator[Db]:
    """The development sample, applied as its comment says, in a namespace of its own."""
    sample = yaml.safe_load(SAMPLE.read_text())
    d = Db(journey_namespace, sample["metadata"]["name"])
    kube.kubectl("apply", "-n", d.namespace, "-f", str(SAMPLE))
    yield d


def _names(kind: str, d: Db) -> list[str]:
    return [n.format(n=d.name) for n in OWNED[kind]]


def _pods(kube: Kube, d: Db) -> list[dict[str, Any]]:
    out = kube.kubectl("-n", d.namespace, "get", "pods", "-l", f"app.kubernetes.io/instance={d.name}",
                       "-l", "app.kubernetes.io/component=database", "-o", "json").stdout
    pods: list[dict[str, Any]] = json.loads(out)["items"]
    return pods


def _ready(pod: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod.get("status", {}).get("conditions", []))


def test_development_sample_reaches_ready_with_every_child(kube: Kube, db: Db) -> None:
    # Exactly the sample's documented command.
    kube.kubectl("wait", "-n", db.namespace, "--for=condition=Ready", f"omendb/{db.name}", "--timeout=300s",
                 timeout=320)
    for kind in OWNED:
        for child in _names(kind, db):
            obj = kube.get(db.namespace, kind, child)
            refs = obj["metadata"].get("ownerReferences", [])
            assert [r["kind"] for r in refs] == ["OmenDB"], f"{kind}/{child} owners: {refs}"
    odb = kube.get(db.namespace, "omendb", db.name)
    status = odb["status"]
    assert status["phase"] == "Ready" and status["readyReplicas"] == 1
    assert status["observedGeneration"] == odb["metadata"]["generation"]
    conditions = {c["type"]: c["status"] for c in status["conditions"]}
    assert conditions["TLSReady"] == "True" and conditions["MonitoringReady"] == "True", conditions
    assert not odb["metadata"].get("finalizers"), "the operator must add no finalizer"
    columns = kube.kubectl("-n", db.namespace, "get", "odb", db.name).stdout.split("\n")[0].split()
    assert columns == ["NAME", "VERSION", "REPLICAS", "READY", "PHASE", "PRIMARY", "AGE"]


def _client_example(d: Db) -> list[dict[str, Any]]:
    """docs/client.md's in-cluster example (the first yaml block under "## In the cluster"), for the
    OmenDB `prod` in namespace `shop` there, pointed at this journey's OmenDB and namespace."""
    doc = (ROOT / "docs" / "client.md").read_text()
    section = doc.split("## In the cluster", 1)[1]
    block = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert block, "docs/client.md lost its in-cluster example"
    text = re.sub(r"\bprod\b", d.name, block.group(1))
    text = re.sub(r"\bshop\b", d.namespace, text)
    return [doc for doc in yaml.safe_load_all(text) if doc]


def test_client_in_cluster_example_writes_and_reads_over_tls_with_auth(kube: Kube, db: Db) -> None:
    docs = _client_example(db)
    assert [d["kind"] for d in docs] == ["ConfigMap", "Deployment"]
    kube.apply(db.namespace, *docs)
    kube.kubectl("-n", db.namespace, "rollout", "status", "deployment/inventory-app", "--timeout=180s",
                 timeout=200)
    pods = json.loads(kube.kubectl("-n", db.namespace, "get", "pods", "-l", "app=inventory-app",
                                   "-o", "json").stdout)["items"]
    assert len(pods) == 2

    def logged(pod: str) -> str | None:
        out = kube.kubectl("-n", db.namespace, "logs", pod).stdout
        # "wrote LSN 7; read back 1000 of 1000; 1000 records": written through https://NAME:3000,
        # read back through https://NAME-ro:3000, as the generated admin user, verified against NAME-ca.
        return out if re.search(r"wrote LSN \d+; read back 1000 of 1000; 1000 records", out) else None

    for name in (str(p["metadata"]["name"]) for p in pods):
        kube.wait_until(f"{name} to write and read", lambda: logged(name), 120, interval=2)  # noqa: B023


def test_backup_cronjobs_run_by_hand_against_the_running_primary(kube: Kube, db: Db) -> None:
    crons = {c: kube.get(db.namespace, "cronjob", c) for c in _names("cronjob", db)}
    assert crons[f"{db.name}-backup-full"]["spec"]["schedule"] == "0 1 * * 0"
    assert crons[f"{db.name}-backup-incremental"]["spec"]["schedule"] == "0 1 * * 1-6"
    for cron in crons.values():
        assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    for kind in ("full", "incremental"):
        job = f"by-hand-{kind}"
        kube.kubectl("-n", db.namespace, "create", "job", f"--from=cronjob/{db.name}-backup-{kind}", job)
        outcome = kube.job_outcome(db.namespace, job, timeout=240)
        logs = kube.kubectl("-n", db.namespace, "logs", f"job/{job}", check=False)
        assert outcome == "Complete", f"{job}: {outcome}\n{logs.stdout}{logs.stderr}"


def test_prometheus_rule_and_service_monitor(kube: Kube, db: Db, tmp_path: Path) -> None:
    rule = kube.get(db.namespace, "prometheusrule", db.name)
    alerts = {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r}
    assert alerts == GUIDE_ALERTS
    # The rules are valid for Prometheus itself (promtool is built with the cluster's binaries).
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    res = subprocess.run([str(kube.bin_dir / "promtool"), "check", "rules", str(rules_file)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    monitor = kube.get(db.namespace, "servicemonitor", db.name)
    endpoints = monitor["spec"]["endpoints"]
    assert [e.get("port") for e in endpoints] == ["metrics"]


def test_scaled_to_three_pods_all_ready(kube: Kube, db: Db) -> None:
    kube.kubectl("-n", db.namespace, "scale", f"omendb/{db.name}", "--replicas=3")
    kube.wait_until("3 ready database pods", lambda: len([p for p in _pods(kube, db) if _ready(p)]) == 3, 300,
                    interval=2)
    kube.kubectl("wait", "-n", db.namespace, "--for=condition=Ready", f"omendb/{db.name}", "--timeout=120s",
                 timeout=140)
    status = kube.get(db.namespace, "omendb", db.name)["status"]
    assert status["replicas"] == 3 and status["readyReplicas"] == 3, status
    assert sorted(p["metadata"]["name"] for p in _pods(kube, db)) == [f"{db.name}-{i}" for i in range(3)]


def test_hand_edit_of_a_child_is_put_back(kube: Kube, db: Db) -> None:
    cron = f"{db.name}-backup-full"
    kube.kubectl("-n", db.namespace, "patch", "cronjob", cron, "--type=merge",
                 "-p", json.dumps({"spec": {"schedule": "5 5 * * *"},
                                   "metadata": {"labels": {"team": "shop"}}}))
    kube.wait_until(f"{cron}'s schedule put back",
                    lambda: kube.get(db.namespace, "cronjob", cron)["spec"]["schedule"] == "0 1 * * 0", 120)
    # A field the operator does not set is left alone.
    assert kube.get(db.namespace, "cronjob", cron)["metadata"]["labels"]["team"] == "shop"
    config = f"{db.name}-config"
    before = kube.get(db.namespace, "configmap", config)["data"]
    kube.kubectl("-n", db.namespace, "patch", "configmap", config, "--type=merge",
                 "-p", json.dumps({"data": {"omendb.toml": "# edited by hand\n"}}))
    kube.wait_until(f"{config} put back", lambda: kube.get(db.namespace, "configmap", config)["data"] == before, 120)


def _operator_metrics(kube: Kube) -> dict[str, float]:
    pod = _operator_pod(kube)
    text = kube.kubectl("get", "--raw", f"/api/v1/namespaces/{OPERATOR_NS}/pods/{pod}:8080/proxy/metrics").stdout
    sums: dict[str, float] = {}
    for line in text.splitlines():
        m = re.match(r"(omendb_operator_(?:api_writes|reconciles)_total)(?:\{[^}]*\})? ([0-9.e+]+)$", line)
        if m:
            sums[m.group(1)] = sums.get(m.group(1), 0.0) + float(m.group(2))
    return sums


def test_noop_resync_makes_no_writes(kube: Kube, db: Db) -> None:
    kube.kubectl("wait", "-n", db.namespace, "--for=condition=Ready", f"omendb/{db.name}", "--timeout=120s",
                 timeout=140)
    # Let the previous steps' reconciles settle: two reconciles in a row with no write in between.
    def settled() -> tuple[dict[str, float], dict[str, float]] | None:
        first = _operator_metrics(kube)
        deadline = time.monotonic() + 90  # the e2e operator resyncs every 20 s
        while time.monotonic() < deadline:
            time.sleep(2)
            now = _operator_metrics(kube)
            if now["omendb_operator_reconciles_total"] >= first["omendb_operator_reconciles_total"] + 2:
                return (first, now) if now.get("omendb_operator_api_writes_total", 0.0) == \
                    first.get("omendb_operator_api_writes_total", 0.0) else None
        return None

    first, now = kube.wait_until("two reconciles that write nothing", settled, 300, interval=0)
    assert now["omendb_operator_reconciles_total"] - first["omendb_operator_reconciles_total"] >= 2
    assert now.get("omendb_operator_api_writes_total", 0.0) == first.get("omendb_operator_api_writes_total", 0.0)
    # The writes counter is live: it counted the children created, and the hand edits put back.
    assert now["omendb_operator_api_writes_total"] >= sum(len(v) for v in OWNED.values())


def test_delete_removes_children_and_keeps_data_volumes(kube: Kube, db: Db) -> None:
    kube.kubectl("-n", db.namespace, "delete", "omendb", db.name, "--wait=true", timeout=120)

    def remaining() -> list[str]:
        left = []
        for kind in OWNED:
            for child in _names(kind, db):
                if kube.get_or_none(db.namespace, kind, child) is not None:
                    left.append(f"{kind}/{child}")
        return left

    kube.wait_until("every child garbage-collected", lambda: not remaining(), 180, interval=2)
    kube.wait_until("database pods gone", lambda: not _pods(kube, db), 180, interval=2)
    claims = {c["metadata"]["name"] for c in json.loads(
        kube.kubectl("-n", db.namespace, "get", "pvc", "-o", "json").stdout)["items"]}
    expected = {f"{vol}-{db.name}-{i}" for vol in ("data", "wal") for i in range(3)}
    assert expected <= claims, f"data volumes lost: {expected - claims}"
    # The sample sets backup.volume.deleteOnDelete: development backups go with it.
    kube.wait_until(f"{db.name}-backups deleted",
                    lambda: kube.get_or_none(db.namespace, "pvc", f"{db.name}-backups") is None, 120)
