"""spec.tls.issuerRef with a real cert-manager: its controller (built from the module proxy by
`python -m e2e.binaries cert-manager`) runs as a process against a real kube-apiserver with cert-manager's
own CRDs; the operator's reconcile makes the Certificate, cert-manager issues NAME-tls from a CA Issuer,
and TLSReady follows. No webhook: every object is created valid, and without a
ValidatingWebhookConfiguration the API server never calls one.

This API server is the module's own (not the session's): cert-manager's CRDs would change what every other
test's reconcile observes.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from kubernetes.config import new_client_from_config
from operator_apiserver import APIServer, running_apiserver

from omendb_operator.controller.kube import Kube
from omendb_operator.controller.reconcile import Reconciler
from omendb_operator.specs import certificates
from omendb_operator.specs.secrets import decode_secret_data
from tests.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
CM = "cert-manager.io/v1"


def _cert_manager() -> tuple[Path, Path]:
    """(the controller binary, the directory of its CRDs), both pinned in e2e/binaries.py."""
    sys.path.insert(0, str(ROOT))
    from e2e import binaries

    binary = binaries.cert_manager_bin_dir() / "cert-manager-controller"
    if not binary.is_file():
        raise RuntimeError(f"{binary} is missing: build it with `python -m e2e.binaries cert-manager` "
                           "(cold: about ten minutes on 2 cores; cached by the hash of e2e/go/certmanager)")
    return binary, binaries.cert_manager_crds_dir()


def _install_crds(server: APIServer, files: list[Path]) -> None:
    with server.client() as http:
        names = []
        for path in files:
            for doc in yaml.safe_load_all(path.read_text()):
                if doc:
                    r = http.post("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", json=doc)
                    assert r.status_code == 201, f"{path.name}: {r.status_code} {r.text[:2000]}"
                    names.append(doc["metadata"]["name"])
        deadline = time.monotonic() + 60
        for name in names:
            while True:
                crd = http.get(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}").json()
                if any(c["type"] == "Established" and c["status"] == "True"
                       for c in (crd.get("status") or {}).get("conditions") or []):
                    break
                assert time.monotonic() < deadline, f"CRD {name} not established"
                time.sleep(0.2)
        for group in ("omendb.io/v1alpha1", CM):
            while http.get(f"/apis/{group}").status_code != 200:
                assert time.monotonic() < deadline
                time.sleep(0.2)


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[APIServer, subprocess.Popen[bytes]]]:
    binary, crd_dir = _cert_manager()
    with running_apiserver() as server:
        _install_crds(server, [*sorted((ROOT / "crds").glob("*.yaml")), *sorted(crd_dir.glob("*.yaml"))])
        log = server.log.with_name("cert-manager.log")
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [str(binary), f"--kubeconfig={server.kubeconfig}", "--leader-elect=false",
                 f"--metrics-listen-address=127.0.0.1:{free_port()}",
                 f"--internal-healthz-listen-address=127.0.0.1:{free_port()}", "--v=2"],
                stdout=out, stderr=subprocess.STDOUT)
        try:
            time.sleep(1)
            assert proc.poll() is None, log.read_text()[-3000:]
            yield server, proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wait(what: str, probe: Callable[[], Any], server: APIServer, timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            log = server.log.with_name("cert-manager.log")
            raise AssertionError(f"{what}: not within {timeout:.0f}s; cert-manager log:\n"
                                 + log.read_text()[-4000:])
        time.sleep(0.5)


def _ready(obj: dict[str, Any] | None) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in ((obj or {}).get("status") or {}).get("conditions") or [])


def _post(server: APIServer, path: str, body: dict[str, Any]) -> None:
    with server.client() as http:
        r = http.post(path, json=body, params={"fieldValidation": "Strict"})
        assert r.status_code == 201, r.text


def _ca_issuer(server: APIServer, namespace: str) -> None:
    """cert-manager's own bootstrap: a SelfSigned Issuer signs a CA Certificate; a CA Issuer uses it."""
    base = f"/apis/{CM}/namespaces/{namespace}"
    _post(server, f"{base}/issuers", {"apiVersion": CM, "kind": "Issuer", "metadata": {"name": "selfsigned"},
                                      "spec": {"selfSigned": {}}})
    _post(server, f"{base}/certificates", {
        "apiVersion": CM, "kind": "Certificate", "metadata": {"name": "test-ca"},
        "spec": {"isCA": True, "commonName": "omendb test CA", "secretName": "test-ca",
                 "privateKey": {"algorithm": "ECDSA", "size": 256},
                 "issuerRef": {"name": "selfsigned", "kind": "Issuer", "group": "cert-manager.io"}}})
    _post(server, f"{base}/issuers", {"apiVersion": CM, "kind": "Issuer", "metadata": {"name": "test-ca"},
                                      "spec": {"ca": {"secretName": "test-ca"}}})


