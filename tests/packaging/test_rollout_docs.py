"""`kubectl rollout status statefulset/...` cannot follow the operator's rollouts (the StatefulSet is
OnDelete); the docs use `kubectl wait omendb/NAME --for=condition=Ready` instead. Checked here: no doc
command waits on a StatefulSet rollout, the real kubectl refuses one against the operator's StatefulSet,
and the real kubectl wait does not return on a Ready condition left from the previous generation."""

from __future__ import annotations

import re
import subprocess
from typing import Any

import doc_commands as dc
import pytest
from kubernetes.config import new_client_from_config
from operator_apiserver import find_bin_dir

from omendb_operator.controller.kube import Kube
from omendb_operator.controller.reconcile import Reconciler

STS_ROLLOUT = re.compile(r"rollout\s+status\s+(-\S+\s+)*(statefulsets?|sts)(/|\s)", re.IGNORECASE)


@pytest.fixture(scope="module")
def kube(apiserver):
    return Kube(new_client_from_config(config_file=str(apiserver.kubeconfig)))


def _kubectl(apiserver: Any, *args: str) -> subprocess.CompletedProcess[str]:
    kubectl = find_bin_dir(("kubectl",)) / "kubectl"
    return subprocess.run([str(kubectl), "--kubeconfig", str(apiserver.kubeconfig), *args], capture_output=True,
                          text=True, timeout=60)


def test_no_doc_command_waits_on_a_statefulset_rollout():
    found = []
    for path in dc.doc_files():
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if STS_ROLLOUT.search(line):
                found.append(f"{path.relative_to(dc.ROOT)}:{number}: {line.strip()}")
    assert not found, "kubectl rollout status cannot follow an OnDelete StatefulSet:\n" + "\n".join(found)


def test_rollout_status_is_refused_and_kubectl_wait_follows_the_generation(apiserver, namespace, kube):
    doc = {"apiVersion": "omendb.io/v1alpha1", "kind": "OmenDB", "metadata": {"name": "prod"},
           "spec": {"auth": {"enabled": False}, "tls": {"enabled": False}}}
    with apiserver.client() as http:
        r = http.post(f"/apis/omendb.io/v1alpha1/namespaces/{namespace}/omendbs", json=doc)
        assert r.status_code == 201, r.text
    Reconciler(kube).reconcile(namespace, "prod")
    sts = kube.get("apps/v1", "StatefulSet", "prod", namespace)
    assert sts["spec"]["updateStrategy"]["type"] == "OnDelete"
    refused = _kubectl(apiserver, "rollout", "status", "statefulset/prod", "-n", namespace, "--timeout=5s")
    assert refused.returncode != 0
    assert "only available for RollingUpdate" in refused.stderr

    # The operator's Ready condition for the current generation: the documented wait returns.
    body = kube.get("omendb.io/v1alpha1", "OmenDB", "prod", namespace)
    generation = body["metadata"]["generation"]

    def set_ready(observed: int) -> None:
        conditions = [{"type": "Ready", "status": "True", "reason": "AllReplicasReady", "message": "1/1",
                       "observedGeneration": observed, "lastTransitionTime": "2026-01-01T00:00:00Z"}]
        kube.patch_status("omendb.io/v1alpha1", "OmenDB", "prod", namespace, {"conditions": conditions})

    set_ready(generation)
    ok = _kubectl(apiserver, "wait", "-n", namespace, "omendb/prod", "--for=condition=Ready", "--timeout=10s")
    assert ok.returncode == 0, ok.stderr
    # A spec change (a new generation) before the operator has looked at it: Ready is the old rollout's, and
    # kubectl wait does not take it.
    kube.patch("omendb.io/v1alpha1", "OmenDB", "prod", namespace, {"spec": {"replicas": 2}})
    stale = _kubectl(apiserver, "wait", "-n", namespace, "omendb/prod", "--for=condition=Ready", "--timeout=3s")
    assert stale.returncode != 0, stale.stdout
    set_ready(generation + 1)
    ok = _kubectl(apiserver, "wait", "-n", namespace, "omendb/prod", "--for=condition=Ready", "--timeout=10s")
    assert ok.returncode == 0, ok.stderr
