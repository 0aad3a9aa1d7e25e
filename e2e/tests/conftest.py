"""Fixtures shared by the operator journeys (e2e/tests/test_*journey*.py, test_backup_restore.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from e2e import operator_deploy
from e2e.kube import Kube


@pytest.fixture(scope="module")
def operator(kube: Kube, request: pytest.FixtureRequest) -> Iterator[str]:
    """The operator running in the cluster from its image, for one test module; its logs are printed
    when a test of the module failed."""
    operator_deploy.install(kube)
    failed_before = request.session.testsfailed
    yield operator_deploy.OPERATOR_NS
    if request.session.testsfailed > failed_before:
        print(f"\n===== operator logs =====\n{operator_deploy.logs(kube)}")
    operator_deploy.uninstall(kube)
