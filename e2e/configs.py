"""Pure builders for the cluster's configuration files and command lines.

Nothing here touches the machine: each function returns text or an argv list built from the
layout, so the whole cluster's configuration can be read (and unit-tested) in one place.
"""

from __future__ import annotations

import base64
from pathlib import Path

import yaml

from e2e import layout as L
from e2e.layout import Layout, Node


def kubeconfig(server: str, ca_file: Path, cert_file: Path, key_file: Path, user: str) -> str:
    """A kubeconfig with the certificates embedded, so it works when copied elsewhere."""

    def b64(p: Path) -> str:
        return base64.b64encode(p.read_bytes()).decode()

    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "omendb-e2e", "cluster": {
            "server": server, "certificate-authority-data": b64(ca_file)}}],
        "users": [{"name": user, "user": {
            "client-certificate-data": b64(cert_file), "client-key-data": b64(key_file)}}],
        "contexts": [{"name": "omendb-e2e", "context": {"cluster": "omendb-e2e", "user": user}}],
        "current-context": "omendb-e2e",
    }
    return yaml.safe_dump(doc, sort_keys=False)


# Which client certificate each component's kubeconfig carries.
KUBECONFIG_USERS = {
    "admin": "admin",
    "controller-manager": "controller-manager",
    "scheduler": "scheduler",
    "kubelet": "kubelet-client",
    "kube-proxy": "kube-proxy",
}
# The control plane's own clients reach the API server on 127.0.0.1 (it shares node 1's namespace), not on
# the node address: so `node partition` of node 1 can drop what node 1's kubelet, kube-proxy and pods send
# to 10.200.0.2:6443 while the control plane keeps working.
LOOPBACK_USERS = ("controller-manager", "scheduler")


def kubeconfig_server(lay: Layout, user: str) -> str:
    return f"https://127.0.0.1:{L.APISERVER_PORT}" if user in LOOPBACK_USERS else lay.apiserver_url


def etcd_argv(lay: Layout, bin_dir: Path) -> list[str]:
    return [
        str(bin_dir / "etcd"),
        f"--data-dir={lay.etcd_data}",
        "--listen-client-urls=http://127.0.0.1:2379",
        "--advertise-client-urls=http://127.0.0.1:2379",
        "--listen-peer-urls=http://127.0.0.1:2380",
        "--initial-advertise-peer-urls=http://127.0.0.1:2380",
        "--initial-cluster=default=http://127.0.0.1:2380",
        "--listen-metrics-urls=http://127.0.0.1:2381",
        # A throwaway test cluster: durability of etcd itself is not under test, speed is welcome.
        "--unsafe-no-fsync",
        "--log-level=warn",
    ]


def apiserver_argv(lay: Layout, bin_dir: Path) -> list[str]:
    p = lay.pki
    return [
        str(bin_dir / "kube-apiserver"),
        "--etcd-servers=http://127.0.0.1:2379",
        "--bind-address=0.0.0.0",
        f"--advertise-address={L.NODE_IP}",
        f"--secure-port={L.APISERVER_PORT}",
        f"--tls-cert-file={p / 'apiserver.crt'}",
        f"--tls-private-key-file={p / 'apiserver.key'}",
        f"--client-ca-file={p / 'ca.crt'}",
        f"--kubelet-client-certificate={p / 'apiserver-kubelet-client.crt'}",
        f"--kubelet-client-key={p / 'apiserver-kubelet-client.key'}",
        f"--kubelet-certificate-authority={p / 'ca.crt'}",
        "--kubelet-preferred-address-types=InternalIP",
        "--authorization-mode=Node,RBAC",
        "--enable-admission-plugins=NodeRestriction",
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
        f"--service-account-key-file={p / 'sa.pub'}",
        f"--service-account-signing-key-file={p / 'sa.key'}",
        f"--service-cluster-ip-range={L.SERVICE_CIDR}",
        "--allow-privileged=true",
        "--endpoint-reconciler-type=lease",
        "--profiling=false",
        "--v=1",
    ]


def controller_manager_argv(lay: Layout, bin_dir: Path) -> list[str]:
    kc = lay.kubeconfigs / "controller-manager.conf"
    p = lay.pki
    return [
        str(bin_dir / "kube-controller-manager"),
        f"--kubeconfig={kc}",
        f"--authentication-kubeconfig={kc}",
        f"--authorization-kubeconfig={kc}",
        f"--bind-address={L.NODE_IP}",
        "--leader-elect=false",
        "--controllers=*",
        f"--service-account-private-key-file={p / 'sa.key'}",
        f"--root-ca-file={p / 'ca.crt'}",
        "--use-service-account-credentials=true",
        f"--service-cluster-ip-range={L.SERVICE_CIDR}",
        f"--cluster-signing-cert-file={p / 'ca.crt'}",
        f"--cluster-signing-key-file={p / 'ca.key'}",
        # Each node's podCIDR is set on its Node object by the node IPAM controller: node 1, registering
        # first, gets POD_CIDR; further nodes' CNI configuration is written from what they got.
        "--allocate-node-cidrs=true",
        f"--cluster-cidr={L.CLUSTER_CIDR}",
        "--node-cidr-mask-size=24",
        "--v=1",
    ]


def scheduler_argv(lay: Layout, bin_dir: Path) -> list[str]:
    kc = lay.kubeconfigs / "scheduler.conf"
    return [
        str(bin_dir / "kube-scheduler"),
        f"--kubeconfig={kc}",
        f"--authentication-kubeconfig={kc}",
        f"--authorization-kubeconfig={kc}",
        f"--bind-address={L.NODE_IP}",
        "--leader-elect=false",
        "--v=1",
    ]


