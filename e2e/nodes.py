"""Node lifecycle: add a node k > 1 to a running cluster, stop any node like a power loss, start it
again, remove it; and each node's state for `status`.

A node k > 1 is built like node 1 but in its own namespaces (e2e.network for the network), with its own
containerd (own root, state and socket), its own kubelet (its own client certificate
`system:node:NAME`, so the Node authorizer and NodeRestriction confine it to its own Node and pods),
its own kube-proxy and its own cgroup root. It carries `kubernetes.io/hostname` (set by its kubelet)
and, when given one, `topology.kubernetes.io/zone`. Its pod /24 is what the node IPAM controller
assigns it on registration: the CNI configuration is written from it, which is what makes the node
Ready (containerd reports no network until then).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from e2e import api, configs, network, pki, procs
from e2e import layout as L
from e2e.containerd import ctr, import_image
from e2e.layout import Layout, Node

# A node's own processes, in start order.
COMPONENTS = ("containerd", "kubelet", "kube-proxy")


class NodeError(RuntimeError):
    pass


def _run(argv: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(argv, capture_output=True, text=True)
    if check and res.returncode != 0:
        raise NodeError(f"`{' '.join(argv)}` failed ({res.returncode}): {res.stderr.strip()}")
    return res


def _tail(lay: Layout, component: str, lines: int = 30) -> str:
    path = lay.logs / f"{component}.log"
    if not path.exists():
        return f"(no log {path})"
    text = path.read_text(errors="replace").splitlines()[-lines:]
    return f"--- last {len(text)} lines of {path} ---\n" + "\n".join(text)


def _wait(what: str, check: Callable[[], object], timeout: float, lay: Layout, component: str) -> object:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - any failure means "not yet"; the last one is reported
            last = exc
        if (lay.pids / f"{component}.pid").exists() and procs.alive(component, lay.pids) is None:
            raise NodeError(f"{component} exited while waiting for {what}\n{_tail(lay, component)}")
        time.sleep(0.5)
    raise NodeError(f"timed out after {timeout:.0f}s waiting for {what} (last error: {last})\n"
                    f"{_tail(lay, component)}")


# ---------------------------------------------------------------- the record of nodes


def write_record(lay: Layout, nodes: list[Node]) -> None:
    lay.node_record.write_text(json.dumps([{"index": n.index, "zone": n.zone} for n in nodes], indent=1) + "\n")


def _forget(lay: Layout, node: Node) -> None:
    write_record(lay, [n for n in lay.nodes() if n.index != node.index])


# ---------------------------------------------------------------- mount namespace


def create_mount_ns(node: Node, record: Callable[[str], None] | None = None) -> None:
    """A persistent private mount namespace for the node's containerd and kubelet, with the paths they
    hard-code (/var/log, /var/lib/cni, /run/netns) bound to the node's own directories."""
    node.ns_dir.mkdir(parents=True, exist_ok=True)
    # The namespace file must sit on a private mount, whatever the host's propagation is.
    _run(["mount", "--bind", str(node.ns_dir), str(node.ns_dir)])
    _run(["mount", "--make-private", str(node.ns_dir)])
    node.mount_ns.touch()
    _run(["unshare", f"--mount={node.mount_ns}", "--propagation", "private", "true"])
    for target, source in node.bind_targets.items():
        source.mkdir(parents=True, exist_ok=True)
        if not Path(target).exists():
            if record is not None:
                record(f"dir {target}")
            Path(target).mkdir(parents=True)
        _run(["nsenter", f"--mount={node.mount_ns}", "--", "mount", "--bind", str(source), target])


def mounts_under(path: Path) -> list[str]:
    out = []
    prefix = str(path)
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        mnt = line.split()[4].replace("\\040", " ")
        if mnt == prefix or mnt.startswith(prefix + "/"):
            out.append(mnt)
    return out


def unmount_under(path: Path) -> list[str]:
    """Unmount everything under `path`, deepest first; unmounting a namespace file releases the mount
    namespace and every mount in it. Return what could not be unmounted."""
    problems = []
    for mnt in sorted(mounts_under(path), key=len, reverse=True):
        if _run(["umount", mnt], check=False).returncode != 0:
            res = _run(["umount", "-l", mnt], check=False)
            if res.returncode != 0:
                problems.append(f"cannot unmount {mnt}: {res.stderr.strip()}")
    return problems


# ---------------------------------------------------------------- add, start, stop, remove


