"""The CRDs in crds/: contract names, subresources, columns, and spec.config mirroring the engine."""

from __future__ import annotations

import json

import pytest
from operator_crd_helpers import CRDS, load_crd, omendb_crd_spec_schema

from omendb_operator.configschema import config_schema
from omendb_operator.spec import OPERATOR_OWNED_KEYS


def _version(crd):
    (version,) = crd["spec"]["versions"]
    return version


def test_omendb_contract_names_and_subresources():
    crd = load_crd("omendb.io_omendbs.yaml")
    assert crd["metadata"]["name"] == "omendbs.omendb.io"
    assert crd["spec"]["group"] == "omendb.io" and crd["spec"]["scope"] == "Namespaced"
    names = crd["spec"]["names"]
    assert (names["kind"], names["plural"], names["shortNames"]) == ("OmenDB", "omendbs", ["odb"])
    v = _version(crd)
    assert v["name"] == "v1alpha1" and v["served"] and v["storage"]
    assert v["subresources"]["status"] == {}
    assert v["subresources"]["scale"] == {
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }
    assert [c["name"] for c in v["additionalPrinterColumns"]] == [
        "Version",
        "Replicas",
        "Ready",
        "Phase",
        "Primary",
        "Age",
    ]


@pytest.mark.parametrize(
    "filename, kind",
    [("omendb.io_omendbbackups.yaml", "OmenDBBackup"), ("omendb.io_omendbrestores.yaml", "OmenDBRestore")],
)
def test_backup_and_restore_kinds(filename, kind):
    crd = load_crd(filename)
    assert crd["spec"]["group"] == "omendb.io" and crd["spec"]["names"]["kind"] == kind
    v = _version(crd)
    assert v["name"] == "v1alpha1" and "status" in v["subresources"]
    spec = v["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert spec["required"] == ["cluster"]


def test_config_schema_mirrors_the_engine():
    """spec.config in the CRD must be exactly what the engine accepts. If this fails after a change to
    engine/omendb/config.py: `python -m omendb_operator.configschema`, paste into the CRD's spec.config."""
    assert omendb_crd_spec_schema()["properties"]["config"] == config_schema()


def test_operator_owned_config_keys_are_refused_by_the_crd():
    sections = omendb_crd_spec_schema()["properties"]["config"]["properties"]
    for section, keys in OPERATOR_OWNED_KEYS.items():
        rules = [r["rule"] for r in sections[section]["x-kubernetes-validations"]]
        assert rules == [f"!has(self.{k})" for k in keys]


def test_our_crds_keep_no_unknown_fields():
    # kopf keeps its state in annotations, so our schemas are exact (only kopf's peering CRDs, whose
    # status kopf lays out itself, preserve unknown fields).
    for path in CRDS.glob("omendb.io_*.yaml"):
        assert "x-kubernetes-preserve-unknown-fields" not in json.dumps(load_crd(path.name)), path.name
    for path in CRDS.glob("kopf.dev_*.yaml"):
        assert load_crd(path.name)["spec"]["group"] == "kopf.dev"


def test_every_documented_rejection_has_a_rule():
    spec = omendb_crd_spec_schema()
    props = spec["properties"]
    rules = json.dumps(spec)
    assert "self >= 1" in json.dumps(props["replicas"])
    assert "self.matches" in json.dumps(props["version"])
    assert "oldSelf" in json.dumps(props["storage"]["properties"]["data"]["properties"]["size"])
    assert "oldSelf" in json.dumps(props["storage"]["properties"]["wal"]["properties"]["size"])
    assert "spec.tls.secretName is required" in rules
    assert "is not a valid cron schedule" in rules


def test_the_config_rewriter_reproduces_the_committed_crd():
    """`python -m omendb_operator.configschema --write` (for engine config changes) touches nothing else."""
    from omendb_operator.configschema import render_crd

    text = (CRDS / "omendb.io_omendbs.yaml").read_text()
    assert render_crd(text) == text


def test_categories_never_shadow_a_resource_name():
    # kubectl expands a category before it looks up a resource: a category `omendb` (the singular of OmenDB)
    # made `kubectl get omendb NAME` a get over every kind in it ("you must specify only one resource").
    crds = [load_crd(f"omendb.io_{plural}.yaml") for plural in ("omendbs", "omendbbackups", "omendbrestores")]
    names = {n for crd in crds for key in ("singular", "plural") for n in [crd["spec"]["names"][key]]}
    names |= {s for crd in crds for s in crd["spec"]["names"].get("shortNames", [])}
    for crd in crds:
        assert set(crd["spec"]["names"].get("categories", [])).isdisjoint(names), crd["metadata"]["name"]
