"""The local Kubernetes cluster: `python -m e2e.cluster up [--nodes N] [--zones a,b,c]|down|status|env|logs`,
and `python -m e2e.cluster node stop|start|partition|heal NODE`.

`up` builds (or reuses) the binaries, installs missing Debian packages, creates the cluster's
network namespace, mount namespace and cgroup root, generates certificates and starts, in order
and each after the previous is healthy: etcd, kube-apiserver, kube-controller-manager,
kube-scheduler, containerd, kubelet, kube-proxy, then the add-ons (CoreDNS, the default
StorageClass and its local-directory provisioner). If any step fails, everything started so far is
stopped and removed, and the failing component's log tail is printed. `down` removes it all: the
processes the harness started (and the shims and containers under them), the namespaces (with
every mount, interface and iptables rule in them) and the cgroups.

With `--nodes N` the nodes 2..N are added once node 1 and the add-ons are up (e2e.nodes, e2e.network),
and the nodes carry `topology.kubernetes.io/zone`, assigned round-robin from `--zones`
(default zone-a,zone-b,zone-c). `node stop` SIGKILLs a node's kubelet, containerd, kube-proxy and
every process of its pods at once (a power loss); `node start` starts them again; `node partition`
drops every packet between a node (its kubelet, kube-proxy and pods) and the rest, API server
included, while its processes run; `node heal` ends that.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from e2e import api, binaries, configs, host, network, nodes, pki, procs
from e2e import layout as L
from e2e.api import admin_client
from e2e.containerd import ctr, import_image
from e2e.layout import Layout, Node

# Start order; `down` stops them in reverse.
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "containerd",
              "kubelet", "kube-proxy", "provisioner")


class ClusterError(RuntimeError):
    pass


def _run(argv: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(argv, capture_output=True, text=True)
    if check and res.returncode != 0:
        raise ClusterError(f"`{' '.join(argv)}` failed ({res.returncode}): {res.stderr.strip()}")
    return res


def _netns_exec(*argv: str) -> list[str]:
    return ["nsenter", f"--net=/run/netns/{L.NETNS}", "--", *argv]


def wait_for(what: str, check: Callable[[], bool], timeout: float, lay: Layout | None = None,
             log: str | None = None, interval: float = 0.5) -> None:
    """Poll `check` until true; on timeout raise with the component's log tail."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception as exc:  # noqa: BLE001 - any failure means "not yet"; the last one is reported
            last_exc = exc
        if lay is not None and log is not None and log in COMPONENTS and procs.alive(log, lay.pids) is None:
            raise ClusterError(f"{log} exited while waiting for {what}\n{log_tail(lay, log)}")
        time.sleep(interval)
    detail = f" (last error: {last_exc})" if last_exc else ""
    tail = log_tail(lay, log) if lay is not None and log is not None else ""
    raise ClusterError(f"timed out after {timeout:.0f}s waiting for {what}{detail}\n{tail}")


def log_tail(lay: Layout, name: str, lines: int = 40) -> str:
    path = lay.logs / f"{name}.log"
    if not path.exists():
        return f"(no log {path})"
    text = path.read_text(errors="replace").splitlines()[-lines:]
    return f"--- last {len(text)} lines of {path} ---\n" + "\n".join(text)


def _healthz(url: str) -> bool:
    """controller-manager and scheduler serve /healthz anonymously, with a self-signed certificate."""
    return httpx.get(url, verify=False, timeout=3).status_code == 200  # noqa: S501 - health probe only


def _https_ok(url: str, lay: Layout) -> bool:
    with admin_client(lay, timeout=3) as api:
        return api.get(url).status_code == 200


# ---------------------------------------------------------------- namespaces and mounts


def _is_mountpoint(path: str) -> bool:
    return any(line.split()[4] == path for line in Path("/proc/self/mountinfo").read_text().splitlines())


def _record_host_change(lay: Layout, what: str) -> None:
    """Remember a change outside the state directory, so `down` undoes exactly that."""
    with open(lay.root / "host-changes", "a") as f:
        f.write(what + "\n")


