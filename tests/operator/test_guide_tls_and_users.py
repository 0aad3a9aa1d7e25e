"""The operations guide's Security Operations commands, literally, against a real kube-apiserver and the
operator's reconcile: `kubectl create secret tls` (no ca.crt, a self-signed certificate without the
Service names) and `kubectl create configmap omendb-users` (a ConfigMap as the htpasswd source). Each
is reported with a condition that names what is missing and the command that fixes it; the fixes given
in the messages are then run as they are written and the conditions clear."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import bcrypt
import pytest
from kubernetes.config import new_client_from_config
from operator_apiserver import find_bin_dir

from omendb_operator.controller.kube import Kube
from omendb_operator.controller.reconcile import Reconciler

BASE = "/apis/omendb.io/v1alpha1"
GUIDE_OPENSSL = "yes '' | openssl req -new -x509 -keyout server.key -out server.pem -days 365 -nodes"


@pytest.fixture(scope="module")
def kube(apiserver):
    return Kube(new_client_from_config(config_file=str(apiserver.kubeconfig)))


def _kubectl(apiserver: Any, command: str, cwd: Path) -> str:
    """Run a kubectl command line (a shell line, pipes allowed) against the test apiserver."""
    bin_dir = find_bin_dir(("kubectl",))
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "KUBECONFIG": str(apiserver.kubeconfig)}
    result = subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def _create(apiserver: Any, namespace: str, spec: dict[str, Any]) -> None:
    doc = {"apiVersion": "omendb.io/v1alpha1", "kind": "OmenDB", "metadata": {"name": "prod"}, "spec": spec}
    with apiserver.client() as http:
        r = http.post(f"{BASE}/namespaces/{namespace}/omendbs", json=doc, params={"fieldValidation": "Strict"})
        assert r.status_code == 201, r.text


def _conditions(kube: Kube, namespace: str) -> dict[str, dict[str, Any]]:
    body = kube.get("omendb.io/v1alpha1", "OmenDB", "prod", namespace)
    return {c["type"]: c for c in body["status"]["conditions"]}


def _commands(message: str) -> list[str]:
    return re.findall(r"`([^`]+)`", message)


def test_guide_tls_secret_without_ca_crt_and_names(apiserver, namespace, kube, tmp_path):
    subprocess.run(["bash", "-c", GUIDE_OPENSSL], cwd=tmp_path, check=True, capture_output=True, timeout=60)
    # The guide's command, with the test's namespace.
    _kubectl(apiserver, f"kubectl create secret tls omendb-tls --cert=server.pem --key=server.key -n {namespace}",
             tmp_path)
    _create(apiserver, namespace, {"tls": {"generate": False, "secretName": "omendb-tls"}})
    Reconciler(kube).reconcile(namespace, "prod")
    conds = _conditions(kube, namespace)
    degraded = conds["Degraded"]
    assert (degraded["status"], degraded["reason"]) == ("True", "TLSSecretIncomplete"), degraded
    assert "Secret omendb-tls (spec.tls.secretName) has no key ca.crt" in degraded["message"]
    assert conds["TLSReady"]["reason"] == "CertificateIncomplete"
    assert f"prod.{namespace}.svc" in conds["TLSReady"]["message"]
    assert f"*.prod-headless.{namespace}.svc" in conds["TLSReady"]["message"]

    # The fix, as the message writes it (CERT and KEY are the guide's files).
    fix = next(c for c in _commands(degraded["message"]) if c.startswith("kubectl create secret generic"))
    _kubectl(apiserver, fix.replace("=CERT", "=server.pem").replace("=KEY", "=server.key"), tmp_path)
    secret = kube.get("v1", "Secret", "omendb-tls", namespace)
    assert secret["type"] == "kubernetes.io/tls" and "ca.crt" in secret["data"]
    Reconciler(kube).reconcile(namespace, "prod")
    conds = _conditions(kube, namespace)
    # ca.crt is there now; the missing names remain a warning, not a degradation.
    assert (conds["Degraded"]["status"], conds["Degraded"]["reason"]) == ("False", "AsExpectedWithWarnings")
    assert f"prod.{namespace}.svc" in conds["Degraded"]["message"]
    assert (conds["TLSReady"]["status"], conds["TLSReady"]["reason"]) == ("True", "CertificateNamesMissing")
    # The StatefulSet now mounts ca.crt for replicas, like a generated certificate's.
    sts = kube.get("apps/v1", "StatefulSet", "prod", namespace)
    assert "tls/ca.crt" in str(sts["spec"]["template"]["spec"]["volumes"])


def test_guide_users_configmap_is_refused_with_the_command_to_move_it(apiserver, namespace, kube, tmp_path):
    users = tmp_path / "etc" / "omendb" / "users.htpasswd"
    users.parent.mkdir(parents=True)
    users.write_text("alice:$2y$" + bcrypt.hashpw(b"alice-pw", bcrypt.gensalt(rounds=5)).decode()[4:] + "\n")
    # The guide's command, with the file under tmp_path and the test's namespace.
    _kubectl(apiserver, f"kubectl create configmap omendb-users --from-file={users} -n {namespace}", tmp_path)
    _create(apiserver, namespace, {"auth": {"htpasswdSecretName": "omendb-users"}})
    Reconciler(kube).reconcile(namespace, "prod")
    degraded = _conditions(kube, namespace)["Degraded"]
    assert (degraded["status"], degraded["reason"]) == ("True", "ReconcileError")
    assert "names omendb-users, which is a ConfigMap, not a Secret" in degraded["message"]
    # The three commands in the message, run as written, move the users into a Secret.
    commands = _commands(degraded["message"])
    assert [c.split()[1] for c in commands if c.startswith("kubectl ")][-3:] == ["get", "create", "delete"]
    for command in [c for c in commands if c.startswith("kubectl ")][-3:]:
        _kubectl(apiserver, command, tmp_path)
    assert kube.get("v1", "ConfigMap", "omendb-users", namespace) is None
    Reconciler(kube).reconcile(namespace, "prod")
    degraded = _conditions(kube, namespace)["Degraded"]
    assert degraded["status"] == "False", degraded
    merged = kube.get("v1", "Secret", "prod-users", namespace)
    import base64

    assert "alice:" in base64.b64decode(merged["data"]["users.htpasswd"]).decode()
