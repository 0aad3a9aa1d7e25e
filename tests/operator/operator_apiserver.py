"""A real, bare Kubernetes API server on loopback for the operator's integration tests.

etcd and kube-apiserver (the binaries the e2e harness builds from pinned Go modules) run as child
processes on free 127.0.0.1 ports, with a throwaway CA and serving certificate made by the operator's
own certificate code and a static admin token. No kubelet, scheduler or controllers: these tests check
what the API server itself decides (CRD schemas and CEL rules, server-side apply, dry runs, field
ownership). When the binaries cannot be found the tests FAIL with the command that builds them.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from omendb_operator.specs.certificates import issue_ca, issue_server_cert
from tests.ports import free_port, free_ports

ROOT = Path(__file__).resolve().parents[2]
NEEDED = ("etcd", "kube-apiserver")
OPERATOR_USER = "system:serviceaccount:omendb-system:omendb-operator"


def find_bin_dir(needed: tuple[str, ...] = NEEDED) -> Path:
    """The directory holding the ``needed`` binaries: $OMENDB_KUBE_BIN_DIR, else the e2e harness's cache."""
    candidates: list[Path] = []
    if os.environ.get("OMENDB_KUBE_BIN_DIR"):
        candidates.append(Path(os.environ["OMENDB_KUBE_BIN_DIR"]))
    if (ROOT / "e2e" / "binaries.py").exists():
        out = subprocess.run(
            [sys.executable, "-m", "e2e.binaries", "path"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if out.returncode == 0 and out.stdout.strip():
            candidates.append(Path(out.stdout.strip().splitlines()[-1]))
    for directory in candidates:
        if all((directory / name).is_file() for name in needed):
            return directory
    raise RuntimeError(
        f"{' and '.join(needed)} not found (looked in $OMENDB_KUBE_BIN_DIR and the e2e harness's cache"
        f": {[str(c) for c in candidates]}). Build them with `python -m e2e.binaries build`, or point "
        "OMENDB_KUBE_BIN_DIR at a directory holding them."
    )


def _etcd_speed_flags(etcd: Path) -> list[str]:
    # A throwaway store: etcd's own durability is not under test (etcd 3.5 has --unsafe-no-fsync; 3.4 not).
    help_text = subprocess.run([str(etcd), "--help"], capture_output=True, text=True).stdout
    return ["--unsafe-no-fsync"] if "unsafe-no-fsync" in help_text else []


@dataclass
class APIServer:
    url: str
    token: str
    ca_file: Path
    kubeconfig: Path
    log: Path
    garbage_collector: bool = False

    @property
    def operator_kubeconfig(self) -> Path:
        return self.kubeconfig.with_name("operator-kubeconfig")

    def client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url,
            verify=ssl.create_default_context(cafile=str(self.ca_file)),
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=30,
        )


def _write_kubeconfig(path: Path, url: str, ca_file: Path, token: str) -> None:
    path.write_text(f"""apiVersion: v1
kind: Config
clusters:
- name: test
  cluster:
    server: {url}
    certificate-authority: {ca_file}
users:
- name: admin
  user:
    token: {token}
contexts:
- name: test
  context:
    cluster: test
    user: admin
current-context: test
""")


@contextmanager
def running_apiserver() -> Iterator[APIServer]:
    bin_dir = find_bin_dir()
    tmp = Path(tempfile.mkdtemp(prefix="omendb-apiserver-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        now = dt.datetime.now(dt.UTC)
        ca_pem, ca_key = issue_ca("omendb test apiserver CA", now)
        crt, key = issue_server_cert(ca_pem, ca_key, ["localhost"], now, dt.timedelta(days=1))
        (tmp / "ca.crt").write_text(ca_pem)
        (tmp / "apiserver.crt").write_text(crt)
        (tmp / "apiserver.key").write_text(key)
        sa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        (tmp / "sa.key").write_bytes(
            sa.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        (tmp / "sa.pub").write_bytes(
            sa.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        token = os.urandom(16).hex()
        # A second identity, the operator's ServiceAccount name from manifests/rbac.yaml, with no rights but
        # what RBAC grants it: the operator run under it proves the ClusterRole is enough.
        operator_token = os.urandom(16).hex()
        (tmp / "tokens.csv").write_text(
            f'{token},admin,admin,"system:masters"\n'
            f'{operator_token},{OPERATOR_USER},operator,"system:serviceaccounts,system:authenticated"\n'
        )
        etcd_port, peer_port, api_port = free_ports(3)
        log = tmp / "apiserver.log"
        etcd_log = open(tmp / "etcd.log", "wb")  # noqa: SIM115 - closed with the process group below
        procs.append(
            subprocess.Popen(
                [
                    str(bin_dir / "etcd"),
                    f"--data-dir={tmp / 'etcd'}",
                    f"--listen-client-urls=http://127.0.0.1:{etcd_port}",
                    f"--advertise-client-urls=http://127.0.0.1:{etcd_port}",
                    f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
                    f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
                    f"--initial-cluster=default=http://127.0.0.1:{peer_port}",
                    "--unsafe-no-fsync",
                    "--log-level=warn",
                ],
                stdout=etcd_log,
                stderr=subprocess.STDOUT,
            )
        )
        api_log = open(log, "wb")  # noqa: SIM115
        procs.append(
            subprocess.Popen(
                [
                    str(bin_dir / "kube-apiserver"),
                    f"--etcd-servers=http://127.0.0.1:{etcd_port}",
                    "--bind-address=127.0.0.1",
                    "--advertise-address=127.0.0.1",
                    f"--secure-port={api_port}",
                    f"--tls-cert-file={tmp / 'apiserver.crt'}",
                    f"--tls-private-key-file={tmp / 'apiserver.key'}",
                    f"--token-auth-file={tmp / 'tokens.csv'}",
                    "--authorization-mode=RBAC",
                    "--service-account-issuer=https://kubernetes.default.svc",
                    f"--service-account-key-file={tmp / 'sa.pub'}",
                    f"--service-account-signing-key-file={tmp / 'sa.key'}",
                    "--service-cluster-ip-range=10.96.0.0/24",
                    "--profiling=false",
                    "--v=1",
                    f"--cert-dir={tmp / 'certs'}",
                ],
                stdout=api_log,
                stderr=subprocess.STDOUT,
            )
        )
        url = f"https://127.0.0.1:{api_port}"
        server = APIServer(
            url=url, token=token, ca_file=tmp / "ca.crt", kubeconfig=tmp / "kubeconfig", log=log
        )
        _write_kubeconfig(server.kubeconfig, url, server.ca_file, token)
        _write_kubeconfig(server.operator_kubeconfig, url, server.ca_file, operator_token)
        deadline = time.monotonic() + 120
        with server.client() as http:
            while True:
                for p in procs:
                    if p.poll() is not None:
                        raise RuntimeError(
                            f"{p.args[0]} exited with {p.returncode}; see {tmp}:\n" + log.read_text()[-3000:]
                        )
                try:
                    if http.get("/readyz").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        "kube-apiserver did not become ready in 120 s:\n" + log.read_text()[-3000:]
                    )
                time.sleep(0.5)
        # Only the garbage collector: deleting an OmenDB must take its owned children with it.
        if (bin_dir / "kube-controller-manager").is_file():
            server.garbage_collector = True
            cm_log = open(tmp / "controller-manager.log", "wb")  # noqa: SIM115
            procs.append(
                subprocess.Popen(
                    [
                        str(bin_dir / "kube-controller-manager"),
                        f"--kubeconfig={server.kubeconfig}",
                        "--controllers=garbagecollector",
                        "--leader-elect=false",
                        "--bind-address=127.0.0.1",
                        f"--secure-port={free_port()}",
                        "--v=1",
                    ],
                    stdout=cm_log,
                    stderr=subprocess.STDOUT,
                )
            )
        yield server
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in reversed(procs):
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def monitoring_crd_files() -> list[Path]:
    """prometheus-operator's PrometheusRule and ServiceMonitor CRDs (pinned by the e2e harness), or the files
    in $OMENDB_MONITORING_CRDS_DIR."""
    names = ("monitoring.coreos.com_prometheusrules.yaml", "monitoring.coreos.com_servicemonitors.yaml")
    if os.environ.get("OMENDB_MONITORING_CRDS_DIR"):
        files = [Path(os.environ["OMENDB_MONITORING_CRDS_DIR"]) / n for n in names]
    elif (ROOT / "e2e" / "addons.py").exists():
        sys.path.insert(0, str(ROOT))
        from e2e import addons  # type: ignore[import-not-found]

        files = [f for f in addons.crd_files() if f.name in names]
    else:
        files = []
    if len(files) != 2 or not all(f.is_file() for f in files):
        raise RuntimeError(
            "prometheus-operator CRDs not found: set OMENDB_MONITORING_CRDS_DIR to the "
            "directory holding monitoring.coreos.com_{prometheusrules,servicemonitors}.yaml, or "
            "build the e2e harness (`python -m e2e.binaries build`)"
        )
    return files
