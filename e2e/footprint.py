"""What the running cluster costs: memory and CPU of its processes, per part, over an interval.

`python -m e2e.footprint [--seconds 60]` groups the processes the harness started (pid files) and those
under them (each node's mount namespace: the shims; its cgroup root: the pods) into the control plane
and one row per node, split into the node's own daemons and its pods, and prints for each the summed
RSS, the summed PSS (shared pages divided among the processes sharing them, so the PSS column adds up
without counting a shared library twice) and the CPU used during the interval, in cores.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from e2e import layout as L
from e2e import nodes, procs
from e2e.layout import Layout

CONTROL_PLANE = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "provisioner")


def groups(lay: Layout) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {"control plane": [p for c in CONTROL_PLANE if (p := procs.alive(c, lay.pids))]}
    for node in lay.nodes():
        own = [p for c in nodes.COMPONENTS if (p := procs.alive(node.component(c), lay.pids))]
        pods = procs.in_cgroups(node.cgroup_root)
        shims = [p for p in procs.in_mount_ns(node.mount_ns) if p not in own and p not in pods]
        out[f"{node.name}: kubelet, containerd, kube-proxy, shims"] = own + shims
        out[f"{node.name}: pods"] = pods
    return out


def _kib(pid: int, field: str, source: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/{source}").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _ticks(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])  # utime + stime


def measure(lay: Layout, seconds: float) -> list[tuple[str, int, int, int, float]]:
    """Rows of (group, processes, RSS KiB, PSS KiB, CPU cores over `seconds`)."""
    parts = groups(lay)
    before = {p: _ticks(p) for pids in parts.values() for p in pids}
    time.sleep(seconds)
    hz = os.sysconf("SC_CLK_TCK")
    rows = []
    for name, pids in parts.items():
        live = [p for p in pids if Path(f"/proc/{p}").exists()]
        rss = sum(_kib(p, "VmRSS", "status") for p in live)
        pss = sum(_kib(p, "Pss", "smaps_rollup") for p in live)
        cpu = sum(_ticks(p) - before.get(p, _ticks(p)) for p in live) / hz / seconds
        rows.append((name, len(live), rss, pss, cpu))
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m e2e.footprint", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60.0, help="CPU is averaged over this long (default 60)")
    ap.add_argument("--state-dir", type=Path, default=L.default_state_dir())
    args = ap.parse_args(argv)
    rows = measure(Layout(args.state_dir.resolve()), args.seconds)
    print(f"{'part':58} {'procs':>5} {'RSS MiB':>8} {'PSS MiB':>8} {'CPU cores':>9}")
    for name, count, rss, pss, cpu in rows:
        print(f"{name:58} {count:5} {rss / 1024:8.0f} {pss / 1024:8.0f} {cpu:9.3f}")
    count, rss, pss = (sum(r[1] for r in rows), sum(r[2] for r in rows), sum(r[3] for r in rows))
    print(f"{'total':58} {count:5} {rss / 1024:8.0f} {pss / 1024:8.0f} {sum(r[4] for r in rows):9.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
