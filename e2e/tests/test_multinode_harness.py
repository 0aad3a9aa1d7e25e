"""The multi-node harness (issue 16, item 1), checked on real nodes: 3 nodes in 3 zones, pods reaching each
other and Services across nodes, per-node kubelet identities, and the failure contract (`node stop`,
`start`, `partition`, `heal`).

The session's cluster has one node (the other e2e tests are written for one). This module adds nodes 2 and
3 to it, labels node 1 zone-a, and removes them again at the end, so the session goes on as it was. A
session started with OMENDB_E2E_NODES=3 already has them: they are used and left in place.
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from e2e import cluster, images, network, nodes, procs
from e2e import layout as L
from e2e.kube import Kube
from e2e.layout import Layout, Node

ZONES = ("zone-a", "zone-b", "zone-c")
WEB_PORT = 3000
HOSTNAME = "kubernetes.io/hostname"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def three_nodes(e2e_cluster: Layout, kube: Kube) -> Iterator[list[Node]]:
    lay = e2e_cluster
    had = {n.index for n in lay.nodes()}
    node1 = kube.kubectl("get", "node", L.NODE_NAME, "-o", "json").stdout
    labelled = L.ZONE_LABEL not in json.loads(node1)["metadata"].get("labels", {})
    if labelled:
        kube.kubectl("label", "node", L.NODE_NAME, f"{L.ZONE_LABEL}={ZONES[0]}")
    added: list[Node] = []
    try:
        bin_dir = cluster.bin_dir_of(lay)
        tarballs = images.cluster_images(bin_dir) + images.project_images()
        for index in (2, 3):
            if index not in had:
                t0 = time.monotonic()
                added.append(nodes.add(lay, index, ZONES[index - 1], bin_dir, tarballs))
                print(f"node {index} added in {time.monotonic() - t0:.0f}s")
        yield [lay.find_node(str(i)) for i in (1, 2, 3)]
    finally:
        problems = [p for n in reversed(added) for p in nodes.remove(lay, n)]
        if labelled:
            kube.kubectl("label", "node", L.NODE_NAME, f"{L.ZONE_LABEL}-", check=False)
        assert not problems, problems


def _pod(name: str, image: str, node: Node, command: list[str], restart: str = "Always",
         **extra: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": name}}, "spec": {
        "nodeSelector": {HOSTNAME: node.name},
        "restartPolicy": restart,
        "terminationGracePeriodSeconds": 1,
        "containers": [{"name": "main", "image": image, "imagePullPolicy": "Never", "command": command,
                        **extra}]}}


def _node(kube: Kube, name: str) -> dict[str, Any]:
    obj: dict[str, Any] = json.loads(kube.kubectl("get", "node", name, "-o", "json").stdout)
    return obj


def _ready(kube: Kube, name: str) -> bool:
    conds = {c["type"]: c["status"] for c in _node(kube, name)["status"].get("conditions", [])}
    return conds.get("Ready") == "True"


def _pod_running_on(kube: Kube, namespace: str, name: str, node: Node) -> bool:
    pod = kube.get(namespace, "pod", name)
    statuses = pod["status"].get("containerStatuses") or [{}]
    return pod["spec"].get("nodeName") == node.name and bool(statuses[0].get("ready"))


def _cluster_cli(*args: str) -> str:
    """The contract as a person types it: `python -m e2e.cluster ...` from the repository."""
    res = subprocess.run([sys.executable, "-m", "e2e.cluster", *args], capture_output=True, text=True,
                         timeout=600, cwd=REPO)
    assert res.returncode == 0, f"e2e.cluster {' '.join(args)}: {res.stdout}{res.stderr}"
    return res.stdout


def test_three_nodes_ready_in_three_zones_with_their_own_identity(kube: Kube, three_nodes: list[Node],
                                                                   e2e_cluster: Layout) -> None:
    for node, zone in zip(three_nodes, ZONES, strict=True):
        kube.wait_until(f"{node.name} Ready", functools.partial(_ready, kube, node.name), 60)
        labels = _node(kube, node.name)["metadata"]["labels"]
        assert (labels[L.ZONE_LABEL], labels[HOSTNAME]) == (zone, node.name)
    # Node 3's kubelet is `system:node:omendb-e2e-node-3`: NodeRestriction lets it label itself only.
    as_node3 = Kube(kube.bin_dir, three_nodes[2].kubeconfig)
    denied = as_node3.kubectl("label", "node", three_nodes[1].name, "intruder=yes", check=False)
    assert denied.returncode != 0 and "forbidden" in denied.stderr.lower(), denied.stderr
    status = _cluster_cli("status", "--state-dir", str(e2e_cluster.root))
    rows = [line.split() for line in status.splitlines()]
    for node, zone in zip(three_nodes, ZONES, strict=True):
        assert [node.name, f"zone={zone}", "Ready", "running"] in rows, status


def test_a_pod_on_node_3_reaches_a_pod_on_node_1_by_ip_and_service(kube: Kube, namespace: str, engine_image: str,
                                                                    three_nodes: list[Node]) -> None:
    node1, _, node3 = three_nodes
    kube.apply(namespace, _pod("web", engine_image, node1,
                               ["python3", "-m", "http.server", str(WEB_PORT), "--directory", "/etc"],
                               readinessProbe={"httpGet": {"path": "/hostname", "port": WEB_PORT},
                                               "periodSeconds": 1}),
               {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
                "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": WEB_PORT}]}})
    kube.wait_until("web Ready on node 1", lambda: _pod_running_on(kube, namespace, "web", node1), 120)
    pod_ip = kube.get(namespace, "pod", "web")["status"]["podIP"]
    cluster_ip = kube.get(namespace, "service", "web")["spec"]["clusterIP"]
    urls = [f"http://{pod_ip}:{WEB_PORT}/hostname", f"http://{cluster_ip}/hostname",
            f"http://web.{namespace}.svc.cluster.local/hostname"]
    script = ("import urllib.request\n"
              f"for url in {urls!r}:\n"
              "    print(url, urllib.request.urlopen(url, timeout=10).read().decode().strip())\n")
    kube.apply(namespace, _pod("client", engine_image, node3, ["python3", "-c", script], restart="Never"))

    def finished() -> str | None:
        phase = kube.get(namespace, "pod", "client")["status"].get("phase")
        return str(phase) if phase in ("Succeeded", "Failed") else None

    phase = kube.wait_until("client done", finished, 120)
    out = kube.kubectl("-n", namespace, "logs", "client").stdout
    assert phase == "Succeeded", out + kube.dump(namespace)
    assert kube.get(namespace, "pod", "client")["spec"]["nodeName"] == node3.name
    assert [line.split()[0] for line in out.splitlines()] == urls, out
    assert pod_ip.startswith("10.244.0.") and not kube.get(namespace, "pod", "client")["status"]["podIP"] \
        .startswith("10.244.0."), "node 3's pods have a /24 of their own"


def _sleeper_pids(kube: Kube, namespace: str, node: Node) -> list[int]:
    """The host pids of pod `sleeper`'s container process (found by the pod's UID in its cgroup path)."""
    uid = kube.get(namespace, "pod", "sleeper")["metadata"]["uid"]
    found = []
    for pid in procs.in_cgroups(node.cgroup_root):
        try:
            cgroup = Path(f"/proc/{pid}/cgroup").read_text()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if (uid in cgroup or uid.replace("-", "_") in cgroup) and b"sleep" in cmdline and procs.running(pid):
            found.append(pid)
    return found


def _sleeper_pid(kube: Kube, namespace: str, node: Node) -> int:
    pids: list[int] = kube.wait_until(f"the sleeper's process on {node.name}",
                                      lambda: _sleeper_pids(kube, namespace, node), 120)
    return pids[0]


def test_node_stop_kills_everything_and_start_brings_it_back(kube: Kube, namespace: str, engine_image: str,
                                                             three_nodes: list[Node], e2e_cluster: Layout) -> None:
    lay, node3 = e2e_cluster, three_nodes[2]
    kube.apply(namespace, _pod("sleeper", engine_image, node3, ["python3", "-c", "import time; time.sleep(1e6)"],
                               readinessProbe={"exec": {"command": ["true"]}, "periodSeconds": 1}))
    kube.wait_until("sleeper running on node 3", lambda: _pod_running_on(kube, namespace, "sleeper", node3), 120)
    before = nodes.node_pids(lay, node3)
    first = _sleeper_pid(kube, namespace, node3)
    assert first in before
    _cluster_cli("node", "stop", node3.name, "--state-dir", str(lay.root))
    assert nodes.node_pids(lay, node3) == [], "every process of the node died at once"
    assert all(not procs.running(p) for p in before)
    t0 = time.monotonic()
    kube.wait_until("node 3 NotReady", lambda: not _ready(kube, node3.name), 150)
    print(f"node 3 NotReady {time.monotonic() - t0:.0f}s after `node stop`")
    _cluster_cli("node", "start", node3.name, "--state-dir", str(lay.root))
    assert _ready(kube, node3.name)
    # The kubelet runs the pod's container again on the same node: a new process.
    kube.wait_until("sleeper running again", lambda: _pod_running_on(kube, namespace, "sleeper", node3), 120)
    assert _sleeper_pid(kube, namespace, node3) not in before


@pytest.mark.parametrize("index", [3, 1], ids=["node-3", "node-1-beside-the-control-plane"])
def test_partition_stops_heartbeats_while_processes_run_and_heal_restores(
        kube: Kube, namespace: str, engine_image: str, three_nodes: list[Node], e2e_cluster: Layout,
        index: int) -> None:
    lay, node3 = e2e_cluster, three_nodes[index - 1]
    others = [n for n in three_nodes if n is not node3]
    kube.apply(namespace, _pod("sleeper", engine_image, node3, ["python3", "-c", "import time; time.sleep(1e6)"]))
    kube.wait_until(f"sleeper running on {node3.name}", lambda: _pod_running_on(kube, namespace, "sleeper", node3),
                    120)
    sleeper = _sleeper_pid(kube, namespace, node3)
    try:
        _cluster_cli("node", "partition", node3.name, "--state-dir", str(lay.root))
        assert network.partitioned(node3)
        t0 = time.monotonic()
        kube.wait_until(f"{node3.name} NotReady", lambda: not _ready(kube, node3.name), 90)
        print(f"{node3.name} NotReady {time.monotonic() - t0:.0f}s after `node partition`")
        for component in nodes.COMPONENTS:
            assert procs.alive(node3.component(component), lay.pids), f"{component} of {node3.name} still runs"
        assert procs.running(sleeper), "the pod's process still runs"
        # The API server and the other nodes go on.
        assert all(_ready(kube, n.name) for n in others)
        status = _cluster_cli("status", "--state-dir", str(lay.root))
        assert [node3.name, f"zone={ZONES[index - 1]}", "NotReady", "running,partitioned"] in \
            [line.split() for line in status.splitlines()], status
    finally:
        _cluster_cli("node", "heal", node3.name, "--state-dir", str(lay.root))
    kube.wait_until(f"{node3.name} Ready after heal", lambda: _ready(kube, node3.name), 90)
    assert procs.running(sleeper)
