"""The README's packaging claims, checked: its minimal OmenDB is accepted by the real API server, and the
commands it names exist."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def test_minimal_omendb_is_accepted_by_the_api_server(apiserver, namespace):
    section = README.split("## A minimal OmenDB", 1)[1]
    body = yaml.safe_load(re.search(r"```yaml\n(.*?)```", section, re.S).group(1))
    body["metadata"]["namespace"] = namespace
    with apiserver.client() as http:
        r = http.post(f"/apis/omendb.io/v1alpha1/namespaces/{namespace}/omendbs", params={"dryRun": "All"},
                      json=body)
    assert r.status_code == 201, r.text


def test_make_targets_the_readme_names_exist():
    makefile = (ROOT / "Makefile").read_text()
    for target in re.findall(r"`make ([a-z-]+)`", README):
        assert re.search(rf"^{re.escape(target)}:", makefile, re.M), f"README names `make {target}`"
    for path in ("charts/omendb-operator/values.yaml", "charts/omendb-operator/values.schema.json",
                 "manifests/install.yaml", "scripts/up.py", "scripts/chart_tools.py"):
        assert (ROOT / path).is_file(), path