def _create_netns(lay: Layout) -> None:
    # `ip netns add` turns /run/netns into a bind mount the first time; undo that on `down`.
    if not Path("/run/netns").exists():
        _record_host_change(lay, "dir /run/netns")
    if not _is_mountpoint("/run/netns"):
        _record_host_change(lay, "mount /run/netns")
    _run(["ip", "netns", "add", L.NETNS])
    _run(["ip", "link", "add", L.VETH_HOST, "type", "veth", "peer", "name", L.VETH_NODE,
          "netns", L.NETNS])
    _run(["ip", "addr", "add", f"{L.HOST_IP}/{L.VETH_PREFIX}", "dev", L.VETH_HOST])
    _run(["ip", "link", "set", L.VETH_HOST, "up"])
    n = ["ip", "-n", L.NETNS]
    _run([*n, "link", "set", "lo", "up"])
    _run([*n, "addr", "add", f"{L.NODE_IP}/{L.VETH_PREFIX}", "dev", L.VETH_NODE])
    _run([*n, "link", "set", L.VETH_NODE, "up"])
    # Per-namespace sysctls: route between the pod bridge and the node, and let bridged pod
    # traffic pass through iptables so Service NAT applies between pods on the same bridge.
    for key in ("net.ipv4.ip_forward=1", "net.bridge.bridge-nf-call-iptables=1",
                "net.ipv4.conf.all.route_localnet=1"):
        _run(_netns_exec("sysctl", "-q", "-w", key))


def _create_mount_ns(lay: Layout) -> None:
    nodes.create_mount_ns(lay.node(1), lambda change: _record_host_change(lay, change))


_mounts_under = nodes.mounts_under


# ---------------------------------------------------------------- files


def _write_files(lay: Layout) -> None:
    pki.write_pki(lay.pki, L.NODE_NAME, L.NODE_IP, L.KUBERNETES_SERVICE_IP)
    lay.kubeconfigs.mkdir(parents=True, exist_ok=True)
    for name, cert in configs.KUBECONFIG_USERS.items():
        (lay.kubeconfigs / f"{name}.conf").write_text(configs.kubeconfig(
            configs.kubeconfig_server(lay, name), lay.pki / "ca.crt", lay.pki / f"{cert}.crt",
            lay.pki / f"{cert}.key", name
        ))
    lay.containerd.mkdir(parents=True, exist_ok=True)
    (lay.containerd / "config.toml").write_text(configs.containerd_config(lay))
    lay.cni_conf.mkdir(parents=True, exist_ok=True)
    (lay.cni_conf / "10-omendb-e2e.conflist").write_text(configs.cni_config())
    lay.kubelet.mkdir(parents=True, exist_ok=True)
    (lay.kubelet / "config.yaml").write_text(configs.kubelet_config(lay))
    (lay.root / "kube-proxy.yaml").write_text(configs.kube_proxy_config(lay))
    lay.volumes.mkdir(parents=True, exist_ok=True)


def env_lines(lay: Layout, bin_dir: Path) -> list[str]:
    return [f"export KUBECONFIG={lay.admin_kubeconfig}", f"export PATH={bin_dir}:$PATH"]


# ---------------------------------------------------------------- up


def zones_for(count: int, zones: list[str] | None) -> list[str | None]:
    """Each node's zone, round-robin from `zones`; a one-node cluster given no zones has none (as before)."""
    if count < 1 or count > L.MAX_NODES:
        raise ClusterError(f"--nodes must be between 1 and {L.MAX_NODES}, not {count}")
    if not zones:
        if count == 1:
            return [None]
        zones = list(L.DEFAULT_ZONES)
    return [zones[i % len(zones)] for i in range(count)]


def up(lay: Layout, timeout: float = 180.0, with_images: bool = True, nodes: int = 1,
       zones: list[str] | None = None) -> None:
    """Start the cluster: node 1 with the control plane and add-ons, then nodes 2..`nodes`."""
    from e2e import images

    node_zones = zones_for(nodes, zones)

    host.require_root()
    if is_up(lay):
        raise ClusterError(f"a cluster is already running from {lay.root}: "
                           "run `python -m e2e.cluster down` first")
    # A previous run that died half-way may have left pieces: remove them first.
    down(lay, quiet=True)
    host.ensure_packages()
    bin_dir = binaries.build()
    project_images = images.project_images() if with_images else []
    t0 = time.monotonic()
    try:
        _up(lay, bin_dir, timeout, project_images, node_zones)
    except BaseException:
        print("e2e.cluster: start failed; removing everything started so far", file=sys.stderr, flush=True)
        down(lay, quiet=True, keep_logs=True)
        raise
    print(f"e2e.cluster: cluster up in {time.monotonic() - t0:.0f}s (binaries ready before that)", flush=True)


