"""spec.tls.issuerRef in the local cluster (issue 18, item 7): cert-manager issues the server certificate.

cert-manager's controller (pinned and built by `python -m e2e.binaries`, e2e/go/certmanager) runs as a host
process with the cluster's admin kubeconfig, leader election off, against cert-manager's own CRDs from
the same module. No webhook and no cainjector: a SelfSigned Issuer signs a CA Certificate, a CA Issuer
signs the OmenDB's Certificate, and every object is created valid. The operator runs in the cluster from
its image, as in the other journeys. A client Job trusts only the issuer's CA (not NAME-ca, which is
never made) and writes and reads over TLS with auth.
"""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e import binaries
from e2e.kube import Kube
from e2e.operator_deploy import established

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "manifests" / "samples" / "omendb-development.yaml"
RESTRICTED = {"runAsNonRoot": True, "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
              "seccompProfile": {"type": "RuntimeDefault"}}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def cert_manager(kube: Kube, tmp_path_factory: pytest.TempPathFactory) -> Iterator[subprocess.Popen[bytes]]:
    """cert-manager's CRDs installed and its controller running; both removed afterwards."""
    binary = binaries.build_cert_manager() / "cert-manager-controller"
    crd_dir = binaries.cert_manager_crds_dir()
    kube.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crd_dir))
    crds = [yaml.safe_load(p.read_text())["metadata"]["name"] for p in sorted(crd_dir.glob("*.yaml"))]
    for crd in crds:
        kube.wait_until(f"CRD {crd} established", lambda crd=crd: established(kube, crd), 60)  # type: ignore[misc]
    log = tmp_path_factory.mktemp("cert-manager") / "controller.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(binary), f"--kubeconfig={kube.kubeconfig}", "--leader-elect=false",
             f"--metrics-listen-address=127.0.0.1:{_free_port()}",
             f"--internal-healthz-listen-address=127.0.0.1:{_free_port()}"],
            stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.returncode not in (0, -15):
            print(f"\n===== cert-manager log =====\n{log.read_text()[-5000:]}")
        for crd in crds:
            kube.kubectl("delete", "crd", crd, "--wait=false", check=False)


def _issuers(namespace: str) -> list[dict[str, Any]]:
    """docs/operations/security.md's CA issuer: SelfSigned signs the CA, the CA Issuer signs servers."""
    issuer_ref = {"name": "selfsigned", "kind": "Issuer", "group": "cert-manager.io"}
    return [
        {"apiVersion": "cert-manager.io/v1", "kind": "Issuer", "metadata": {"name": "selfsigned"},
         "spec": {"selfSigned": {}}},
        {"apiVersion": "cert-manager.io/v1", "kind": "Certificate", "metadata": {"name": "omendb-ca"},
         "spec": {"isCA": True, "commonName": "omendb CA", "secretName": "omendb-ca",
                  "privateKey": {"algorithm": "ECDSA", "size": 256}, "issuerRef": issuer_ref}},
        {"apiVersion": "cert-manager.io/v1", "kind": "Issuer", "metadata": {"name": "omendb-ca"},
         "spec": {"ca": {"secretName": "omendb-ca"}}},
    ]


def _client_job(name: str, namespace: str, image: str) -> dict[str, Any]:
    """Writes and reads through the primary Service, trusting only ca.crt of the issuer's CA Secret."""
    script = ("import numpy as np\nfrom omendb.client import Client\n"
              "with Client.from_env() as db:\n"
              "    keys = np.arange(100, dtype=np.int64)\n"
              "    lsn = db.put_many(keys, np.random.random(100))\n"
              "    values, found = db.get_many(keys)\n"
              "    print(f'wrote LSN {lsn}; read back {int(found.sum())} of 100', flush=True)\n")
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "tls-client"}, "spec": {
        "backoffLimit": 0, "template": {"spec": {"restartPolicy": "Never", "containers": [{
            "name": "client", "image": image, "imagePullPolicy": "Never", "command": ["python", "-c", script],
            "env": [{"name": "OMENDB_URL", "value": f"https://{name}.{namespace}.svc:3000"},
                    {"name": "OMENDB_CREDENTIALS_FILE", "value": "/etc/omendb/users"},
                    {"name": "OMENDB_CA_FILE", "value": "/etc/omendb/ca/ca.crt"}],
            "volumeMounts": [{"name": "users", "mountPath": "/etc/omendb/users", "readOnly": True},
                             {"name": "ca", "mountPath": "/etc/omendb/ca", "readOnly": True}],
            "securityContext": RESTRICTED}],
            "volumes": [
                {"name": "users", "secret": {"secretName": f"{name}-users", "items": [
                    {"key": "username", "path": "username"}, {"key": "password", "path": "password"}]}},
                {"name": "ca", "secret": {"secretName": "omendb-ca", "items": [{"key": "ca.crt",
                                                                                "path": "ca.crt"}]}}]}}}}


def test_omendb_with_issuer_ref_is_ready_and_serves_the_issuers_certificate(
        kube: Kube, cert_manager: subprocess.Popen[bytes], operator: str, journey_namespace: str,
        engine_image: str) -> None:
    ns = journey_namespace
    kube.apply(ns, *_issuers(ns))
    kube.wait_condition(ns, "issuer", "omendb-ca", "Ready", timeout=120)

    sample = yaml.safe_load(SAMPLE.read_text())
    name = sample["metadata"]["name"]
    sample["spec"]["tls"] = {"enabled": True, "issuerRef": {"name": "omendb-ca", "kind": "Issuer"}}
    kube.apply(ns, sample)
    kube.wait_condition(ns, "certificate", name, "Ready", timeout=180)
    kube.kubectl("wait", "-n", ns, "--for=condition=Ready", f"omendb/{name}", "--timeout=300s", timeout=320)

    status = kube.get(ns, "omendb", name)["status"]
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["TLSReady"]["status"] == "True", conditions["TLSReady"]
    assert status["tls"]["certificate"] == name and status["tls"]["secretName"] == f"{name}-tls"
    assert kube.get_or_none(ns, "secret", f"{name}-ca") is None  # the operator generated nothing

    kube.apply(ns, _client_job(name, ns, engine_image))
    outcome = kube.job_outcome(ns, "tls-client", timeout=240)
    logs = kube.kubectl("-n", ns, "logs", "job/tls-client", check=False)
    assert outcome == "Complete", f"{logs.stdout}{logs.stderr}"
    assert "read back 100 of 100" in logs.stdout
    # The Certificate carries the operator's labels and is owned by the OmenDB (deleted with it).
    cert = kube.get(ns, "certificate", name)
    owners = [o["kind"] for o in cert["metadata"].get("ownerReferences", [])]
    assert owners == ["OmenDB"], json.dumps(cert["metadata"])
