"""Fixtures shared by the operator journeys (test_operator_journey.py, test_failover.py, test_backup_restore.py,
test_upgrade.py)."""

from __future__ import annotations

import uuid
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


@pytest.fixture(scope="module")
def journey_namespace(kube: Kube, request: pytest.FixtureRequest) -> Iterator[str]:
    """A namespace for one journey module's OmenDB: dumped (events, pods, logs) when a test of the module
    failed, deleted at the end."""
    prefix = request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_").replace("_", "")[:30]
    namespace = f"{prefix}-{uuid.uuid4().hex[:5]}"
    kube.kubectl("create", "namespace", namespace)
    # Pods start only once the namespace's default ServiceAccount exists.
    kube.wait_until("default ServiceAccount", lambda: kube.get_or_none(namespace, "serviceaccount", "default"), 60)
    failed_before = request.session.testsfailed
    yield namespace
    if request.session.testsfailed > failed_before:
        print(f"\n===== dump of namespace {namespace} =====\n{kube.dump(namespace)}")
    kube.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