def _step(msg: str) -> None:
    print(f"e2e.cluster: {msg}", flush=True)


def _up(lay: Layout, bin_dir: Path, timeout: float, project_images: list[Path],
        node_zones: list[str | None]) -> None:
    from e2e import addons, images

    _check_state_dir(lay)
    shutil.rmtree(lay.root, ignore_errors=True)
    lay.root.mkdir(parents=True)
    (lay.root / MARKER).write_text("state directory of the omendb e2e cluster (python -m e2e.cluster)\n")
    (lay.root / "bin-dir").write_text(str(bin_dir))
    first = lay.node(1, node_zones[0])
    nodes.write_record(lay, [first])
    host.load_kernel_modules()
    _step("network and mount namespaces, cgroups")
    _create_netns(lay)
    _create_mount_ns(lay)
    procs.create_cgroups(L.CGROUP_ROOT)
    _write_files(lay)

    _step("etcd, kube-apiserver")
    procs.start("etcd", configs.etcd_argv(lay, bin_dir), lay.pids, lay.logs)
    procs.start("kube-apiserver", configs.apiserver_argv(lay, bin_dir), lay.pids, lay.logs)
    wait_for("kube-apiserver /readyz", lambda: _https_ok(f"{lay.apiserver_url}/readyz", lay),
             timeout, lay, "kube-apiserver")

    _step("kube-controller-manager, kube-scheduler")
    procs.start("kube-controller-manager", configs.controller_manager_argv(lay, bin_dir), lay.pids, lay.logs)
    procs.start("kube-scheduler", configs.scheduler_argv(lay, bin_dir), lay.pids, lay.logs)
    wait_for("kube-controller-manager /healthz", lambda: _healthz(f"https://{L.NODE_IP}:10257/healthz"),
             timeout, lay, "kube-controller-manager")
    wait_for("kube-scheduler /healthz", lambda: _healthz(f"https://{L.NODE_IP}:10259/healthz"),
             timeout, lay, "kube-scheduler")

    _step("containerd")
    procs.start("containerd", ["containerd", f"--config={lay.containerd / 'config.toml'}"],
                lay.pids, lay.logs, mount_ns=lay.mount_ns)
    wait_for("containerd", lambda: _run(ctr(lay, "version"), check=False).returncode == 0,
             60, lay, "containerd")
    for tarball in images.cluster_images(bin_dir) + project_images:
        import_image(lay, tarball)

    _step("kubelet")
    procs.start("kubelet", configs.kubelet_argv(lay, bin_dir, first), lay.pids, lay.logs, mount_ns=lay.mount_ns)
    with admin_client(lay) as client:
        wait_for("node Ready", lambda: _node_ready(client), timeout, lay, "kubelet")

    _step("kube-proxy")
    procs.start("kube-proxy", configs.kube_proxy_argv(lay, bin_dir), lay.pids, lay.logs)
    wait_for("kube-proxy /healthz", lambda: httpx.get(f"http://{L.NODE_IP}:10256/healthz", timeout=3)
             .status_code == 200, 60, lay, "kube-proxy")

    _step("add-ons: CoreDNS, default StorageClass and its provisioner")
    procs.start("provisioner", [sys.executable, "-m", "e2e.provisioner", str(lay.root)], lay.pids, lay.logs,
                netns=False, env=dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent)))
    addons.apply(lay, bin_dir)
    addons.wait_ready(lay, bin_dir, timeout)

    tarballs = images.cluster_images(bin_dir) + project_images
    for index, zone in enumerate(node_zones[1:], start=2):
        _step(f"node {index} of {len(node_zones)} (zone {zone})")
        nodes.add(lay, index, zone, bin_dir, tarballs, timeout)


def _node_ready(client: httpx.Client, name: str = L.NODE_NAME) -> bool:
    return api.ready(api.get_node(client, name))