def add(lay: Layout, index: int, zone: str | None, bin_dir: Path, tarballs: list[Path],
        timeout: float = 180.0) -> Node:
    """Add node `index` (> 1) to the running cluster, Ready, with `tarballs` imported into its containerd."""
    node = lay.node(index, zone)
    if node.first or any(n.index == index for n in lay.nodes()):
        raise NodeError(f"node {index} ({node.name}) is node 1 or already in the cluster")
    write_record(lay, [*lay.nodes(), node])  # before anything exists, so `down` finds what follows
    try:
        _create(lay, node, bin_dir, tarballs, timeout)
    except BaseException:
        print(f"e2e.nodes: adding {node.name} failed; removing it", file=sys.stderr, flush=True)
        teardown(lay, node)
        _forget(lay, node)
        raise
    return node


def _create(lay: Layout, node: Node, bin_dir: Path, tarballs: list[Path], timeout: float) -> None:
    t0 = time.monotonic()
    network.connect(node)
    node.root.mkdir(parents=True, exist_ok=True)
    create_mount_ns(node)
    procs.create_cgroups(node.cgroup_root)
    pki.write_node_certs(lay.pki, node.name, node.ip, node.cert)
    node.kubeconfig.write_text(configs.kubeconfig(
        lay.apiserver_url, lay.pki / "ca.crt", lay.pki / f"kubelet-client{node.cert}.crt",
        lay.pki / f"kubelet-client{node.cert}.key", "kubelet"))
    node.containerd.mkdir(parents=True, exist_ok=True)
    (node.containerd / "config.toml").write_text(configs.containerd_config(lay, node))
    node.cni_conf.mkdir(parents=True, exist_ok=True)  # empty until the node has its pod CIDR
    node.kubelet.mkdir(parents=True, exist_ok=True)
    (node.kubelet / "config.yaml").write_text(configs.kubelet_config(lay, node))
    node.kube_proxy_config.write_text(configs.kube_proxy_config(lay, node))

    _start_containerd(lay, node, timeout)
    for tarball in tarballs:
        import_image(node, tarball)
    _start_kubelet(lay, node, bin_dir)
    with api.admin_client(lay) as client:
        def pod_cidr() -> str | None:
            obj = api.get_node(client, node.name)
            return obj.get("spec", {}).get("podCIDR") if obj else None

        cidr = str(_wait(f"{node.name} registered with a podCIDR", pod_cidr, timeout, lay,
                         node.component("kubelet")))
        (node.cni_conf / "10-omendb-e2e.conflist").write_text(configs.cni_config(cidr))
        network.route_pods(node, cidr)
        _wait(f"{node.name} Ready", lambda: api.ready(api.get_node(client, node.name)), timeout, lay,
              node.component("kubelet"))
    _start_kube_proxy(lay, node, bin_dir, timeout)
    print(f"e2e.nodes: {node.name} (zone {node.zone}, pods {cidr}) Ready in {time.monotonic() - t0:.0f}s",
          flush=True)


def _start_containerd(lay: Layout, node: Node, timeout: float) -> None:
    name = node.component("containerd")
    procs.start(name, ["containerd", f"--config={node.containerd / 'config.toml'}"], lay.pids, lay.logs,
                netns=node.netns, mount_ns=node.mount_ns)
    _wait(f"{name}", lambda: _run(ctr(node, "version"), check=False).returncode == 0, min(timeout, 60), lay, name)


def _start_kubelet(lay: Layout, node: Node, bin_dir: Path) -> None:
    procs.start(node.component("kubelet"), configs.kubelet_argv(lay, bin_dir, node), lay.pids, lay.logs,
                netns=node.netns, mount_ns=node.mount_ns)


def _start_kube_proxy(lay: Layout, node: Node, bin_dir: Path, timeout: float) -> None:
    name = node.component("kube-proxy")
    procs.start(name, configs.kube_proxy_argv(lay, bin_dir, node), lay.pids, lay.logs, netns=node.netns)
    probe = (f"import urllib.request; urllib.request.urlopen('http://{node.ip}:10256/healthz', timeout=3)")
    _wait(f"{name} /healthz", lambda: _run(["ip", "netns", "exec", node.netns, sys.executable, "-c", probe],
                                            check=False).returncode == 0, min(timeout, 60), lay, name)


def start(lay: Layout, node: Node, bin_dir: Path, timeout: float = 180.0) -> None:
    """Start a stopped node again (its state, images and Node object are still there) and wait for Ready."""
    if not stopped(lay, node):
        raise NodeError(f"{node.name} is running (`python -m e2e.cluster node stop {node.name}` first)")
    _start_containerd(lay, node, timeout)
    _start_kubelet(lay, node, bin_dir)
    _start_kube_proxy(lay, node, bin_dir, timeout)
    with api.admin_client(lay) as client:
        _wait(f"{node.name} Ready", lambda: api.ready(api.get_node(client, node.name)), timeout, lay,
              node.component("kubelet"))


