"""How much memory the server may use, and how much it uses.

Three limits apply and the lowest wins: ``[database] max_memory_mb``, ``[limits] memory_limit_mb`` and
the memory limit of the container (its cgroup): past the first two the engine refuses writes, past the
third the kernel kills the process. ``omendb config check`` prints which one wins.

Usage is the process's resident memory (RSS, what the cgroup limit and the OOM killer count), read from
``/proc/self/statm``; the engine's own accounting (record arrays, models, delta) is smaller and reported
apart (``Database.memory_usage_bytes``).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

# cgroup v1 reports "no limit" as the largest page-aligned signed 64-bit value; anything this large is none.
_UNLIMITED = 1 << 62
CGROUP_ROOT = Path("/sys/fs/cgroup")


@dataclass(frozen=True)
class CgroupLimit:
    bytes: int
    file: str  # the file that set it, e.g. /sys/fs/cgroup/memory.max


@dataclass(frozen=True)
class MemoryLimit:
    bytes: int
    source: str  # "[database] max_memory_mb", "[limits] memory_limit_mb" or "cgroup"
    max_memory_mb: int
    memory_limit_mb: int
    cgroup: CgroupLimit | None


def _read_limit(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if text in ("", "max"):
        return None
    try:
        value = int(text)
    except ValueError:
        return None
    return value if 0 < value < _UNLIMITED else None


def _ancestors(relative: str) -> list[str]:
    """'/a/b' -> ['/a/b', '/a', '/']: a parent's limit applies to its children too."""
    parts = [p for p in relative.split("/") if p]
    return ["/" + "/".join(parts[:i]) for i in range(len(parts), -1, -1)]


def cgroup_memory_limit(proc_cgroup: str = "/proc/self/cgroup", root: Path = CGROUP_ROOT) -> CgroupLimit | None:
    """The lowest memory limit of this process's cgroup and its ancestors (v2 memory.max, v1
    memory.limit_in_bytes), or None when there is none or cgroups are not mounted."""
    try:
        lines = Path(proc_cgroup).read_text().splitlines()
    except OSError:
        return None
    candidates: list[Path] = []
    for line in lines:
        hierarchy, _, rest = line.partition(":")
        controllers, _, relative = rest.partition(":")
        if hierarchy == "0" and controllers == "":  # v2 (unified), alone or beside v1 ("hybrid")
            for mount in (root, root / "unified"):
                candidates += [mount / a.lstrip("/") / "memory.max" for a in _ancestors(relative)]
        elif "memory" in controllers.split(","):  # v1 memory controller
            candidates += [root / "memory" / a.lstrip("/") / "memory.limit_in_bytes" for a in _ancestors(relative)]
    best: CgroupLimit | None = None
    for path in candidates:
        # Without a cgroup namespace the path is the host's and may not exist under our mount: skipped.
        value = _read_limit(path)
        if value is not None and (best is None or value < best.bytes):
            best = CgroupLimit(value, str(path))
    return best


@functools.lru_cache(maxsize=1)
def own_cgroup_limit() -> CgroupLimit | None:
    """This process's cgroup limit, read once (a container's limit is fixed for its life)."""
    return cgroup_memory_limit()


def effective_limit(max_memory_mb: int, memory_limit_mb: int, cgroup: CgroupLimit | None) -> MemoryLimit:
    options = [(max_memory_mb << 20, "[database] max_memory_mb"), (memory_limit_mb << 20, "[limits] memory_limit_mb")]
    if cgroup is not None:
        options.append((cgroup.bytes, "cgroup"))
    value, source = min(options, key=lambda o: o[0])  # ties: the configuration key, listed first
    return MemoryLimit(value, source, max_memory_mb, memory_limit_mb, cgroup)


def process_rss_bytes() -> int:
    """Resident memory of this process (0 where /proc is not available)."""
    try:
        resident = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0
    return resident * os.sysconf("SC_PAGE_SIZE")


def explain(limit: MemoryLimit) -> list[str]:
    """What ``omendb config check`` says about the memory limit: the winner, and the traps."""
    mib = limit.bytes >> 20
    cgroup = f"{limit.cgroup.bytes >> 20} MiB ({limit.cgroup.file})" if limit.cgroup else "none found"
    lines = [f"memory limit: {mib} MiB, set by {limit.source} "
             f"(max_memory_mb = {limit.max_memory_mb}, memory_limit_mb = {limit.memory_limit_mb}, "
             f"container cgroup limit: {cgroup})"]
    if limit.source == "cgroup":
        assert limit.cgroup is not None
        lines.append(f"warning: the container's limit is below both keys: the database may fill the whole "
                     f"container and be OOM-killed before it refuses a write; set max_memory_mb and "
                     f"memory_limit_mb to about 75% of it ({(limit.cgroup.bytes >> 20) * 3 // 4})")
    elif limit.max_memory_mb != limit.memory_limit_mb:
        high, low = (("max_memory_mb", "[limits] memory_limit_mb") if limit.max_memory_mb > limit.memory_limit_mb
                     else ("memory_limit_mb", "[database] max_memory_mb"))
        lines.append(f"note: {high} is higher but {low} = {mib} applies; change both keys to change the limit")
    return lines
