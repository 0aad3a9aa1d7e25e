"""The exact bytes of the two TOML writers (issue 18, item 8), so that a change of writer (tomli-w was
considered, see configmap.render_toml) cannot slip through:

- the operator's NAME-config for each of manifests/samples/*.yaml, and the config-hash annotation of its
  StatefulSet's pod template: a changed byte changes the hash, and an operator upgrade would then restart
  every database;
- the engine's `omendb config check` writer (omendb.cli.render_toml) on every kind of value it renders.

A golden file is the writer's output at the commit that added this test; regenerate only for a change that
is meant to restart every database on upgrade, and say so in its release notes."""

from __future__ import annotations

import datetime as dt
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from omendb.cli import render_toml as engine_render_toml
from omendb_operator import labels as L
from omendb_operator.plans.children import Observed, build_children
from omendb_operator.spec import parse_spec

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).resolve().parent / "golden"
SAMPLES = sorted((ROOT / "manifests" / "samples").glob("*.yaml"))
NOW = dt.datetime(2026, 12, 4, 12, tzinfo=dt.UTC)
# The pod template's omendb.io/config-hash of each sample's StatefulSet at the commit that added this test.
CONFIG_HASHES = {
    "omendb-development.yaml": "dd16aa19aeb674d5",
    "omendb-production.yaml": "f27b1cf6cb40b0c0",
    "omendb-staging.yaml": "e14d98e2c08516c4",
}


def _children(path: Path) -> dict[str, dict[str, Any]]:
    (doc,) = [d for d in yaml.safe_load_all(path.read_text()) if d]
    owner = {**doc, "metadata": {**doc["metadata"], "namespace": "omendb-golden", "uid": "u-1", "generation": 1}}
    desired = build_children(owner, parse_spec(doc["spec"]), Observed(), NOW)
    return {m["kind"]: m for m in desired.manifests}


@pytest.mark.parametrize("path", SAMPLES, ids=[p.name for p in SAMPLES])
def test_the_operators_configmap_is_byte_for_byte_unchanged(path):
    children = _children(path)
    text = children["ConfigMap"]["data"]["omendb.toml"]
    assert text.encode() == (GOLDEN / f"{path.stem}.toml").read_bytes()
    template = children["StatefulSet"]["spec"]["template"]["metadata"]
    assert template["annotations"][L.CONFIG_HASH_ANNOTATION] == CONFIG_HASHES[path.name]
    assert children["ConfigMap"]["metadata"]["annotations"][L.CONFIG_HASH_ANNOTATION] == CONFIG_HASHES[path.name]


class _Rendered:
    """What omendb.cli.render_toml reads of a Config (to_dict), with one value of each kind it renders."""

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {
            "database": {"name": 'we"ird\\name', "max_memory_mb": 8192, "expected_size": 100000000},
            "wal": {"enabled": True, "rotation_interval_hours": 24.0, "accept_gap": False},
            "security": {"admin_users": ["admin", "omendb-admin"], "tls_cert_file": "/etc/omendb/tls/tls.crt"},
            "replication": {"max_lag_seconds": 0.5, "primary_url": "", "empty": []},
        }


def test_the_engine_cli_writer_is_byte_for_byte_unchanged():
    text = engine_render_toml(_Rendered())  # type: ignore[arg-type]
    assert text.encode() == (GOLDEN / "engine-cli.toml").read_bytes()
    assert tomllib.loads(text) == _Rendered().to_dict()
