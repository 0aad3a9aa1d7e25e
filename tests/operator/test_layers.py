"""The operator's layers hold: planners and builders do no I/O, and only the act module and the kube
wrapper write to the Kubernetes API (docs/architecture.md, "observe → plan → act")."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "operator" / "omendb_operator"
# Pure layers may import only the standard library, each other, the engine's config model and the
# kubernetes client's quantity parser (a pure function).
NO_IO = ("omendb_operator.controller", "kopf", "httpx", "kubernetes.client", "kubernetes.config",
         "kubernetes.dynamic", "socket", "urllib", "subprocess")
WRITE_VERBS = {"apply", "create", "delete", "patch", "patch_status", "server_side_apply", "replace", "event"}
WRITERS = {"controller/act.py", "controller/kube.py"}


def _modules(folder: str) -> list[Path]:
    return sorted((PACKAGE / folder).glob("*.py"))


def _imports(path: Path) -> list[str]:
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.append(node.module)
    return out


def test_planners_and_builders_do_no_io():
    checked = 0
    for folder in ("plans", "specs"):
        for path in _modules(folder):
            bad = [m for m in _imports(path) if m.startswith(NO_IO)]
            assert not bad, f"{path.relative_to(PACKAGE)} imports {bad}: planners and builders stay pure"
            checked += 1
    assert checked >= 30


def test_only_act_and_kube_call_the_apis_write_verbs():
    callers = set()
    for path in sorted(PACKAGE.glob("**/*.py")):
        rel = str(path.relative_to(PACKAGE))
        if rel.startswith("plugin/"):  # kubectl omendb: the user's own writes, not the operator's
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                    node.func.attr in WRITE_VERBS:
                receiver = ast.unparse(node.func.value)  # kube, self.kube, kube.resource(...), res ...
                if "kube" in receiver or "resource(" in receiver or receiver in ("res", "client"):
                    callers.add(rel)
    assert callers == WRITERS, callers
