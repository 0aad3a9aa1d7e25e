"""The slim operator image (issue 18, item 6): its deps layer installs only pyproject's `operator` extra
(e2e/images.py operator_requirements, images/operator/Dockerfile), without the engine's numpy, numba
and llvmlite. These tests check that this list is enough: `omendb_operator.main` imports in a fresh
interpreter that can import nothing but the standard library, this project and the distributions the
`operator` extra pulls in (resolved through the installed packages' metadata, as pip resolves it)."""

from __future__ import annotations

import importlib.metadata as md
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from e2e import images

ROOT = Path(__file__).resolve().parents[2]
ENGINE_ONLY = {"numpy", "numba", "llvmlite"}


def closure(requirements: list[str]) -> set[str]:
    """The canonical names of the distributions pip installs for ``requirements`` (with their extras),
    from the metadata of this virtualenv, which requirements.lock pins like the image."""
    seen: set[str] = set()
    todo = [(Requirement(r), "") for r in requirements]
    while todo:
        req, extra = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": extra}):
            continue
        name = canonicalize_name(req.name)
        key = name + "[" + ",".join(sorted(req.extras)) + "]"
        if key in seen:
            continue
        seen.add(key)
        for dep in md.distribution(name).requires or []:
            todo.append((Requirement(dep), ""))
            todo += [(Requirement(dep), e) for e in req.extras]
    return {k.split("[")[0] for k in seen}


def test_the_operator_image_installs_no_engine_numerics():
    reqs = images.operator_requirements()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert reqs == project["optional-dependencies"]["operator"]
    assert not {canonicalize_name(Requirement(r).name) for r in reqs} & ENGINE_ONLY
    assert not closure(reqs) & ENGINE_ONLY, "a dependency of the operator extra pulls in numpy/numba/llvmlite"
    # The engine image keeps everything it had (the operator extra's duplicates of `server` listed once).
    engine = images.runtime_requirements()
    assert len(engine) == len(set(engine))
    assert set(engine) >= set(project["dependencies"]) | set(project["optional-dependencies"]["server"]) | \
        set(reqs)


def blocked_modules(allowed: set[str]) -> set[str]:
    """Top-level modules of installed distributions outside ``allowed``."""
    out = set()
    for module, dists in md.packages_distributions().items():
        if not {canonicalize_name(d) for d in dists} & allowed and module not in sys.stdlib_module_names:
            out.add(module)
    return out - {"omendb", "omendb_operator"}


def test_the_operator_imports_only_what_its_image_installs():
    allowed = closure(images.operator_requirements())
    blocked = blocked_modules(allowed)
    assert blocked >= ENGINE_ONLY  # the check below can fail: numba & co. are really blocked
    script = textwrap.dedent("""
        import importlib.machinery, sys
        BLOCKED = set(sys.argv[1].split(","))
        AT_START = set(sys.modules)  # what site.py loaded (setuptools' _distutils_hack .pth), not ours

        # The path finder, blind to the blocked packages: for them, imports and importlib.util.find_spec
        # behave as if they were not installed (optional imports such as httpx's zstandard fall back).
        class ImagePathFinder(importlib.machinery.PathFinder):
            @classmethod
            def find_spec(cls, name, path=None, target=None):
                if name.partition(".")[0] in BLOCKED:
                    return None
                return super().find_spec(name, path, target)

        sys.meta_path[:] = [ImagePathFinder if f is importlib.machinery.PathFinder else f for f in sys.meta_path]
        import omendb_operator.main  # noqa: E402,F401  (every module the operator's handlers use)
        leaked = sorted(m for m in set(sys.modules) - AT_START if m.partition(".")[0] in BLOCKED)
        assert not leaked, leaked
        print("ok")
    """)
    res = subprocess.run([sys.executable, "-c", script, ",".join(sorted(blocked))], capture_output=True,
                         text=True, cwd=ROOT, timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == "ok", \
        f"omendb_operator.main needs a package outside the `operator` extra of pyproject.toml " \
        f"(add it there, pinned):\n{res.stderr[-3000:]}"
