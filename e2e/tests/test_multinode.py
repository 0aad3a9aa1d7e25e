"""Many nodes (issue 16): the harness checked on real nodes, then the journeys of an OmenDB over them.

Harness: 3 nodes in 3 zones, pods reaching each other and Services across nodes, per-node kubelet
identities, and the failure contract (`node stop`, `start`, `partition`, `heal`).

Journeys: a 3-pod OmenDB spread over the 3 nodes, a writer on node 1 writing through its Service, and,
one after another, a drain of the primary's node, a stop of it, the loss of its zone, a stop that lasts
until the operator removes the old primary's pod by force, ten partitions of it
(synchronous replication: nothing acknowledged may be lost), and two with asynchronous replication (the
loss window is measured). After each, a checker scans the database: every acknowledged write present,
nothing it cannot explain. The figures end up in one table (`make bench-nodes`).

The session's cluster has one node (the other e2e tests are written for one). This module adds nodes 2 and
3 to it, labels node 1 zone-a, and removes them again at the end, so the session goes on as it was. A
session started with OMENDB_E2E_NODES=3 already has them: they are used and left in place.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from e2e import cluster, images, network, nodes, procs
from e2e import journeys as J
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


# ---- The journeys (issue 16, item 3) ------------------------------------------------------------------
# One OmenDB of 3 pods spread over the 3 nodes (one synchronous replica), a writer on node 1 writing
# through its Service, and the failures of the primary's node one after another. After each, the checker
# scans the database: every acknowledged write there, nothing it cannot explain. The figures of every
# scenario are printed as a table at the end (and written to $OMENDB_JOURNEY_REPORT: `make bench-nodes`).

FIGURES: list[J.Figures] = []


@pytest.fixture(scope="module")
def spread_db(kube: Kube, three_nodes: list[Node], operator: str, journey_namespace: str) -> Iterator[str]:
    ns = journey_namespace
    kube.apply(ns, J.omendb(synchronous=True))
    kube.wait_until("three pods: one primary, two streaming replicas", lambda: J.settled(kube, ns), 600, 3)
    kube.apply(ns, J.writer_pod(L.NODE_NAME))
    kube.wait_until("the writer's first acknowledged write", lambda: any(w.ok for w in J.writes(kube, ns)), 180, 2)
    yield ns
    table = J.report(FIGURES)
    print(f"\nJOURNEY-FIGURES\n{table}\n", flush=True)
    target = os.environ.get("OMENDB_JOURNEY_REPORT")
    if target:
        Path(target).write_text(f"{table}\n\n{J.as_json(FIGURES)}\n")
    # Gone before nodes 2 and 3 are removed, so no pod is left on a node that no longer exists.
    kube.kubectl("-n", ns, "delete", "pod", "writer", "--wait=false", check=False)
    kube.kubectl("-n", ns, "delete", "omendb", J.NAME, "--wait=true", check=False, timeout=120)
    kube.wait_until("the OmenDB's pods gone", lambda: not J.pods(kube, ns), 180, 2)


def _node_named(three_nodes: list[Node], name: str) -> Node:
    return next(n for n in three_nodes if n.name == name)


def _zones(kube: Kube) -> dict[str, str]:
    nodes_ = json.loads(kube.kubectl("get", "nodes", "-o", "json").stdout)["items"]
    return {n["metadata"]["name"]: n["metadata"]["labels"].get(L.ZONE_LABEL, "") for n in nodes_}


def _settle(kube: Kube, ns: str) -> dict[str, Any]:
    st: dict[str, Any] = kube.wait_until("the OmenDB to settle: 3 ready pods, one primary, two replicas",
                                         lambda: J.settled(kube, ns), 600, 2)
    return st


def _primary_off_node_1(kube: Kube, ns: str) -> tuple[str, str]:
    """(primary, its node), moving the primary off node 1 first (a switchover) when it is there: node 1
    carries the control plane, the operator and the writer, which must watch the failure from outside."""
    st = _settle(kube, ns)
    where = J.placement(kube, ns)
    primary = str(st["primaryPod"])
    if where[primary] != L.NODE_NAME:
        return primary, where[primary]
    target = next(p for p, node in sorted(where.items()) if node != L.NODE_NAME)
    kube.kubectl("-n", ns, "annotate", "omendb", J.NAME, f"omendb.io/switchover-to={target}", "--overwrite")
    kube.wait_until(f"the switchover to {target}", lambda: (J.settled(kube, ns) or {}).get("primaryPod") == target,
                    180, 2)
    return target, where[target]


def _respread(kube: Kube, ns: str) -> None:
    """After a drain or a node loss a replacement pod may share a node with another: delete a replica
    there, so it is scheduled again onto the node that has none (the default spread)."""
    for _ in range(3):
        st = _settle(kube, ns)
        where = J.placement(kube, ns)
        if len(set(where.values())) == 3:
            return
        shared = [p for p, node in sorted(where.items()) if list(where.values()).count(node) > 1
                  and p != st["primaryPod"]]
        kube.kubectl("-n", ns, "delete", "pod", shared[-1])
        time.sleep(3)
    raise AssertionError(f"pods not spread over 3 nodes: {J.placement(kube, ns)}")


def _new_primary(kube: Kube, ns: str, old: str) -> str:
    primary: str = kube.wait_until(f"a primary other than {old}", lambda: (
        p if (p := J.status(kube, ns).get("primaryPod")) != old else None), 180, 1)
    return primary


def _acked_after(kube: Kube, ns: str, t: float) -> J.Write:
    try:
        write: J.Write = kube.wait_until("a write acknowledged through the Service after the failure",
                                         lambda: next((w for w in J.writes(kube, ns) if w.started >= t and w.ok),
                                                      None), 240, 1)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{_diagnosis(kube, ns)}") from None
    return write


def _diagnosis(kube: Kube, ns: str) -> str:
    """What the writer saw last, where the pods are, and what each engine says about itself."""
    errors = sorted({w.error for w in J.writes(kube, ns)[-40:] if not w.ok})
    pods = kube.kubectl("-n", ns, "get", "pods", "-o", "wide", "--show-labels", check=False).stdout
    status = J.status(kube, ns)
    stats = []
    for pod in sorted(J.placement(kube, ns)):
        script = ("import httpx;a=(open('/u/username').read(),open('/u/password').read());"
                  f"print(httpx.get('https://{pod}.{J.NAME}-headless.{ns}.svc:3000/v1/stats',auth=a,verify='/ca/ca.crt',"
                  "timeout=5).text[:1500])")
        res = kube.kubectl("-n", ns, "exec", "writer", "--", "python", "-c", script, check=False, timeout=30)
        stats.append(f"{pod}: {res.stdout.strip() or res.stderr.strip()[-300:]}")
    return (f"writer's last errors: {errors}\npods:\n{pods}\nstatus.pods: {status.get('pods')}\n"
            f"status.failover: {status.get('failover')}\n" + "\n".join(stats))


def _measure(kube: Kube, ns: str, scenario: str, failed_at: float, old: str, reasons: tuple[str, ...]) -> J.Figures:
    """Settle, wait for a write after the failure, scan, and record the figures. Unexplained records fail
    every scenario."""
    st = _settle(kube, ns)
    _acked_after(kube, ns, failed_at)
    log = J.writes(kube, ns)
    records = J.scan(kube, ns)
    result = J.check(log, records, J.writes(kube, ns))
    how = [m for t, r, m in J.events(kube, ns, reasons) if t >= failed_at - 2]
    fig = J.figures(scenario, failed_at, log, result, old, str(st["primaryPod"]), how=how[0][:90] if how else "")
    FIGURES.append(fig)
    print("JOURNEY-MEASURED " + J.as_json([fig]), flush=True)
    assert result.unexplained == [], (scenario, result.unexplained[:20])
    return fig


def test_journey_the_three_pods_spread_over_three_nodes_and_zones(kube: Kube, spread_db: str) -> None:
    where = J.placement(kube, spread_db)
    zones = _zones(kube)
    assert len(set(where.values())) == 3, where
    assert len({zones[n] for n in where.values()}) == 3, (where, zones)


def test_journey_drain_of_the_primarys_node_switches_over_first_and_loses_nothing(
        kube: Kube, spread_db: str) -> None:
    ns = spread_db
    old, node = _primary_off_node_1(kube, ns)
    started = time.time()
    res = kube.kubectl("drain", node, "--ignore-daemonsets", "--delete-emptydir-data", "--timeout=300s",
                       check=False, timeout=330)
    kube.kubectl("uncordon", node)
    assert res.returncode == 0, res.stdout + res.stderr
    fig = _measure(kube, ns, "drain of the primary's node", started, old, ("DrainSwitchover",))
    last = J.status(kube, ns)["failover"]["last"]
    assert (last["reason"], last["from"]) == ("switchover", old), last
    assert fig.how, "a DrainSwitchover event"
    assert fig.rpo_writes == 0, fig  # a switchover loses no acknowledged write, even asynchronously
    _respread(kube, ns)


def _lose_node(kube: Kube, lay: Layout, ns: str, node: Node, scenario: str) -> J.Figures:
    """Stop `node` (a power loss); the operator must see the primary gone while the Node is still Ready."""
    old = J.status(kube, ns)["primaryPod"]
    failed_at = time.time()
    nodes.stop(lay, node)
    try:
        _new_primary(kube, ns, old)
        _acked_after(kube, ns, failed_at)
    finally:
        nodes.start(lay, node, cluster.bin_dir_of(lay))
    fig = _measure(kube, ns, scenario, failed_at, old, ("FailoverStarted",))
    # Detected by the operator itself (heartbeat, replicas' silence), not by NotReady ~40 s later.
    assert "unreachable (operator and replicas)" in fig.how, fig
    assert fig.rpo_writes == 0, fig  # one synchronous replica: no acknowledged write lost
    _respread(kube, ns)
    return fig


def test_journey_stop_of_the_primarys_node(kube: Kube, spread_db: str, three_nodes: list[Node],
                                           e2e_cluster: Layout) -> None:
    _, node = _primary_off_node_1(kube, spread_db)
    _lose_node(kube, e2e_cluster, spread_db, _node_named(three_nodes, node), "stop of the primary's node")


def test_journey_loss_of_the_primarys_zone(kube: Kube, spread_db: str, three_nodes: list[Node],
                                           e2e_cluster: Layout) -> None:
    _, node = _primary_off_node_1(kube, spread_db)
    zones = _zones(kube)
    lost = [n for n in three_nodes if zones[n.name] == zones[node]]
    assert len(lost) == 1, "one node a zone here: the zone goes with its node"
    fig = _lose_node(kube, e2e_cluster, spread_db, lost[0], f"loss of zone {zones[node]}")
    assert zones[J.placement(kube, spread_db)[fig.new_primary]] != zones[node]


def test_journey_a_node_lost_for_good_has_its_pods_removed_by_force_and_made_again(
        kube: Kube, spread_db: str, three_nodes: list[Node], e2e_cluster: Layout) -> None:
    """The primary's node stays down: after the failover Kubernetes marks its pods for deletion, but they stay
    Terminating (no kubelet confirms). The operator removes the old primary's pod once its node has been
    silent for 60 s and its grace period is over (plans/lost_pods.py); the StatefulSet makes it again, and
    when the node returns everything rejoins with no acknowledged write lost."""
    ns = spread_db
    old, node_name = _primary_off_node_1(kube, ns)
    node = _node_named(three_nodes, node_name)
    old_uid = kube.get(ns, "pod", old)["metadata"]["uid"]
    failed_at = time.time()
    nodes.stop(e2e_cluster, node)
    try:
        _new_primary(kube, ns, old)
        _acked_after(kube, ns, failed_at)
        removed = kube.wait_until("the operator to remove the old primary's pod by force", lambda: next(
            (m for t, _, m in J.events(kube, ns, ("PodOnLostNodeRemoved",)) if t >= failed_at - 2), None), 300, 3)
        removed_after = time.time() - failed_at
        assert old in removed and node_name in removed, removed
        again = kube.wait_until(f"the StatefulSet to make {old} again", lambda: (
            p if (p := kube.get_or_none(ns, "pod", old)) and p["metadata"]["uid"] != old_uid else None), 120, 2)
        print(f"JOURNEY-LOST-NODE {old} removed {removed_after:.0f}s after the stop; made again "
              f"(uid {again['metadata']['uid']}): {removed}", flush=True)
    finally:
        nodes.start(e2e_cluster, node, cluster.bin_dir_of(e2e_cluster))
    fig = _measure(kube, ns, "node lost for good (pod removed by force)", failed_at, old, ("FailoverStarted",))
    assert "unreachable (operator and replicas)" in fig.how, fig
    assert fig.rpo_writes == 0, fig
    _respread(kube, ns)


def _partition_round(kube: Kube, ns: str, three_nodes: list[Node], scenario: str) -> J.Figures:
    old, node_name = _primary_off_node_1(kube, ns)
    node = _node_named(three_nodes, node_name)
    network.partition(node)
    failed_at = time.time()  # once every rule is in (a write may still pass while they are being added)
    try:
        _new_primary(kube, ns, old)
        _acked_after(kube, ns, failed_at)
    finally:
        network.heal(node)
    # Healed: the old primary, fenced all along, is told to follow the new one and rejoins as a replica.
    return _measure(kube, ns, scenario, failed_at, old, ("FailoverStarted",))


def test_journey_ten_partitions_of_the_primarys_node_lose_no_acknowledged_write(
        kube: Kube, spread_db: str, three_nodes: list[Node]) -> None:
    for round_ in range(1, 11):
        fig = _partition_round(kube, spread_db, three_nodes, f"partition {round_} of the primary's node (sync)")
        assert fig.rpo_writes == 0, fig
        assert "unreachable (operator and replicas)" in fig.how, fig


def _rolled(kube: Kube, ns: str) -> bool:
    """Every pod runs the StatefulSet's newest template (the operator rolls them itself, one at a time, so
    the StatefulSet's currentRevision is no guide) and the OmenDB has settled."""
    revision = (kube.get(ns, "statefulset", J.NAME).get("status") or {}).get("updateRevision")
    pods = J.pods(kube, ns)
    return len(pods) == 3 and all((p["metadata"].get("labels") or {}).get("controller-revision-hash") == revision
                                  for p in pods) and J.settled(kube, ns) is not None


def test_journey_partitions_with_asynchronous_replication_lose_at_most_the_fence_window(
        kube: Kube, spread_db: str, three_nodes: list[Node]) -> None:
    ns = spread_db
    kube.kubectl("-n", ns, "patch", "omendb", J.NAME, "--type=merge", "-p",
                 json.dumps({"spec": {"replication": {"synchronousReplicas": 0}}}))
    kube.wait_until("the configuration to say asynchronous", lambda: "synchronous_replicas = 0" in kube.get(
        ns, "configmap", f"{J.NAME}-config")["data"]["omendb.toml"], 120, 2)
    kube.wait_until("the pods rolled onto it", lambda: _rolled(kube, ns), 600, 3)
    _respread(kube, ns)
    for round_ in (1, 2):
        fig = _partition_round(kube, ns, three_nodes, f"partition {round_} of the primary's node (async)")
        # Lost: only what the cut-off primary acknowledged around the cut, until its fence went up (5 s
        # after its last replica poll and heartbeat), never anything older or later.
        assert fig.rpo_window_seconds <= 2.0 and fig.rpo_last_seconds <= J.FENCE_SECONDS + 3, fig
