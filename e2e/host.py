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
# Kernel features the node needs, each with a path that exists once the feature is there (built in
# or loaded); a missing one is loaded with modprobe. Kernels without module support are common in VMs.
KERNEL_FEATURES = {
    "overlay": "/sys/module/overlay",
    "br_netfilter": "/proc/sys/net/bridge/bridge-nf-call-iptables",
    "nf_conntrack": "/sys/module/nf_conntrack",
    "bridge": "/sys/module/bridge",
}


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
        raise SystemExit(f"apt-get install {' '.join(missing)} failed:\n"
                         f"{res.stdout[-3000:]}{res.stderr[-3000:]}")


def load_kernel_modules() -> None:
    """Make sure each kernel feature is there: built in, already loaded, or loaded now."""
    for mod, probe in KERNEL_FEATURES.items():
        if os.path.exists(probe):
            continue
        res = subprocess.run(["modprobe", mod], capture_output=True, text=True)
        if not os.path.exists(probe):
            raise SystemExit(f"kernel feature {mod} is missing ({probe} does not exist) and "
                             f"`modprobe {mod}` failed: {res.stderr.strip()}")