def is_up(lay: Layout) -> bool:
    return any(procs.alive(c, lay.pids) for c in COMPONENTS)


# ---------------------------------------------------------------- down

MARKER = ".omendb-e2e"


def _check_state_dir(lay: Layout) -> None:
    """Refuse to empty a directory the harness did not create (a mistyped --state-dir)."""
    if lay.root.exists() and any(lay.root.iterdir()) and not (lay.root / MARKER).exists():
        raise ClusterError(f"{lay.root} exists, is not empty and is not an e2e state directory "
                           f"(no {MARKER} file): choose another --state-dir or OMENDB_E2E_STATE")



def down(lay: Layout, quiet: bool = False, keep_logs: bool = True) -> list[str]:
    """Stop and remove everything; return what could not be removed (empty when clean)."""
    problems: list[str] = []
    # Nodes 2..N first: their kubelets would otherwise report to an API server that is going away.
    for extra in reversed(_recorded_nodes(lay)[1:]):
        problems += nodes.teardown(lay, extra)
    for name in reversed(COMPONENTS):
        if name in ("containerd",):
            continue
        if name == "kubelet":
            procs.stop(name, lay.pids)
            # The containers, then the shims (in the node's mount namespace), then containerd.
            procs.kill_all(procs.in_cgroups(L.CGROUP_ROOT), grace=1.0)
            procs.stop("containerd", lay.pids)
            procs.kill_all(procs.in_mount_ns(lay.mount_ns), grace=1.0)
            continue
        procs.stop(name, lay.pids)
    left = procs.in_mount_ns(lay.mount_ns) + procs.in_cgroups(L.CGROUP_ROOT)
    if left:
        problems.append(f"processes still running: {left}")
    # Unmounting the namespace file releases the mount namespace and every mount in it.
    for mnt in sorted(_mounts_under(lay.root), key=len, reverse=True):
        res = _run(["umount", mnt], check=False)
        if res.returncode != 0:
            res = _run(["umount", "-l", mnt], check=False)
            if res.returncode != 0:
                problems.append(f"cannot unmount {mnt}: {res.stderr.strip()}")
    if Path(f"/run/netns/{L.NETNS}").exists():
        res = _run(["ip", "netns", "del", L.NETNS], check=False)
        if res.returncode != 0:
            problems.append(f"cannot delete network namespace {L.NETNS}: {res.stderr.strip()}")
    if Path(f"/sys/class/net/{L.VETH_HOST}").exists():
        _run(["ip", "link", "del", L.VETH_HOST], check=False)
    problems += [f"cgroup not removed: {d}" for d in procs.remove_cgroups(L.CGROUP_ROOT)]
    problems += _undo_host_changes(lay)
    _check_state_dir(lay)
    if lay.root.exists() and not _mounts_under(lay.root):
        for child in lay.root.iterdir():
            if child.name == MARKER or (keep_logs and child.name == "logs"):
                continue
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)
    if problems and not quiet:
        for p in problems:
            print(f"e2e.cluster down: {p}", file=sys.stderr)
    return problems


def _recorded_nodes(lay: Layout) -> list[Node]:
    try:
        return lay.nodes()
    except (OSError, ValueError, KeyError):
        # A record cut short: look for the namespaces of nodes 2..MAX_NODES themselves.
        return [lay.node(1)] + [lay.node(k) for k in range(2, L.MAX_NODES + 1)
                                if Path(f"/run/netns/{lay.node(k).netns}").exists() or lay.node(k).root.exists()]


def _undo_host_changes(lay: Layout) -> list[str]:
    record = lay.root / "host-changes"
    if not record.exists():
        return []
    problems = []
    changes = record.read_text().split("\n")
    for change in [c for c in changes if c.startswith("mount ")]:
        path = change.split(" ", 1)[1]
        if _is_mountpoint(path) and not any(Path(path).iterdir()):
            res = _run(["umount", path], check=False)
            if res.returncode != 0:
                problems.append(f"cannot unmount {path}: {res.stderr.strip()}")
    for change in [c for c in changes if c.startswith("dir ")]:
        directory = Path(change.split(" ", 1)[1])
        try:
            directory.rmdir()
        except FileNotFoundError:
            pass
        except OSError as exc:
            problems.append(f"cannot remove {directory} (created by the harness): {exc}")
    record.unlink()
    return problems


