"""Argo CD health checks (deploy/argocd/omendb.io/KIND/health.lua, issue 18 item 2) on live objects: the
scripts run in real Lua 5.4 (lupa, scripts/argocd_health.py) on what `kubectl get` returns while one OmenDB
(`hc`, 1 pod) is created -> Ready -> backed up -> hibernated, and on a backup and a restore of an OmenDB that
does not exist (they fail at once). tests/operator/test_argocd_health.py covers every branch on statuses made
by the operator's builders; this file checks that the live objects take the same branches."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from e2e.kube import Kube
from e2e.tests.test_backup_restore import _omendb, _wait_phase, _wait_ready

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import argocd_health  # noqa: E402

NAME = "hc"


def _health(kube: Kube, ns: str, kind: str, name: str) -> tuple[str, str]:
    result = argocd_health.health(kind, kube.get(ns, kind.lower(), name))
    return result["status"], result["message"]


def _apply(kube: Kube, ns: str, kind: str, name: str, spec: dict[str, Any]) -> None:
    kube.apply(ns, {"apiVersion": "omendb.io/v1alpha1", "kind": kind, "metadata": {"name": name}, "spec": spec})


def test_omendb_health_through_its_life(kube: Kube, operator: str, journey_namespace: str) -> None:
    ns = journey_namespace
    kube.apply(ns, _omendb(NAME))
    assert _health(kube, ns, "OmenDB", NAME)[0] == "Progressing"  # no status yet, or Creating
    _wait_ready(kube, ns, NAME)
    assert _health(kube, ns, "OmenDB", NAME) == ("Healthy", "1/1 pods are ready")

    _apply(kube, ns, "OmenDBBackup", "hc-full", {"cluster": {"name": NAME}, "type": "full"})
    assert _health(kube, ns, "OmenDBBackup", "hc-full")[0] == "Progressing"
    backup = _wait_phase(kube, ns, "omendbbackup", "hc-full", ("Succeeded", "Failed"))
    assert backup["status"]["phase"] == "Succeeded", backup["status"]
    assert _health(kube, ns, "OmenDBBackup", "hc-full")[0] == "Healthy"

    kube.kubectl("-n", ns, "patch", "omendb", NAME, "--type=merge", "-p", json.dumps({"spec": {"hibernate": True}}))
    kube.wait_until("Hibernated", lambda: (kube.get(ns, "omendb", NAME).get("status") or {}).get(
        "phase") == "Hibernated", 180, interval=2)
    status, message = _health(kube, ns, "OmenDB", NAME)
    assert status == "Suspended" and "spec.hibernate is true" in message


def test_backup_and_restore_of_a_missing_omendb_are_degraded(kube: Kube, operator: str,
                                                             journey_namespace: str) -> None:
    ns = journey_namespace
    _apply(kube, ns, "OmenDBBackup", "orphan", {"cluster": {"name": "nowhere"}, "type": "full"})
    _apply(kube, ns, "OmenDBRestore", "orphan", {"cluster": {"name": "nowhere"}})
    for kind in ("OmenDBBackup", "OmenDBRestore"):
        _wait_phase(kube, ns, kind.lower(), "orphan", ("Failed",), timeout=120)
        status, message = _health(kube, ns, kind, "orphan")
        assert status == "Degraded" and "does not exist" in message, (kind, status, message)
