"""pytest fixtures for the e2e tier: one cluster per session, one namespace per test.

The session fixture starts the local cluster (and builds and loads the project's images) unless
one is already running from the same state directory, in which case it is reused and left
running. If the cluster cannot start, every e2e test fails with the reason; nothing is skipped.
On a failed test the namespace's events, pod statuses and container logs are printed.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from e2e import cluster, images
from e2e import layout as L
from e2e.kube import Kube
from e2e.layout import Layout


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    rep = outcome.get_result()  # type: ignore[attr-defined]
    setattr(item, f"rep_{rep.when}", rep)


@pytest.fixture(scope="session")
def e2e_cluster() -> Iterator[Layout]:
    lay = Layout(L.default_state_dir().resolve())
    started_here = False
    if not cluster.is_up(lay):
        # OMENDB_E2E_NODES=3 starts a 3-node cluster in zones zone-a..c (docs/e2e.md "Many nodes").
        cluster.up(lay, nodes=int(os.environ.get("OMENDB_E2E_NODES", "1")))
        started_here = True
    elif cluster.status(lay) != 0:
        raise RuntimeError(f"a cluster is running from {lay.root} but is not healthy; "
                           "run `python -m e2e.cluster down` and retry")
    try:
        if not started_here:
            # `up` loads the images it builds; a reused cluster gets the current ones now.
            images.load(images.project_images(), lay.root)
        yield lay
    finally:
        if started_here and os.environ.get("OMENDB_E2E_KEEP") != "1":
            problems = cluster.down(lay)
            if problems:
                raise RuntimeError(f"cluster teardown left things behind: {problems}")


@pytest.fixture(scope="session")
def kube(e2e_cluster: Layout) -> Kube:
    return Kube(cluster.bin_dir_of(e2e_cluster), e2e_cluster.admin_kubeconfig)


@pytest.fixture
def namespace(kube: Kube, request: pytest.FixtureRequest) -> Iterator[str]:
    base = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:40].strip("-")
    name = f"{base}-{uuid.uuid4().hex[:5]}"
    kube.kubectl("create", "namespace", name)
    # Pods start only once the namespace's default ServiceAccount exists.
    kube.wait_until("default ServiceAccount", lambda: kube.get_or_none(name, "serviceaccount", "default"), 60)
    yield name
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        print(f"\n===== dump of namespace {name} =====\n{kube.dump(name)}")
    kube.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="session")
def engine_image() -> str:
    return images.ENGINE_IMAGE


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path