# ---------------------------------------------------------------- status, env, logs


def status(lay: Layout) -> int:
    """Print every component and node; 0 when the control plane and node 1 run and node 1 is Ready (or
    deliberately partitioned). Nodes 2..N stopped or partitioned do not make the cluster unhealthy."""
    ok = True
    for name in COMPONENTS:
        pid = procs.alive(name, lay.pids)
        ok &= pid is not None
        print(f"{name:24} {'running pid ' + str(pid) if pid else 'not running'}")
    api_up = procs.alive("kube-apiserver", lay.pids) is not None
    if ok:
        try:
            with admin_client(lay) as client:
                ready = _node_ready(client)
        except httpx.HTTPError as exc:
            ready = False
            print(f"api server: {exc}")
        print(f"{'node ' + L.NODE_NAME:24} {'Ready' if ready else 'NOT Ready'}")
        ok &= ready or network.partitioned(lay.node(1))
    all_nodes = lay.nodes()
    if len(all_nodes) > 1 or all_nodes[0].zone:
        print("nodes:")
        with admin_client(lay, timeout=3) as client:
            for node in all_nodes:
                print("  " + nodes.describe(lay, node, client if api_up else None))
    return 0 if ok else 1


def bin_dir_of(lay: Layout) -> Path:
    p = lay.root / "bin-dir"
    return Path(p.read_text().strip()) if p.exists() else binaries.bin_dir()


def node_command(lay: Layout, args: list[str], timeout: float) -> int:
    actions = ("stop", "start", "partition", "heal")
    if len(args) != 2 or args[0] not in actions:
        raise ClusterError(f"usage: python -m e2e.cluster node {{{'|'.join(actions)}}} NODE")
    host.require_root()
    action, name = args
    try:
        node = lay.find_node(name)
    except KeyError as exc:
        raise ClusterError(exc.args[0]) from None
    t0 = time.monotonic()
    if action == "stop":
        killed = nodes.stop(lay, node)
        print(f"e2e.cluster: {node.name} stopped: {killed} processes SIGKILLed")
    elif action == "start":
        nodes.start(lay, node, bin_dir_of(lay), timeout)
        print(f"e2e.cluster: {node.name} Ready again in {time.monotonic() - t0:.0f}s")
    elif action == "partition":
        network.partition(node)
        print(f"e2e.cluster: {node.name} partitioned (its processes keep running)")
    else:
        network.heal(node)
        print(f"e2e.cluster: {node.name} healed")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m e2e.cluster", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["up", "down", "status", "env", "logs", "node"])
    ap.add_argument("args", nargs="*", help="for `logs`: one component (default: all, tails); for `node`: "
                    "stop|start|partition|heal NODE (a node's name, or its number)")
    ap.add_argument("--state-dir", type=Path, default=L.default_state_dir())
    ap.add_argument("--timeout", type=float, default=240.0)
    ap.add_argument("--no-images", action="store_true", help="`up` without building the project's images")
    ap.add_argument("--nodes", type=int, default=1, help="`up`: how many nodes (default 1)")
    ap.add_argument("--zones", default="", help="`up`: comma-separated zones, given to the nodes round-robin "
                    f"(default with --nodes > 1: {','.join(L.DEFAULT_ZONES)})")
    args = ap.parse_args(argv)
    lay = Layout(args.state_dir.resolve())
    try:
        if args.command == "up":
            zones = [z for z in args.zones.split(",") if z] or None
            up(lay, args.timeout, with_images=not args.no_images, nodes=args.nodes, zones=zones)
            print("\n".join(env_lines(lay, bin_dir_of(lay))))
        elif args.command == "down":
            host.require_root()
            return 1 if down(lay) else 0
        elif args.command == "status":
            return status(lay)
        elif args.command == "env":
            print("\n".join(env_lines(lay, bin_dir_of(lay))))
        elif args.command == "logs":
            names = args.args[:1] or list(COMPONENTS)
            for n in names:
                print(log_tail(lay, n, 2000 if args.args else 20))
        elif args.command == "node":
            return node_command(lay, args.args, args.timeout)
    except (ClusterError, nodes.NodeError, network.NetworkError) as exc:
        print(f"e2e.cluster {args.command}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
