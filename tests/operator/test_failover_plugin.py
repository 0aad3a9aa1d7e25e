"""`kubectl omendb status` shows each pod's role, LSN and lag and the failover state; `kubectl omendb
switchover` asks the operator for a switchover (the annotation the reconcile consumes)."""

from __future__ import annotations

import datetime as dt

from omendb_operator.plans.failover import SWITCHOVER_ANNOTATION
from omendb_operator.plugin import render
from omendb_operator.plugin.cli import main

NOW = dt.datetime(2026, 11, 27, 8, 0, tzinfo=dt.UTC)


def _pod(name: str, role: str) -> dict:
    return {"metadata": {"name": name, "labels": {"role": role}},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}}


def test_status_shows_roles_lsns_lag_and_the_last_failover():
    omendb = {"metadata": {"name": "db", "namespace": "shop"}, "spec": {"replicas": 3},
              "status": {"primaryPod": "db-1", "pods": [
                  {"name": "db-0", "role": "replica", "ready": True, "lsn": 41, "lagLsn": 1, "lagSeconds": 0},
                  {"name": "db-1", "role": "primary", "ready": True, "lsn": 42},
                  {"name": "db-2", "role": "replica", "ready": False, "error": "ConnectError"}],
                  "failover": {"phase": "Idle", "last": {"reason": "failover", "from": "db-0", "to": "db-1",
                                                         "at": "2026-11-27T07:59:00Z", "lsn": 40, "term": 2}}}}
    text = render.status_text(omendb, [_pod("db-0", "replica"), _pod("db-1", "primary"), _pod("db-2", "replica")],
                              [], NOW)
    rows = {line.split()[0]: line.split() for line in text.splitlines() if line.strip().startswith("db-")}
    assert rows["db-0"] == ["db-0", "replica", "yes", "Running", "0", "41", "0s/1", "LSN"]
    assert rows["db-1"] == ["db-1", "primary", "yes", "Running", "0", "42", "-"]
    assert rows["db-2"][5:] == ["-", "-"]
    assert "  Failover:   Idle; last failover db-0 -> db-1 at 2026-11-27T07:59:00Z (LSN 40, term 2)" in text
    omendb["status"]["failover"] = {"phase": "CatchingUp", "reason": "switchover", "from": "db-1", "to": "db-0",
                                    "targetLsn": 42}
    assert "Failover:   switchover CatchingUp: db-1 -> db-0 (LSN 42)" in render.status_text(omendb, [], [], NOW)


def test_switchover_command_sets_the_annotation(apiserver, namespace, capsys):
    with apiserver.client() as http:
        r = http.post(f"/apis/omendb.io/v1alpha1/namespaces/{namespace}/omendbs", json={
            "apiVersion": "omendb.io/v1alpha1", "kind": "OmenDB", "metadata": {"name": "db"},
            "spec": {"replicas": 3}})
        assert r.status_code == 201, r.text
    base = ["--kubeconfig", str(apiserver.kubeconfig), "-n", namespace]
    assert main([*base, "switchover", "db", "--to", "other-1"]) == 1
    assert "not a pod of db" in capsys.readouterr().err
    assert main([*base, "switchover", "db", "--to", "db-2"]) == 0
    assert "switchover of db requested" in capsys.readouterr().out
    with apiserver.client() as http:
        body = http.get(f"/apis/omendb.io/v1alpha1/namespaces/{namespace}/omendbs/db").json()
    assert body["metadata"]["annotations"][SWITCHOVER_ANNOTATION] == "db-2"
    assert main([*base, "switchover", "db"]) == 0  # the most advanced replica: an empty value
    with apiserver.client() as http:
        body = http.get(f"/apis/omendb.io/v1alpha1/namespaces/{namespace}/omendbs/db").json()
    assert body["metadata"]["annotations"][SWITCHOVER_ANNOTATION] == ""