def test_cert_manager_issues_the_server_certificate_and_tls_ready_follows(cluster, request):
    server, _ = cluster
    namespace = "certs"
    _post(server, "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    kube = Kube(new_client_from_config(config_file=str(server.kubeconfig)))
    _ca_issuer(server, namespace)
    _wait("the test CA Issuer is Ready", lambda: _ready(kube.get(CM, "Issuer", "test-ca", namespace)), server)

    (doc,) = [d for d in yaml.safe_load_all((ROOT / "manifests/samples/omendb-development.yaml").read_text()) if d]
    doc["metadata"]["name"] = "db"
    doc["spec"]["tls"] = {"enabled": True, "issuerRef": {"name": "test-ca", "kind": "Issuer"},
                          "durationDays": 30, "renewBeforeDays": 10}
    _post(server, f"/apis/omendb.io/v1alpha1/namespaces/{namespace}/omendbs", doc)
    reconciler = Reconciler(kube)
    reconciler.reconcile(namespace, "db")

    cert = kube.get(CM, "Certificate", "db", namespace)
    assert cert is not None and cert["spec"]["secretName"] == "db-tls"
    assert kube.get("v1", "Secret", "db-ca", namespace) is None  # the operator generated nothing
    cert = _wait("Certificate db is Ready", lambda: (lambda c: c if _ready(c) else None)(
        kube.get(CM, "Certificate", "db", namespace)), server)

    data = decode_secret_data(kube.get("v1", "Secret", "db-tls", namespace))
    served, ca = certificates.load_cert(data["tls.crt"]), certificates.load_cert(data["ca.crt"])
    test_ca = certificates.load_cert(decode_secret_data(kube.get("v1", "Secret", "test-ca", namespace))["tls.crt"])
    assert served is not None and ca is not None and test_ca is not None
    assert ca == test_ca
    served.verify_directly_issued_by(test_ca)  # raises unless the Issuer's CA signed it
    assert sorted(certificates.cert_dns_names(served)) == sorted(certificates.server_dns_names("db", namespace))
    assert served.not_valid_after_utc - served.not_valid_before_utc == dt.timedelta(days=30)
    usage = served.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert x509.oid.ExtendedKeyUsageOID.SERVER_AUTH in usage
    # cert-manager's Secret carries the OmenDB's labels (secretTemplate).
    assert kube.get("v1", "Secret", "db-tls", namespace)["metadata"]["labels"]["app.kubernetes.io/instance"] == "db"

    reconciler.reconcile(namespace, "db")
    status = kube.get("omendb.io/v1alpha1", "OmenDB", "db", namespace)["status"]
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["TLSReady"]["status"] == "True", conditions["TLSReady"]
    not_after = served.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert status["tls"] == {"secretName": "db-tls", "certificate": "db", "notAfter": not_after}
    assert not_after in conditions["TLSReady"]["message"]
    # The pods mount NAME-tls with the CA cert-manager wrote (replicas verify the primary with it).
    sts = kube.get("apps/v1", "StatefulSet", "db", namespace)
    sources = sts["spec"]["template"]["spec"]["volumes"][0]["projected"]["sources"]
    tls_source = next(s["secret"] for s in sources if s.get("secret", {}).get("name") == "db-tls")
    assert {"key": "ca.crt", "path": "tls/ca.crt"} in tls_source["items"]

    # issuerRef removed: the Certificate goes; the operator issues NAME-tls itself again from NAME-ca.
    with server.client() as http:
        r = http.patch(f"/apis/omendb.io/v1alpha1/namespaces/{namespace}/omendbs/db",
                       json={"spec": {"tls": {"issuerRef": None}}},
                       headers={"Content-Type": "application/merge-patch+json"})
        assert r.status_code == 200, r.text
    reconciler.reconcile(namespace, "db")
    assert kube.get(CM, "Certificate", "db", namespace) is None
    # NAME-tls is rewritten on the next pass (the plan asked for a requeue), once cert-manager cannot
    # re-issue it over the operator's.
    reconciler.reconcile(namespace, "db")
    own_ca = certificates.load_cert(decode_secret_data(kube.get("v1", "Secret", "db-ca", namespace))["ca.crt"])
    served = certificates.load_cert(decode_secret_data(kube.get("v1", "Secret", "db-tls", namespace))["tls.crt"])
    assert own_ca is not None and served is not None
    served.verify_directly_issued_by(own_ca)
    status = kube.get("omendb.io/v1alpha1", "OmenDB", "db", namespace)["status"]
    assert "certificate" not in status["tls"] and status["tls"]["caSecretName"] == "db-ca"
