"""Markers for the test tiers, applied at collection so no test is tagged by hand.

``binaries``: the test needs a Go-built binary of the e2e harness (kube-apiserver and etcd, kubectl, helm,
promtool, weed). ``root``: it needs root (real tmpfs mounts, a memory cgroup). ``make test`` runs them all;
``make test-fast`` deselects both (``-m "not binaries and not root"``).

A test gets a marker when it uses a fixture that provides such a resource, or when its code, or the code of
a fixture it uses, reaches (through the project's own functions, followed transitively) one of the functions
that locate the binaries or mount a tmpfs. New tests are classified by what they call, wherever they live.
``make test-fast`` hides the e2e cache, so a test this misses fails with "not found: build it with ..."
instead of passing only on machines that happen to have the binaries.
"""

from __future__ import annotations

import dis
import functools
import importlib
import importlib.util
import sys
import types
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Fixtures that start or locate a binary / need root themselves; the fixtures that depend on them (kube,
# world, ctx, ...) are in item.fixturenames too, so they need not be listed.
FIXTURES = {
    "binaries": {"apiserver", "namespace", "s3_store", "s3_env"},
    "root": {"memory_cgroup"},
}

# (module, qualified name) of the functions that locate a binary or mount a file system.
ENTRY_POINTS = {
    "binaries": {
        ("e2e.binaries", "bin_dir"),               # kubectl, helm, kube-apiserver, etcd, promtool
        ("e2e.binaries", "objectstore_bin_dir"),   # weed
        ("e2e.binaries", "kstatus_bin_dir"),       # the kstatus checker
        ("e2e.binaries", "cert_manager_bin_dir"),  # cert-manager's controller
        ("e2e.binaries", "build_cert_manager"),
        ("scan_tools", "kube_score_bin"),          # kube-score (and checkov beside it): `make scanners`
        ("e2e.binaries", "build"),
        ("operator_apiserver", "find_bin_dir"),    # asks `python -m e2e.binaries path` in a subprocess
    },
    "root": {
        ("tests.tmpfs", "mounted_tmpfs"),
    },
}


# Where code that locates a binary or mounts a file system can live: the tests and the harness. The shipped
# packages (engine/, operator/) never import them, so the walk does not follow their functions.
HARNESS = tuple(ROOT / d for d in ("tests", "scripts", "e2e"))


@functools.cache
def _in_harness(filename: str | None) -> bool:
    return filename is not None and any(Path(filename).resolve().is_relative_to(d) for d in HARNESS)


def _project_module(name: str) -> types.ModuleType | None:
    """The module ``name`` if it is one of the project's own (imported now if need be), else None."""
    if name in sys.modules:
        module = sys.modules[name]
        return module if _in_harness(getattr(module, "__file__", None)) else None
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):  # a parent that is not a package, or relative names
        return None
    if spec is None or not _in_harness(spec.origin):
        return None
    return importlib.import_module(name)


_IMPORT_NAME = dis.opmap["IMPORT_NAME"]


@functools.cache
def _scan(code: types.CodeType) -> tuple[frozenset[str], list[types.ModuleType]]:
    """The names a function's code uses, and the project modules it imports inside its body."""
    codes = [code]
    names: set[str] = set()
    imported: list[types.ModuleType] = []
    while codes:  # nested functions, lambdas and comprehensions are code objects in co_consts
        c = codes.pop()
        names.update(c.co_names)
        codes.extend(const for const in c.co_consts if isinstance(const, types.CodeType))
        # `from e2e import binaries` inside a function: import what the function would import, when it is
        # the project's own module (whatever the test order, it may not be imported yet). Decoding every
        # instruction was most of the collection time, so only code holding the opcode is decoded (co_code
        # is (opcode, arg) pairs, so the even bytes are the opcodes).
        if _IMPORT_NAME not in c.co_code[::2]:
            continue
        for instr in dis.get_instructions(c):
            if instr.opname == "IMPORT_NAME" and instr.argval:
                imported += filter(None, (_project_module(instr.argval), *(
                    _project_module(f"{instr.argval}.{name}") for name in c.co_names)))
    return frozenset(names), imported


