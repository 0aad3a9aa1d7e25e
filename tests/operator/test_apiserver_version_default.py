"""The resolved version is recorded: an operator upgrade never changes a running OmenDB's version unasked.

spec.version has a schema default (the operator's DEFAULT_VERSION), so the API server writes the version into
the OmenDB when it is created. A later release's CRD with a newer default then leaves existing OmenDBs where
they are; only objects created after it get the new version. OmenDBs created before the default existed get
it persisted by the first write after the CRD upgrade: the operator writes their status, and a status write
stores the whole object as read, defaults included.

These run the real kube-apiserver. The default-changing steps use a copy of the OmenDB CRD in a test group, so
the shared CRD other tests use is never changed.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path

import yaml

from omendb_operator.spec import DEFAULT_VERSION

ROOT = Path(__file__).resolve().parents[2]
CRDS = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"


def _our_crd() -> dict:
    (crd,) = [d for d in yaml.safe_load_all((ROOT / "crds/omendb.io_omendbs.yaml").read_text()) if d]
    return crd


def _version_schema(crd: dict) -> dict:
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["version"]


def _test_crd(group: str, default: str | None) -> dict:
    crd = copy.deepcopy(_our_crd())
    crd["metadata"] = {"name": f"omendbs.{group}"}
    crd["spec"]["group"] = group
    schema = _version_schema(crd)
    schema.pop("default", None)
    if default is not None:
        schema["default"] = default
    return crd


def _install(http, crd: dict) -> None:
    name = crd["metadata"]["name"]
    live = http.get(f"{CRDS}/{name}")
    if live.status_code == 404:
        r = http.post(CRDS, json=crd)
        assert r.status_code == 201, r.text
    else:
        crd = {**crd, "metadata": {**crd["metadata"], "resourceVersion": live.json()["metadata"]["resourceVersion"]}}
        r = http.put(f"{CRDS}/{name}", json=crd)
        assert r.status_code == 200, r.text
    deadline = time.monotonic() + 60
    version_default = _version_schema(crd).get("default")
    while True:
        live = http.get(f"{CRDS}/{name}").json()
        conds = {c["type"]: c["status"] for c in (live.get("status") or {}).get("conditions") or []}
        if conds.get("Established") == "True" and _version_schema(live).get("default") == version_default:
            break
        assert time.monotonic() < deadline, live.get("status")
        time.sleep(0.2)
    time.sleep(1.0)  # the serving handlers pick the new schema up a moment after the CRD is stored


def _omendb(api: str, name: str) -> dict:
    return {"apiVersion": api, "kind": "OmenDB", "metadata": {"name": name}, "spec": {"replicas": 1}}


def test_the_crd_defaults_the_version_to_the_operators_default():
    assert _version_schema(_our_crd())["default"] == DEFAULT_VERSION


def test_a_created_omendb_records_the_version_and_keeps_it_when_the_default_changes(apiserver, namespace):
    with apiserver.client() as http:
        r = http.post(f"/apis/omendb.io/v1alpha1/namespaces/{namespace}/omendbs",
                      json=_omendb("omendb.io/v1alpha1", "db"))
        assert r.status_code == 201, r.text
        assert r.json()["spec"]["version"] == DEFAULT_VERSION  # the real CRD records it

        group = "vdefault.omendb.io"
        base = f"/apis/{group}/v1alpha1/namespaces/{namespace}/omendbs"
        _install(http, _test_crd(group, None))
        # Created before the CRD had a default (a release before this one): no version stored.
        r = http.post(base, json=_omendb(f"{group}/v1alpha1", "legacy"))
        assert r.status_code == 201, r.text
        assert "version" not in r.json()["spec"]

        _install(http, _test_crd(group, "0.1.0"))  # this release's CRD
        r = http.post(base, json=_omendb(f"{group}/v1alpha1", "new"))
        assert r.json()["spec"]["version"] == "0.1.0"
        # The operator's first status write after the upgrade stores the legacy object with its default.
        r = http.patch(f"{base}/legacy/status", headers={"Content-Type": "application/merge-patch+json"},
                       json={"status": {"phase": "Running"}})
        assert r.status_code == 200, r.text

        _install(http, _test_crd(group, "0.2.0"))  # a later release's CRD with a newer default
        assert http.get(f"{base}/new").json()["spec"]["version"] == "0.1.0"
        assert http.get(f"{base}/legacy").json()["spec"]["version"] == "0.1.0"
        r = http.post(base, json=_omendb(f"{group}/v1alpha1", "later"))
        assert r.json()["spec"]["version"] == "0.2.0"  # only new OmenDBs get the new default

        assert http.delete(f"{CRDS}/omendbs.{group}").status_code == 200
