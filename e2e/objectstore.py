"""A real S3-compatible object store for the tests: SeaweedFS built from the Go module proxy.

    python -m e2e.objectstore up       # start it (idempotent), create the test bucket
    python -m e2e.objectstore env      # print `export` lines for clients (sh: eval "$(...)")
    python -m e2e.objectstore status   # what runs, where
    python -m e2e.objectstore down     # stop what `up` started and remove the state

`up` runs `weed server -filer -s3` (one master, one volume server, one filer, the S3 gateway) on
127.0.0.1 only, every port chosen free, with TLS (a certificate from the object store's own CA)
and signature-v4 required: the S3 config names exactly one identity, with random keys made at the
first `up` and kept in the state directory, so anonymous requests are refused. The test bucket is
created through `weed shell`. Telemetry is switched off: nothing leaves the machine.

Pods of the local cluster (docs/e2e.md) reach it at the host end of the cluster's veth
(10.200.0.1): when that veth exists, `up` starts a second S3 gateway bound to 10.200.0.1 on the
same port (same filer, keys and certificate) and, in the node's network namespace, masquerades pod
traffic to 10.200.0.1 behind the node address, because the host has no route back to the pod
network. Running `up` again after the cluster came up adds that gateway.

State lives in $OMENDB_E2E_OBJECTSTORE_STATE (default /var/lib/omendb-e2e-objectstore).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from e2e import binaries, pki, procs
from e2e.layout import CLUSTER_CIDR, HOST_IP, NETNS, VETH_HOST

BUCKET = "omendb-test"
WEED = "weed"
# The weed server's components; each gets an HTTP and a gRPC port (never weed's port+10000 default,
# which may be taken on a shared machine).
PORT_NAMES = ("master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc", "s3", "s3_grpc",
              "pod_s3_grpc")


def default_state_dir() -> Path:
    return Path(os.environ.get("OMENDB_E2E_OBJECTSTORE_STATE", "/var/lib/omendb-e2e-objectstore"))


@dataclass(frozen=True)
class Store:
    """Paths under the object store's state directory."""

    root: Path

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def pids(self) -> Path:
        return self.root / "pids"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def ca(self) -> Path:
        return self.root / "ca.crt"

    @property
    def cert(self) -> Path:
        return self.root / "s3.crt"

    @property
    def key(self) -> Path:
        return self.root / "s3.key"

    @property
    def s3_config(self) -> Path:
        return self.root / "s3.json"

    @property
    def settings(self) -> Path:
        return self.root / "settings.json"


def weed_binary() -> Path:
    path = binaries.objectstore_bin_dir() / WEED
    if not path.exists():
        raise SystemExit(
            f"e2e.objectstore: {path} is missing: build it with `python -m e2e.binaries build` "
            "(or `make e2e-build`); it is cached by the hash of e2e/go/seaweedfs/go.mod and go.sum"
        )
    return path


def free_ports(count: int) -> list[int]:
    """Ports the kernel hands out now on 127.0.0.1 (held together so they differ)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def s3_config(access_key: str, secret_key: str) -> dict[str, object]:
    """The S3 gateway's identities: one, with every action; no anonymous identity (sigv4 only)."""
    return {"identities": [{
        "name": "omendb-test",
        "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
        "actions": ["Admin", "Read", "List", "Tagging", "Write"],
    }]}


def _write_pki(store: Store) -> None:
    ca_cert, ca_key = pki.make_ca("omendb-e2e-objectstore-ca")
    store.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    # The pod address is in the certificate even before the cluster exists: it costs nothing.
    issued = pki.issue(pki.CertSpec("s3", "omendb-e2e-objectstore", dns_names=("localhost",),
                                    ip_addresses=("127.0.0.1", HOST_IP), server=True), ca_cert, ca_key)
    store.cert.write_bytes(issued.cert_pem)
    store.key.touch(mode=0o600)
    store.key.write_bytes(issued.key_pem)


def _init_state(store: Store) -> dict[str, object]:
    """Keys, ports and certificates, made once and kept so `env` and a second `up` agree."""
    if store.settings.exists():
        settings: dict[str, object] = json.loads(store.settings.read_text())
        return settings
    store.root.mkdir(parents=True, exist_ok=True)
    store.data.mkdir(exist_ok=True)
    _write_pki(store)
    access_key = "OMENDB" + secrets.token_hex(7).upper()
    secret_key = secrets.token_urlsafe(30)
    store.s3_config.touch(mode=0o600)
    store.s3_config.write_text(json.dumps(s3_config(access_key, secret_key), indent=2))
    settings = {
        "access_key": access_key, "secret_key": secret_key, "bucket": BUCKET,
        "ports": dict(zip(PORT_NAMES, free_ports(len(PORT_NAMES)), strict=True)),
    }
    tmp = store.settings.with_suffix(".tmp")
    tmp.touch(mode=0o600)
    tmp.write_text(json.dumps(settings, indent=2))
    os.replace(tmp, store.settings)
    return settings