def containerd_config(lay: Layout, node: Node | None = None) -> str:
    node = node or lay.node(1)
    c = node.containerd
    return f"""version = 2
root = "{c / 'root'}"
state = "{c / 'state'}"
# The snapshotters and plugins a single overlayfs node does not need; they only log noise.
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "{node.containerd_socket}"

[ttrpc]
  address = "{c / 'containerd.sock.ttrpc'}"

[debug]
  address = "{c / 'debug.sock'}"
  level = "info"

[plugins."io.containerd.internal.v1.opt"]
  path = "{c / 'opt'}"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{L.SANDBOX_IMAGE}"
  enable_selinux = false
  # The kubelet asks for negative oom_score_adj values (-998 for every pod sandbox), which need
  # CAP_SYS_RESOURCE; machines that withhold it (this one does) make runc fail with "can't get
  # final child's PID from pipe: EOF". Clamp to containerd's own value instead.
  restrict_oom_score_adj = true
  # Images come only from `ctr images import`; there is no registry to pull from.
  max_concurrent_downloads = 1

  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    discard_unpacked_layers = false

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false

  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{node.cni_conf}"
"""


def cni_config(pod_cidr: str = L.POD_CIDR) -> str:
    import json

    return json.dumps({
        "cniVersion": "0.4.0",
        "name": "omendb-e2e",
        "plugins": [
            {
                "type": "bridge",
                "bridge": L.POD_BRIDGE,
                "isGateway": True,
                # No masquerading: pods have no route off the machine, by design.
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": pod_cidr}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }, indent=2)


def kubelet_config(lay: Layout, node: Node | None = None) -> str:
    node = node or lay.node(1)
    p = lay.pki
    doc = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": node.ip,
        "port": 10250,
        "readOnlyPort": 0,
        "healthzBindAddress": node.ip,
        "healthzPort": 10248,
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(p / "ca.crt")},
        },
        "authorization": {"mode": "Webhook"},
        "tlsCertFile": str(p / f"kubelet-server{node.cert}.crt"),
        "tlsPrivateKeyFile": str(p / f"kubelet-server{node.cert}.key"),
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": "/" + node.cgroup_root,
        # This host has cgroup v1 hierarchies; Kubernetes 1.33 still supports them when asked.
        "failCgroupV1": False,
        "failSwapOn": False,
        "containerRuntimeEndpoint": f"unix://{node.containerd_socket}",
        "clusterDNS": [L.DNS_SERVICE_IP],
        "clusterDomain": L.CLUSTER_DOMAIN,
        # Pods get only the cluster DNS: no upstream resolver, so no name resolves off the machine.
        "resolvConf": "",
        "volumePluginDir": str(node.kubelet / "volume-plugins"),
        "serializeImagePulls": False,
        # Images cannot be pulled again here, so the kubelet must never garbage-collect them.
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {
            "memory.available": "100Mi", "nodefs.available": "1%",
            "imagefs.available": "1%", "nodefs.inodesFree": "1%",
        },
        "nodeStatusUpdateFrequency": "4s",
        "syncFrequency": "10s",
        "fileCheckFrequency": "10s",
        "maxPods": 110,
        "enforceNodeAllocatable": ["pods"],
        "protectKernelDefaults": False,
        "rotateCertificates": False,
        "serverTLSBootstrap": False,
    }
    return yaml.safe_dump(doc, sort_keys=False)


def kubelet_argv(lay: Layout, bin_dir: Path, node: Node | None = None) -> list[str]:
    node = node or lay.node(1)
    argv = [
        str(bin_dir / "kubelet"),
        f"--config={node.kubelet / 'config.yaml'}",
        f"--kubeconfig={node.kubeconfig}",
        f"--root-dir={node.kubelet / 'root'}",
        f"--cert-dir={node.kubelet / 'pki'}",
        f"--hostname-override={node.name}",
        f"--node-ip={node.ip}",
        "--v=1",
    ]
    if node.zone:
        # NodeRestriction lets a kubelet set this label on its own Node (kubernetes.io/hostname it sets itself).
        argv.append(f"--node-labels={L.ZONE_LABEL}={node.zone}")
    return argv


def kube_proxy_config(lay: Layout, node: Node | None = None) -> str:
    node = node or lay.node(1)
    doc = {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(lay.kubeconfigs / "kube-proxy.conf")},
        "mode": "iptables",
        "clusterCIDR": L.CLUSTER_CIDR,
        "hostnameOverride": node.name,
        "bindAddress": node.ip,
        "healthzBindAddress": f"{node.ip}:10256",
        "metricsBindAddress": "127.0.0.1:10249",
        # Leave the machine-wide conntrack table size alone (it is not namespaced).
        "conntrack": {"maxPerCore": 0, "min": 0},
        # Lowering oom_score_adj needs CAP_SYS_RESOURCE, which this kind of machine withholds.
        "oomScoreAdj": 0,
        "iptables": {"masqueradeAll": False, "syncPeriod": "5s", "minSyncPeriod": "0s"},
    }
    return yaml.safe_dump(doc, sort_keys=False)


def kube_proxy_argv(lay: Layout, bin_dir: Path, node: Node | None = None) -> list[str]:
    node = node or lay.node(1)
    return [str(bin_dir / "kube-proxy"), f"--config={node.kube_proxy_config}", "--v=1"]
