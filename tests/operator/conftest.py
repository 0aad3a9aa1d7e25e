"""Shared fixtures for the operator's unit tests: an OmenDB object as the API server would return it."""

from __future__ import annotations

from typing import Any

import pytest

from omendb_operator.spec import OmenDBSpec, parse_spec


def make_owner(
    name: str = "prod",
    namespace: str = "omendb-prod",
    spec: dict[str, Any] | None = None,
    generation: int = 1,
) -> dict[str, Any]:
    return {
        "apiVersion": "omendb.io/v1alpha1",
        "kind": "OmenDB",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": "0c6e2f0a-1d2b-4c5d-9e8f-001122334455",
            "generation": generation,
        },
        "spec": spec or {},
    }


@pytest.fixture
def owner() -> dict[str, Any]:
    return make_owner()


@pytest.fixture
def spec() -> OmenDBSpec:
    return parse_spec({})


@pytest.fixture(scope="session")
def apiserver():
    """A real kube-apiserver (with etcd) on loopback, with this project's CRDs and prometheus-operator's
    PrometheusRule/ServiceMonitor CRDs installed and established."""
    import time
    from pathlib import Path

    import yaml
    from operator_apiserver import monitoring_crd_files, running_apiserver

    crd_dir = Path(__file__).resolve().parents[2] / "crds"
    with running_apiserver() as server, server.client() as http:
        names = []
        for path in [*sorted(crd_dir.glob("*.yaml")), *monitoring_crd_files()]:
            for doc in yaml.safe_load_all(path.read_text()):
                if not doc:
                    continue
                r = http.post("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", json=doc)
                assert r.status_code == 201, f"{path.name}: {r.status_code} {r.text[:2000]}"
                names.append(doc["metadata"]["name"])
        deadline = time.monotonic() + 60
        for name in names:
            while True:
                crd = http.get(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}").json()
                conds = {c["type"]: c["status"] for c in (crd.get("status") or {}).get("conditions") or []}
                if conds.get("Established") == "True":
                    break
                assert time.monotonic() < deadline, f"CRD {name} not established: {crd.get('status')}"
                time.sleep(0.2)
        # Discovery of new CRDs takes a moment to reach the aggregated discovery document.
        while http.get("/apis/omendb.io/v1alpha1").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        yield server


@pytest.fixture
def namespace(apiserver, request):
    """A fresh namespace per test."""
    import hashlib
    import re

    digest = hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:8]
    name = "t-" + re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:40].strip("-") + "-" + digest
    with apiserver.client() as http:
        r = http.post(
            "/api/v1/namespaces", json={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
        )
        assert r.status_code == 201, r.text
    return name
