"""What the machine must have for the cluster: Debian packages, kernel modules, root.

The harness installs what is missing itself (apt-get), so a fresh machine needs no manual step.
"""

from __future__ import annotations

import os
import shutil
import subprocess

# containerd's CRI runs pods with runc; CNI plugins wire them to a bridge; kube-proxy drives
# iptables and conntrack; debootstrap builds the images' root filesystem; gcc builds `pause`.
PACKAGES = (
    "containerd", "runc", "containernetworking-plugins", "iptables", "conntrack", "ethtool",
    "socat", "iproute2", "util-linux", "kmod", "debootstrap", "gcc", "libc6-dev",
)
KERNEL_MODULES = ("overlay", "br_netfilter", "nf_conntrack", "veth", "bridge")


def require_root() -> None:
    if os.geteuid() != 0:
        raise SystemExit(
            "the e2e cluster needs root (network and mount namespaces, cgroups, containerd): "
            "run it as root"
        )


def missing_packages(packages: tuple[str, ...] = PACKAGES) -> list[str]:
    missing = []
    for pkg in packages:
        res = subprocess.run(
            ["dpkg-query", "-W", "-f=${Status}", pkg], capture_output=True, text=True
        )
        if res.returncode != 0 or "install ok installed" not in res.stdout:
            missing.append(pkg)
    return missing


def ensure_packages(packages: tuple[str, ...] = PACKAGES) -> None:
    missing = missing_packages(packages)
    if not missing:
        return
    if shutil.which("apt-get") is None:
        raise SystemExit(f"missing packages {missing} and no apt-get to install them (Debian is expected)")
    print(f"e2e.host: installing Debian packages: {' '.join(missing)}", flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env, stdout=subprocess.DEVNULL)
    res = subprocess.run(
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing],
        env=env, capture_output=True, text=True,
    )
    if res.returncode != 0:
        raise SystemExit(f"apt-get install {' '.join(missing)} failed:\n{res.stdout[-3000:]}{res.stderr[-3000:]}")


def load_kernel_modules() -> None:
    """Load the modules the node needs; a module built into the kernel is fine too."""
    for mod in KERNEL_MODULES:
        if os.path.isdir(f"/sys/module/{mod}"):
            continue
        res = subprocess.run(["modprobe", mod], capture_output=True, text=True)
        if res.returncode != 0 and not os.path.isdir(f"/sys/module/{mod}"):
            raise SystemExit(f"kernel module {mod} is not available: {res.stderr.strip()}")
