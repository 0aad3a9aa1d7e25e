"""Memory: the effective limit is the lowest of [database] max_memory_mb, [limits] memory_limit_mb and the
container's cgroup limit, `omendb config check` says which one wins (in a REAL cgroup made here), the
guide's memory-tuning sed is explained by it, and omendb_memory_usage_bytes is the process's resident
memory (what the OOM killer counts), with the engine's own accounting in omendb_engine_memory_bytes."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.server.harness import Server
from tests.server.test_guide_scripts import GUIDE_TOML

CGROUP_LIMIT = 3 << 30
# The guide's Memory Tuning commands, verbatim.
GUIDE_SED = """TOTAL_RAM=$(free -m | awk '/^Mem:/{print $2}')
OMENDB_MEMORY=$((TOTAL_RAM * 75 / 100))  # 75% of total RAM

# Update configuration
sed -i "s/max_memory_mb = .*/max_memory_mb = $OMENDB_MEMORY/" omendb.toml
"""


def _memory_cgroup_parent() -> tuple[Path, str] | None:
    """Where a child memory cgroup can be made: cgroup v2 with the memory controller, else v1's hierarchy."""
    for root in (Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/unified")):
        controllers = root / "cgroup.controllers"
        if controllers.exists() and "memory" in controllers.read_text().split():
            return root, "memory.max"
    v1 = Path("/sys/fs/cgroup/memory")
    if (v1 / "memory.limit_in_bytes").exists():
        return v1, "memory.limit_in_bytes"
    return None


@pytest.fixture
def memory_cgroup() -> Iterator[Path]:
    """A fresh child cgroup limited to 3 GiB (needs root and a writable cgroup mount: without them the test
    fails, saying so, rather than passing unseen; `make test-fast` leaves it out, marked `root`)."""
    found = _memory_cgroup_parent()
    if found is None or not os.access(found[0], os.W_OK):
        pytest.fail("no writable memory cgroup hierarchy: run the tests as root on a machine with "
                    "/sys/fs/cgroup mounted read-write (CI does), or use `make test-fast`, which leaves this out")
    parent, limit_file = found
    group = parent / f"omendb-test-{uuid.uuid4().hex[:8]}"
    group.mkdir()
    try:
        (group / limit_file).write_text(str(CGROUP_LIMIT))
        yield group
    finally:
        group.rmdir()  # its processes have exited


def config_check(config: Path, cgroup: Path | None = None) -> subprocess.CompletedProcess[str]:
    command = f"exec {sys.executable} -m omendb.cli config check {config}"
    if cgroup is not None:  # move this shell into the cgroup, then become `omendb config check`
        command = f"echo $$ > {cgroup / 'cgroup.procs'} && {command}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMENDB_") and k != "RUST_LOG"}
    return subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=60, env=env)


def test_config_check_names_the_cgroup_limit_when_it_wins(tmp_path: Path, memory_cgroup: Path) -> None:
    config = tmp_path / "omendb.toml"
    config.write_text(GUIDE_TOML)  # max_memory_mb = memory_limit_mb = 8192 > the cgroup's 3 GiB
    result = config_check(config, memory_cgroup)
    assert result.returncode == 0, result.stderr
    assert "# memory limit: 3072 MiB, set by cgroup" in result.stderr, result.stderr
    assert str(memory_cgroup.name) in result.stderr  # the file that set it
    assert "OOM-killed" in result.stderr and "(2304)" in result.stderr  # 75% of the container's limit
    # Outside the cgroup (no limit on this machine's test session, or a higher one) the key wins.
    outside = config_check(config)
    assert "set by [database] max_memory_mb" in outside.stderr or "set by cgroup" in outside.stderr


def test_guide_memory_sed_takes_effect_or_is_explained(tmp_path: Path) -> None:
    config = tmp_path / "omendb.toml"
    config.write_text(GUIDE_TOML)
    subprocess.run(["bash", "-c", GUIDE_SED], cwd=tmp_path, check=True, timeout=30)
    total = int(subprocess.run(["bash", "-c", "free -m | awk '/^Mem:/{print $2}'"], capture_output=True,
                               text=True, check=True).stdout)
    wanted = total * 75 // 100
    assert f"max_memory_mb = {wanted}\n" in config.read_text()
    result = config_check(config)
    assert result.returncode == 0, result.stderr
    line = next(x for x in result.stderr.splitlines() if x.startswith("# memory limit:"))
    applied = int(line.split()[3])
    assert f"max_memory_mb = {wanted}" in line
    if wanted > 8192:
        # The sed raised max_memory_mb, but the guide's [limits] memory_limit_mb = 8192 is lower: check
        # says so, and how to change the limit.
        assert applied <= 8192
        assert "note: max_memory_mb is higher but [limits] memory_limit_mb = 8192 applies" in result.stderr \
            or "set by cgroup" in line
    else:
        assert applied <= wanted


def _gauge(text: str, name: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                return float(sample.value)
    raise AssertionError(f"{name} not exported")


def test_memory_usage_metric_is_the_process_rss(tmp_path: Path) -> None:
    server = Server(tmp_path / "srv")
    with server:
        server.start()
        httpx.post(f"{server.url}/v1/records", json={"records": [{"key": k, "value": k * 0.5} for k in range(5000)]},
                   timeout=30).raise_for_status()
        assert server.proc is not None
        text = httpx.get(server.metrics_url, timeout=10).text
        status = Path(f"/proc/{server.proc.pid}/status").read_text()
        rss = int(next(x for x in status.splitlines() if x.startswith("VmRSS:")).split()[1]) * 1024
        usage = _gauge(text, "omendb_memory_usage_bytes")
        engine = _gauge(text, "omendb_engine_memory_bytes")
        # Read a moment apart: within 20% of each other (the old metric was the engine's ~1% of RSS).
        assert 0.8 * rss <= usage <= 1.2 * rss, (usage, rss)
        assert 0 < engine < usage
        assert _gauge(text, "omendb_memory_limit_bytes") == 512 << 20  # the harness's keys win here
        assert server.stop() == 0