def server_argv(weed: Path, store: Store, ports: dict[str, int]) -> list[str]:
    return [
        str(weed), "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={store.data}",
        "-filer", "-s3", "-master.telemetry=false", "-master.volumeSizeLimitMB=64", "-volume.max=0",
        f"-master.port={ports['master']}", f"-master.port.grpc={ports['master_grpc']}",
        f"-volume.port={ports['volume']}", f"-volume.port.grpc={ports['volume_grpc']}",
        f"-filer.port={ports['filer']}", f"-filer.port.grpc={ports['filer_grpc']}",
        f"-filer.localSocket={store.root / 'filer.sock'}",
        f"-s3.port={ports['s3']}", f"-s3.port.grpc={ports['s3_grpc']}",
        f"-s3.localSocket={store.root / 's3.sock'}",
        "-s3.port.iceberg=0", "-s3.port.lance=0", "-s3.iam=false",
        f"-s3.config={store.s3_config}", f"-s3.cert.file={store.cert}", f"-s3.key.file={store.key}",
    ]


def pod_gateway_argv(weed: Path, store: Store, ports: dict[str, int]) -> list[str]:
    """A second S3 gateway on the cluster veth's host address, sharing the filer (and its data)."""
    return [
        str(weed), "s3", f"-filer=127.0.0.1:{ports['filer']}.{ports['filer_grpc']}",
        f"-ip={HOST_IP}", f"-ip.bind={HOST_IP}", f"-port={ports['s3']}",
        f"-port.grpc={ports['pod_s3_grpc']}", "-port.iceberg=0", "-port.lance=0", "-iam=false",
        f"-localSocket={store.root / 'pod-s3.sock'}",
        f"-config={store.s3_config}", f"-cert.file={store.cert}", f"-key.file={store.key}",
    ]


def endpoint(host: str, port: int) -> str:
    return f"https://{host}:{port}"


def _veth_exists() -> bool:
    return Path(f"/sys/class/net/{VETH_HOST}").exists()


def _wait_tls(host: str, port: int, ca: Path, deadline: float, what: str, log: Path) -> None:
    """Wait until the S3 gateway answers over TLS (any HTTP status: it refuses anonymous calls)."""
    ctx = ssl.create_default_context(cafile=str(ca))
    last = ""
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(endpoint(host, port) + "/", context=ctx, timeout=5)
            return
        except urllib.error.HTTPError:
            return
        except (OSError, urllib.error.URLError) as exc:
            last = str(exc)
            time.sleep(0.5)
    tail = log.read_text(errors="replace").splitlines()[-30:] if log.exists() else []
    raise SystemExit(f"e2e.objectstore: {what} did not answer on {endpoint(host, port)} ({last}); "
                     f"last lines of {log}:\n" + "\n".join(tail))


def _create_bucket(weed: Path, store: Store, ports: dict[str, int], bucket: str, deadline: float) -> None:
    """Create the bucket with `weed shell` (retried: the master needs a moment to elect itself)."""
    out = ""
    while time.monotonic() < deadline:
        res = subprocess.run(
            [str(weed), "shell", f"-master=127.0.0.1:{ports['master']}.{ports['master_grpc']}",
             f"-filer=127.0.0.1:{ports['filer']}.{ports['filer_grpc']}"],
            input=f"s3.bucket.create -name {bucket}\ns3.bucket.list\n", capture_output=True, text=True,
            timeout=60,
        )
        out = res.stdout + res.stderr
        # A second `up` (the cluster came up again, its pods need the gateway) finds the bucket there.
        listed = any(line.strip().startswith(f"{bucket}") or f" {bucket}" in line for line in res.stdout.splitlines())
        if listed and (res.returncode == 0 or "already exists" in out):
            return
        time.sleep(1)
    raise SystemExit(f"e2e.objectstore: could not create bucket {bucket!r} with `weed shell`:\n{out}")