def _unwrap(obj: Any) -> Any:
    # contextmanager and functools.wraps keep the original function in __wrapped__; methods of a class
    # are reached through its __dict__, where static/class methods and properties wrap them.
    while True:
        if isinstance(obj, staticmethod | classmethod):
            obj = obj.__func__
        elif isinstance(obj, property):
            obj = obj.fget
        elif hasattr(obj, "__wrapped__"):
            obj = obj.__wrapped__
        else:
            return obj


def _reached(func: Any, found: set[str], seen: set[types.CodeType]) -> None:
    """Add to ``found`` the markers whose entry points ``func`` can reach through project functions."""
    func = _unwrap(func)
    code = getattr(func, "__code__", None)
    if code is None or code in seen or not _in_harness(code.co_filename):
        return
    seen.add(code)
    key = (getattr(func, "__module__", None), getattr(func, "__qualname__", None))
    for marker, entries in ENTRY_POINTS.items():
        if key in entries:
            found.add(marker)
    env = getattr(func, "__globals__", {})
    names, imported = _scan(code)
    # A name is a global or a module imported inside the function; `pkg.helm()` puts the attribute's name
    # in co_names beside the module's.
    targets = [env.get(name) for name in names] + imported
    modules = [t for t in targets if isinstance(t, types.ModuleType)]
    visited: set[str] = set()
    while modules:  # package.module.function; only the project's modules (numpy's attributes are many)
        module = modules.pop()
        if module.__name__ not in visited and _in_harness(getattr(module, "__file__", None)):
            visited.add(module.__name__)
            for attr in names & vars(module).keys():
                target = vars(module)[attr]
                (modules if isinstance(target, types.ModuleType) else targets).append(target)
    for target in targets:
        if isinstance(target, type) and _in_harness(getattr(sys.modules.get(target.__module__), "__file__", None)):
            for member in vars(target).values():
                _reached(member, found, seen)
        elif isinstance(target, types.FunctionType):
            _reached(target, found, seen)


def needs(item: pytest.Function) -> set[str]:
    """The tier markers one collected test needs."""
    found = {marker for marker, names in FIXTURES.items() if names & set(item.fixturenames)}
    seen: set[types.CodeType] = set()
    _reached(item.function, found, seen)
    for defs in item._fixtureinfo.name2fixturedefs.values():
        for fixturedef in defs:
            _reached(fixturedef.func, found, seen)
    return found


# The fast tier's files that take 15 s or more of wall time, longest first (make test-fast from a fresh clone,
# 2026-12-05). Its xdist workers take whole files in collection order (--dist loadfile
# --no-loadscope-reorder), so these go first: one begun near the end holds up the whole run (test_crash.py
# is a single 28 s test). A stale entry only costs a few seconds.
LONG_FILES = (
    "tests/replication/test_fencing.py",
    "tests/replication/test_replica.py",
    "tests/engine/test_crash.py",
    "tests/server/test_slow_clients.py",
    "tests/replication/test_failover.py",
    "tests/server/test_first_run.py",
    "tests/replication/test_identity.py",
    "tests/client/test_api.py",
    "tests/server/test_logging.py",
    "tests/server/test_auth_defenses.py",
    "tests/server/test_api.py",
)


def _long_first(item: pytest.Item) -> int:
    path = item.nodeid.split("::")[0]
    return LONG_FILES.index(path) if path in LONG_FILES else len(LONG_FILES)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if isinstance(item, pytest.Function):
            for marker in sorted(needs(item) - {m.name for m in item.iter_markers()}):
                item.add_marker(marker)
    if hasattr(config, "workerinput"):  # an xdist worker: what it collects is the order files are handed out
        items.sort(key=_long_first)  # stable: within a file, and among the others, the order stays
