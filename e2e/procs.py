"""Start, find and stop the cluster's processes — only the ones this harness started.

Each started process has a pid file holding its pid and its start time (field 22 of
/proc/PID/stat), so a recycled pid is never mistaken for ours. Processes started indirectly (the
containerd shims and the containers) are found by the mount namespace and cgroups the harness
created for them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

from e2e.layout import NETNS


def _start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces; fields after its closing paren are fixed.
    return stat.rsplit(")", 1)[1].split()[19]


def start(name: str, argv: list[str], pids: Path, logs: Path, *, netns: bool | str = True,
          mount_ns: Path | None = None, env: dict[str, str] | None = None) -> int:
    """Start `argv` in the cluster's namespaces (`netns`: True for node 1's, or a namespace's name),
    logging to logs/<name>.log; return its pid."""
    prefix: list[str] = []
    if netns or mount_ns is not None:
        prefix = ["nsenter"]
        if netns:
            prefix.append(f"--net=/run/netns/{NETNS if netns is True else netns}")
        if mount_ns is not None:
            prefix.append(f"--mount={mount_ns}")
        prefix.append("--")
    logs.mkdir(parents=True, exist_ok=True)
    pids.mkdir(parents=True, exist_ok=True)
    with open(logs / f"{name}.log", "ab") as log:
        proc = subprocess.Popen(
            prefix + argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, env=env,
        )
    (pids / f"{name}.pid").write_text(f"{proc.pid} {_start_time(proc.pid)}\n")
    return proc.pid


def alive(name: str, pids: Path) -> int | None:
    """The pid of component `name` if the process we started is still running."""
    try:
        pid_s, started = (pids / f"{name}.pid").read_text().split()
    except (OSError, ValueError):
        return None
    pid = int(pid_s)
    if _start_time(pid) != started:
        return None
    try:
        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            os.waitpid(pid, os.WNOHANG)
            return None
    except (OSError, ChildProcessError):
        pass
    return pid


def stop(name: str, pids: Path, grace: float = 5.0) -> None:
    pid = alive(name, pids)
    if pid is not None:
        _terminate([pid], grace)
    (pids / f"{name}.pid").unlink(missing_ok=True)


def _terminate(pids: list[int], grace: float) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    remaining = list(pids)
    while remaining and time.monotonic() < deadline:
        remaining = [p for p in remaining if _exists(p)]
        if remaining:
            time.sleep(0.1)
    for pid in remaining:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for pid in remaining:
        for _ in range(50):
            if not _exists(pid):
                break
            time.sleep(0.1)


def running(pid: int) -> bool:
    """The process exists and is not a zombie."""
    return _exists(pid)


def _exists(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def in_mount_ns(mount_ns: Path) -> list[int]:
    """Processes living in the node's mount namespace (containerd, kubelet, the shims)."""
    try:
        target = os.stat(mount_ns).st_ino
    except OSError:
        return []
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.stat(f"/proc/{entry}/ns/mnt").st_ino == target:
                found.append(int(entry))
        except OSError:
            continue
    return found


def in_cgroups(cgroup_root: str) -> list[int]:
    """Processes in any cgroup under the harness's cgroup root (the pods' containers)."""
    found: set[int] = set()
    for hierarchy in _hierarchies():
        top = Path(hierarchy) / cgroup_root
        if not top.is_dir():
            continue
        for dirpath, _dirs, files in os.walk(top):
            if "cgroup.procs" in files:
                try:
                    found.update(int(x) for x in Path(dirpath, "cgroup.procs").read_text().split())
                except OSError:
                    continue
    return sorted(found)


def _hierarchies() -> list[str]:
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        parts = line.split()
        sep = parts.index("-")
        if parts[sep + 1] in ("cgroup", "cgroup2"):
            out.append(parts[4])
    return out


def kill_now(pids: list[int]) -> None:
    """SIGKILL every pid at once (a power loss), then reap and wait until they are gone."""
    mine = os.getpid()
    for pid in pids:
        if pid != mine:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_exists(p) for p in pids if p != mine):
        time.sleep(0.05)


def kill_all(pids: list[int], grace: float = 3.0) -> None:
    mine = os.getpid()
    _terminate([p for p in pids if p != mine], grace)


def create_cgroups(cgroup_root: str) -> None:
    """The kubelet's cgroup root must exist in every hierarchy before the kubelet starts."""
    for hierarchy in _hierarchies():
        path = Path(hierarchy) / cgroup_root
        path.mkdir(exist_ok=True)
        # A new cgroup v1 cpuset has no CPUs or memory nodes until given its parent's.
        for knob in ("cpuset.cpus", "cpuset.mems"):
            parent = Path(hierarchy) / knob
            if parent.exists() and not (path / knob).read_text().strip():
                (path / knob).write_text(parent.read_text())


def remove_cgroups(cgroup_root: str) -> list[str]:
    """Remove the cgroup tree bottom-up; return the directories that could not be removed."""
    left = []
    for hierarchy in _hierarchies():
        top = Path(hierarchy) / cgroup_root
        if not top.is_dir():
            continue
        for dirpath, _dirs, _files in sorted(os.walk(top), key=lambda t: -len(t[0])):
            for _ in range(20):
                try:
                    os.rmdir(dirpath)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.1)
            else:
                left.append(dirpath)
    return left