def _masquerade_rule() -> list[str]:
    # Every node's pods (node k's reach the host through node 1, where this rule is).
    return ["-s", CLUSTER_CIDR, "-d", f"{HOST_IP}/32", "-j", "MASQUERADE",
            "-m", "comment", "--comment", "omendb-e2e-objectstore"]


def _node_iptables(action: str) -> int:
    cmd = ["ip", "netns", "exec", NETNS, "iptables", "-w", "-t", "nat", action, "POSTROUTING",
           *_masquerade_rule()]
    return subprocess.run(cmd, capture_output=True).returncode


def _enable_pod_route() -> None:
    """Pods reply-routable to the host: their traffic to 10.200.0.1 leaves the node as 10.200.0.2."""
    if _node_iptables("-C") != 0 and _node_iptables("-A") != 0:
        raise SystemExit(f"e2e.objectstore: cannot add the masquerade rule in netns {NETNS}")


def up(store: Store, pods: bool | None = None) -> None:
    """Start the store; `pods` None serves the cluster's pods when its veth exists (tests say False)."""
    weed = weed_binary()
    settings = _init_state(store)
    ports: dict[str, int] = settings["ports"]  # type: ignore[assignment]
    deadline = time.monotonic() + 120
    if procs.alive("weed-server", store.pids) is None:
        procs.start("weed-server", server_argv(weed, store, ports), store.pids, store.logs, netns=False)
    _wait_tls("127.0.0.1", ports["s3"], store.ca, deadline, "the S3 gateway", store.logs / "weed-server.log")
    _create_bucket(weed, store, ports, BUCKET, deadline)
    if pods is None:
        pods = _veth_exists()
    if pods:
        if procs.alive("weed-s3-pods", store.pids) is None:
            procs.start("weed-s3-pods", pod_gateway_argv(weed, store, ports), store.pids, store.logs,
                        netns=False)
        _wait_tls(HOST_IP, ports["s3"], store.ca, deadline, "the pods' S3 gateway",
                  store.logs / "weed-s3-pods.log")
        _enable_pod_route()
        (store.root / "pod-route").touch()
    print(f"e2e.objectstore: up at {endpoint('127.0.0.1', ports['s3'])}, bucket {BUCKET}", flush=True)


def down(store: Store) -> None:
    procs.stop("weed-s3-pods", store.pids)
    procs.stop("weed-server", store.pids, grace=10)
    # The rule is shared by any store serving pods; remove it only if this store added it.
    if (store.root / "pod-route").exists() and Path(f"/run/netns/{NETNS}").exists():
        _node_iptables("-D")
    # `weed server` puts each component's local gRPC socket in /tmp, named by its gRPC port (not
    # configurable); remove exactly ours.
    if store.settings.exists():
        ports = json.loads(store.settings.read_text())["ports"]
        for component in ("master", "volume", "filer", "s3"):
            Path(f"/tmp/seaweedfs-{component}-grpc-{ports[component + '_grpc']}.sock").unlink(missing_ok=True)
    shutil.rmtree(store.root, ignore_errors=True)


def env_lines(store: Store) -> list[str]:
    if not store.settings.exists():
        raise SystemExit(f"e2e.objectstore: not up (no {store.settings}): run `python -m e2e.objectstore up`")
    s = json.loads(store.settings.read_text())
    port = s["ports"]["s3"]
    values = {
        "AWS_ENDPOINT_URL": endpoint("127.0.0.1", port),
        "AWS_ACCESS_KEY_ID": s["access_key"],
        "AWS_SECRET_ACCESS_KEY": s["secret_key"],
        "AWS_CA_BUNDLE": str(store.ca),
        # SeaweedFS accepts any region in the signature; clients need one to sign.
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "OMENDB_TEST_BUCKET": s["bucket"],
        # What a pod of the local cluster uses (the veth's host end); served once `up` ran with the
        # cluster up.
        "OMENDB_TEST_POD_ENDPOINT_URL": endpoint(HOST_IP, port),
    }
    return [f"export {k}={v}" for k, v in values.items()]


def status(store: Store) -> str:
    if not store.settings.exists():
        return "object store: down"
    lines = []
    for name in ("weed-server", "weed-s3-pods"):
        pid = procs.alive(name, store.pids)
        lines.append(f"{name:14} {'running pid ' + str(pid) if pid else 'not running'}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    store = Store(default_state_dir())
    cmd = argv[0] if argv else ""
    if cmd == "up":
        up(store)
    elif cmd == "down":
        down(store)
    elif cmd == "env":
        print("\n".join(env_lines(store)))
    elif cmd == "status":
        print(status(store))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main(sys.argv[1:]))
