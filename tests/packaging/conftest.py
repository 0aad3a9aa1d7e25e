"""Fixtures for the packaging tests: the operator tests' bare kube-apiserver (with this project's CRDs and
the Prometheus Operator's), imported from tests/operator rather than copied, and the chart tools."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OPERATOR_TESTS = ROOT / "tests" / "operator"
for path in (OPERATOR_TESTS, ROOT / "scripts", ROOT):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

# tests/operator/conftest.py is a conftest of another directory, so its fixtures are not visible here;
# load it under its own name and re-export the two fixtures.
_spec = importlib.util.spec_from_file_location("operator_tests_conftest", OPERATOR_TESTS / "conftest.py")
assert _spec and _spec.loader
_operator_conftest = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_operator_conftest)

apiserver = _operator_conftest.apiserver
namespace = _operator_conftest.namespace
