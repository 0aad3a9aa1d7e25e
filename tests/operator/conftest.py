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
