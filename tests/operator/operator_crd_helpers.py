"""Read the CRDs in crds/ (the source of truth) for tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CRDS = ROOT / "crds"


def load_crd(filename: str) -> dict[str, Any]:
    docs = [d for d in yaml.safe_load_all((CRDS / filename).read_text()) if d]
    assert len(docs) == 1, f"{filename} must hold exactly one CRD"
    return docs[0]


def omendb_crd_spec_schema() -> dict[str, Any]:
    crd = load_crd("omendb.io_omendbs.yaml")
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
