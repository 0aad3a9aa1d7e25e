"""The network of a node k > 1: its namespace, its link to node 1, the routes to its pods, partitions.

Node 1's namespace (which also holds the control plane and the veth to the host) is the router: node k
has one veth pair to it (`omendb-lK` there, `omendb-up` in node k, addresses 10.200.K.1 and 10.200.K.2
on a /30), a default route through it, and node 1 has a route to node k's pod /24 through node k. So
node k reaches the API server (10.200.0.2), every other node and their pods, and pods reach each
other and every Service, without masquerading. Node 1 routes to the host as before.

A partition is four iptables DROP rules in node 1's namespace on the link to node k (in and out, to
node 1 itself and forwarded): the link stays up and packets are silently lost, as on a cut cable,
so node k's kubelet sees timeouts rather than "network unreachable", and its processes keep running.
Node 1 itself is partitioned by five rules in its namespace that cut its kubelet, kube-proxy and pods
from the API server and everything outside its pod /24, while the control plane beside them goes on.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from e2e import layout as L
from e2e.layout import Node


class NetworkError(RuntimeError):
    pass


def _run(argv: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(argv, capture_output=True, text=True)
    if check and res.returncode != 0:
        raise NetworkError(f"`{' '.join(argv)}` failed ({res.returncode}): {res.stderr.strip()}")
    return res


def _in(netns: str, *argv: str) -> list[str]:
    return ["ip", "netns", "exec", netns, *argv]


def connect(node: Node) -> None:
    """Create node k's namespace and its link to node 1."""
    _run(["ip", "netns", "add", node.netns])
    _run(["ip", "-n", L.NETNS, "link", "add", node.link, "type", "veth", "peer", "name", L.NODE_UPLINK,
          "netns", node.netns])
    _run(["ip", "-n", L.NETNS, "addr", "add", f"{node.gateway}/{L.VETH_PREFIX}", "dev", node.link])
    _run(["ip", "-n", L.NETNS, "link", "set", node.link, "up"])
    n = ["ip", "-n", node.netns]
    _run([*n, "link", "set", "lo", "up"])
    _run([*n, "addr", "add", f"{node.ip}/{L.VETH_PREFIX}", "dev", L.NODE_UPLINK])
    _run([*n, "link", "set", L.NODE_UPLINK, "up"])
    _run([*n, "route", "add", "default", "via", node.gateway])
    # As in node 1: route between the pod bridge and the uplink, Service NAT for bridged pod traffic.
    for key in ("net.ipv4.ip_forward=1", "net.bridge.bridge-nf-call-iptables=1",
                "net.ipv4.conf.all.route_localnet=1"):
        _run(_in(node.netns, "sysctl", "-q", "-w", key))


def route_pods(node: Node, pod_cidr: str) -> None:
    """Node 1 (the router) sends traffic for node k's pods to node k."""
    _run(["ip", "-n", L.NETNS, "route", "replace", pod_cidr, "via", node.ip])


def disconnect(node: Node) -> list[str]:
    """Delete node k's namespace; its veth (and node 1's end, and the route through it) go with it."""
    problems = []
    heal(node, check=False)
    if Path(f"/run/netns/{node.netns}").exists():
        res = _run(["ip", "netns", "del", node.netns], check=False)
        if res.returncode != 0:
            problems.append(f"cannot delete network namespace {node.netns}: {res.stderr.strip()}")
    return problems


def _partition_rules(node: Node) -> list[list[str]]:
    tag = ["-m", "comment", "--comment", f"omendb-e2e-partition-{node.name}"]
    if node.first:
        # Node 1 shares its namespace with the control plane, which reaches the API server on 127.0.0.1
        # (configs.LOOPBACK_USERS): what is dropped is node 1's kubelet and kube-proxy talking to
        # 10.200.0.2:6443 over lo, its pods talking to the API server, the API server talking to its
        # kubelet, and its pods' traffic to and from everything outside its pod /24.
        api = ["-p", "tcp", "--dport", str(L.APISERVER_PORT)]
        return [["INPUT", "-i", "lo", "-d", L.NODE_IP, *api, *tag, "-j", "DROP"],
                ["INPUT", "-s", L.POD_CIDR, *api, *tag, "-j", "DROP"],
                ["INPUT", "-p", "tcp", "--dport", "10250", *tag, "-j", "DROP"],
                ["FORWARD", "-s", L.POD_CIDR, "!", "-d", L.POD_CIDR, *tag, "-j", "DROP"],
                ["FORWARD", "-d", L.POD_CIDR, "!", "-s", L.POD_CIDR, *tag, "-j", "DROP"]]
    return [["INPUT", "-i", node.link, *tag, "-j", "DROP"],
            ["OUTPUT", "-o", node.link, *tag, "-j", "DROP"],
            ["FORWARD", "-i", node.link, *tag, "-j", "DROP"],
            ["FORWARD", "-o", node.link, *tag, "-j", "DROP"]]


def _iptables(action: str, rule: list[str]) -> subprocess.CompletedProcess[str]:
    chain, *spec = rule
    pos = ["1"] if action == "-I" else []
    return _run(_in(L.NETNS, "iptables", "-w", action, chain, *pos, *spec), check=False)


def partitioned(node: Node) -> bool:
    if not Path(f"/run/netns/{L.NETNS}").exists():
        return False
    return all(_iptables("-C", r).returncode == 0 for r in _partition_rules(node))


def partition(node: Node) -> None:
    for rule in _partition_rules(node):
        # First in their chains, ahead of kube-proxy's accept rules for established connections.
        if _iptables("-C", rule).returncode != 0:
            res = _iptables("-I", rule)
            if res.returncode != 0:
                raise NetworkError(f"cannot add partition rule {rule} in {L.NETNS}: {res.stderr.strip()}")


def heal(node: Node, check: bool = True) -> None:
    for rule in _partition_rules(node):
        while _iptables("-C", rule).returncode == 0:
            res = _iptables("-D", rule)
            if res.returncode != 0 and check:
                raise NetworkError(f"cannot remove partition rule {rule} in {L.NETNS}: {res.stderr.strip()}")
            if res.returncode != 0:
                break
