"""Names, addresses and paths of the local cluster: one place, so every module agrees.

Everything the cluster writes lives under one state directory. The whole cluster (control plane,
containerd, kubelet, kube-proxy and the pods) runs in a network namespace of its own, joined to the
host by one veth pair on a /30: nothing binds host ports, kube-proxy's iptables rules stay inside
the namespace, and pods have no route off the machine. containerd and kubelet share a private
mount namespace, so every mount they make (overlay rootfs, secrets, pod network namespaces)
disappears with it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

NETNS = "omendb-e2e"
VETH_HOST = "omendb-h"
VETH_NODE = "omendb-n"
HOST_IP = "10.200.0.1"
NODE_IP = "10.200.0.2"
VETH_PREFIX = 30
NODE_NAME = "omendb-e2e-node"
POD_CIDR = "10.244.0.0/24"
POD_BRIDGE = "omendb0"
SERVICE_CIDR = "10.96.0.0/16"
KUBERNETES_SERVICE_IP = "10.96.0.1"
DNS_SERVICE_IP = "10.96.0.10"
CLUSTER_DOMAIN = "cluster.local"
APISERVER_PORT = 6443
CGROUP_ROOT = "omendb-e2e"
SANDBOX_IMAGE = "registry.k8s.io/pause:3.10"
STORAGE_CLASS = "omendb-local"
PROVISIONER_NAME = "omendb.dev/local-dir"


def default_state_dir() -> Path:
    return Path(os.environ.get("OMENDB_E2E_STATE", "/var/lib/omendb-e2e"))


@dataclass(frozen=True)
class Layout:
    """Paths under the state directory."""

    root: Path

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def kubeconfigs(self) -> Path:
        return self.root / "kubeconfig"

    @property
    def admin_kubeconfig(self) -> Path:
        return self.kubeconfigs / "admin.conf"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def pids(self) -> Path:
        return self.root / "pids"

    @property
    def etcd_data(self) -> Path:
        return self.root / "etcd"

    @property
    def containerd(self) -> Path:
        return self.root / "containerd"

    @property
    def containerd_socket(self) -> Path:
        return self.containerd / "containerd.sock"

    @property
    def kubelet(self) -> Path:
        return self.root / "kubelet"

    @property
    def cni_conf(self) -> Path:
        return self.root / "cni" / "net.d"

    @property
    def ns_dir(self) -> Path:
        """A private bind mount holding the persistent mount-namespace file."""
        return self.root / "ns"

    @property
    def mount_ns(self) -> Path:
        return self.ns_dir / "mnt"

    @property
    def volumes(self) -> Path:
        """Directories backing dynamically provisioned PersistentVolumes."""
        return self.root / "volumes"

    @property
    def manifests(self) -> Path:
        return self.root / "manifests"

    @property
    def bind_targets(self) -> dict[str, Path]:
        """Host paths that containerd, CNI and kubelet hard-code, redirected inside the mount namespace."""
        return {
            "/var/log": self.root / "varlog",
            "/var/lib/cni": self.root / "varlibcni",
            "/run/netns": self.root / "netns",
        }

    @property
    def apiserver_url(self) -> str:
        return f"https://{NODE_IP}:{APISERVER_PORT}"