def node_pids(lay: Layout, node: Node) -> list[int]:
    """Every process of the node: its kubelet, containerd and kube-proxy, the shims (in its mount
    namespace) and the containers (in its cgroup root)."""
    own = [procs.alive(node.component(c), lay.pids) for c in COMPONENTS]
    found = {p for p in own if p} | set(procs.in_mount_ns(node.mount_ns)) | set(procs.in_cgroups(node.cgroup_root))
    # A killed container whose shim died with it is a zombie until the host's init reaps it; it stays
    # listed in its cgroup meanwhile, but it is dead.
    return sorted(p for p in found if procs.running(p))


def stop(lay: Layout, node: Node) -> int:
    """A power loss: SIGKILL every process of the node in one go; return how many there were. Nothing is
    cleaned up (mounts, pod network namespaces, the Node object stay), as after a real crash."""
    killed = 0
    for _ in range(5):  # a shim may fork between listing and killing; look again until none is left
        pids = node_pids(lay, node)
        if not pids:
            break
        procs.kill_now(pids)
        killed += len(pids)
    left = node_pids(lay, node)
    if left:
        raise NodeError(f"processes of {node.name} survived SIGKILL: {left}")
    for c in COMPONENTS:
        (lay.pids / f"{node.component(c)}.pid").unlink(missing_ok=True)
    return killed


def stopped(lay: Layout, node: Node) -> bool:
    return procs.alive(node.component("kubelet"), lay.pids) is None


def teardown(lay: Layout, node: Node) -> list[str]:
    """Remove node k > 1 from the machine (processes, mounts, namespace, cgroups, files); return problems.
    The Node object is left to `remove` (the API server may be gone already, in `down`)."""
    problems: list[str] = []
    t0 = time.monotonic()
    # In order, as `down` does for node 1: the containers while their shims still reap them (SIGKILLed
    # containers whose shim is gone wait as zombies for the host's init, and their cgroups cannot be
    # removed until then), then the shims, then the rest.
    procs.stop(node.component("kubelet"), lay.pids)
    procs.kill_all(procs.in_cgroups(node.cgroup_root), grace=1.0)
    procs.stop(node.component("containerd"), lay.pids)
    procs.kill_all(procs.in_mount_ns(node.mount_ns), grace=1.0)
    procs.stop(node.component("kube-proxy"), lay.pids)
    try:
        stop(lay, node)
    except NodeError as exc:
        problems.append(str(exc))
    t1 = time.monotonic()
    problems += unmount_under(node.root)
    problems += network.disconnect(node)
    t2 = time.monotonic()
    problems += [f"cgroup not removed: {d}" for d in procs.remove_cgroups(node.cgroup_root)]
    print(f"e2e.nodes: {node.name} torn down in {time.monotonic() - t0:.0f}s (processes {t1 - t0:.0f}s, "
          f"mounts and network {t2 - t1:.0f}s, cgroups {time.monotonic() - t2:.0f}s)", file=sys.stderr, flush=True)
    if not mounts_under(node.root):
        shutil.rmtree(node.root, ignore_errors=True)
    for suffix in ("crt", "key"):
        for kind in ("client", "server"):
            (lay.pki / f"kubelet-{kind}{node.cert}.{suffix}").unlink(missing_ok=True)
    node.kubeconfig.unlink(missing_ok=True)
    return problems


def remove(lay: Layout, node: Node) -> list[str]:
    """Take node k > 1 out of the running cluster: tear it down and delete its Node object."""
    if node.first:
        raise NodeError(f"{node.name} is node 1 (the control plane's): use `python -m e2e.cluster down`")
    problems = teardown(lay, node)
    with api.admin_client(lay) as client:
        r = client.delete(f"/api/v1/nodes/{node.name}")
        if r.status_code not in (200, 404):
            problems.append(f"cannot delete Node {node.name}: {r.status_code} {r.text[:200]}")
    _forget(lay, node)
    return problems


def describe(lay: Layout, node: Node, client: object | None) -> str:
    """One line of `status`: name, zone (its Node's label, else the one it was started with), Ready, and
    stopped/partitioned."""
    import httpx

    ready, zone = "?", node.zone
    if isinstance(client, httpx.Client):
        try:
            obj = api.get_node(client, node.name)
            ready = "Ready" if api.ready(obj) else "NotReady"
            zone = ((obj or {}).get("metadata", {}).get("labels") or {}).get(L.ZONE_LABEL, zone)
        except httpx.HTTPError:
            ready = "?"
    state = ["stopped" if stopped(lay, node) else "running"]
    if network.partitioned(node):
        state.append("partitioned")
    return f"{node.name:22} zone={zone or '-':8} {ready:9} {','.join(state)}"
