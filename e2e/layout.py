"""Names, addresses and paths of the local cluster: one place, so every module agrees.

Everything the cluster writes lives under one state directory. The whole cluster (control plane,
containerd, kubelet, kube-proxy and the pods) runs in a network namespace of its own, joined to the
host by one veth pair on a /30: nothing binds host ports, kube-proxy's iptables rules stay inside
the namespace, and pods have no route off the machine. containerd and kubelet share a private
mount namespace, so every mount they make (overlay rootfs, secrets, pod network namespaces)
disappears with it.

With `--nodes N` (N > 1) that namespace stays node 1 and keeps the control plane; node k (2..N) gets a
network namespace `omendb-e2e-nK` joined to node 1's by a veth /30 (node 1 routes between the nodes and
the host), and a mount namespace, containerd, kubelet, kube-proxy, cgroup root and state directory of its
own (`Node` below). Each node's pods get the /24 that the controller-manager's node IPAM gives it.
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
# Every node's pod /24 comes from here (node 1 gets the first, POD_CIDR, as it registers first).
CLUSTER_CIDR = "10.244.0.0/16"
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
ZONE_LABEL = "topology.kubernetes.io/zone"
DEFAULT_ZONES = ("zone-a", "zone-b", "zone-c")
# Node k's end of its link to node 1 (the same name in every node's namespace); node 1's end is `omendb-lK`.
NODE_UPLINK = "omendb-up"
MAX_NODES = 9


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

    @property
    def node_record(self) -> Path:
        """The nodes of this cluster (index and zone), written by `up` before it creates any of them."""
        return self.root / "nodes.json"

    def node(self, index: int, zone: str | None = None) -> Node:
        return Node(self, index, zone)

    def nodes(self) -> list[Node]:
        """The cluster's nodes, node 1 first; a cluster without a record has node 1 only."""
        import json

        if not self.node_record.exists():
            return [Node(self, 1)]
        return [Node(self, int(n["index"]), n.get("zone")) for n in json.loads(self.node_record.read_text())]

    def find_node(self, name: str) -> Node:
        nodes = self.nodes()
        for n in nodes:
            if name in (n.name, str(n.index)):
                return n
        raise KeyError(f"no node {name!r} in the cluster at {self.root}; its nodes: "
                       f"{', '.join(n.name for n in nodes)}")


@dataclass(frozen=True)
class Node:
    """One node. Node 1 is the control plane's namespace and paths of the one-node cluster, unchanged;
    node k > 1 has its own under STATE/nodes/NAME, and its own network namespace and cgroup root."""

    lay: Layout
    index: int
    zone: str | None = None

    @property
    def first(self) -> bool:
        return self.index == 1

    @property
    def name(self) -> str:
        return NODE_NAME if self.first else f"{NODE_NAME}-{self.index}"

    @property
    def netns(self) -> str:
        return NETNS if self.first else f"{NETNS}-n{self.index}"

    @property
    def ip(self) -> str:
        return NODE_IP if self.first else f"10.200.{self.index}.2"

    @property
    def gateway(self) -> str:
        """Node 1's address on the link to this node (node k > 1 only)."""
        return f"10.200.{self.index}.1"

    @property
    def link(self) -> str:
        """The name, in node 1's namespace, of the veth to this node (node k > 1 only)."""
        return f"omendb-l{self.index}"

    @property
    def cgroup_root(self) -> str:
        return CGROUP_ROOT if self.first else f"{CGROUP_ROOT}-n{self.index}"

    @property
    def root(self) -> Path:
        return self.lay.root if self.first else self.lay.root / "nodes" / self.name

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
        return self.root / "ns"

    @property
    def mount_ns(self) -> Path:
        return self.ns_dir / "mnt"

    @property
    def bind_targets(self) -> dict[str, Path]:
        return {
            "/var/log": self.root / "varlog",
            "/var/lib/cni": self.root / "varlibcni",
            "/run/netns": self.root / "netns",
        }

    @property
    def cert(self) -> str:
        """File stem of the kubelet's certificates: `kubelet-client`/`kubelet-server` + this suffix."""
        return "" if self.first else f"-{self.name}"

    @property
    def kubeconfig(self) -> Path:
        return self.lay.kubeconfigs / ("kubelet.conf" if self.first else f"kubelet-{self.name}.conf")

    @property
    def kube_proxy_config(self) -> Path:
        return self.root / "kube-proxy.yaml"

    def component(self, base: str) -> str:
        """The pid/log file name of this node's `base` (containerd, kubelet, kube-proxy)."""
        return base if self.first else f"{base}-{self.name}"
