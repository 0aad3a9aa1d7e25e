from __future__ import annotations

from omendb_operator.plans.changes import (
    APPLIED_HASH_ANNOTATION,
    Outcome,
    comparable,
    decide,
    is_subset,
    keep_immutable,
    manifest_hash,
    with_hash,
)


def _cm(**data):
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "x", "namespace": "ns", "labels": {"a": "1"}},
        "data": data,
    }


def _live(desired, **extra_meta):
    live = {
        **desired,
        "metadata": {
            **desired["metadata"],
            "uid": "u",
            "resourceVersion": "7",
            "managedFields": [{"manager": "omendb-operator"}],
            **extra_meta,
        },
    }
    return live


def test_hash_is_stable_and_content_sensitive():
    assert manifest_hash(_cm(k="v")) == manifest_hash(_cm(k="v"))
    assert manifest_hash(_cm(k="v")) != manifest_hash(_cm(k="w"))
    assert with_hash(_cm(k="v"))["metadata"]["annotations"][APPLIED_HASH_ANNOTATION] == manifest_hash(
        _cm(k="v")
    )


def test_unchanged_child_is_not_written():
    desired = with_hash(_cm(k="v"))
    assert decide(desired, None) is Outcome.CREATED
    assert decide(desired, _live(desired)) is Outcome.UNCHANGED


def test_hand_edit_is_noticed():
    desired = with_hash(_cm(k="v"))
    edited = _live(desired)
    edited["data"] = {"k": "changed by hand"}
    assert decide(desired, edited) is None
    unlabelled = _live(desired)
    unlabelled["metadata"]["labels"] = {}
    assert decide(desired, unlabelled) is None


def test_fields_others_own_are_fine_but_a_spec_change_is_not():
    desired = with_hash(_cm(k="v"))
    live = _live(desired)
    live["metadata"]["labels"] = {"a": "1", "team": "added-by-someone-else"}
    live["data"] = {"k": "v", "other": "x"}
    assert decide(desired, live) is Outcome.UNCHANGED
    # A field we stopped setting: the hash differs, so the apply (which removes it) runs.
    assert decide(with_hash(_cm()), _live(desired)) is None


def test_subset_rules():
    assert is_subset({"a": [1, {"b": 2}]}, {"a": [1, {"b": 2, "c": 3}], "d": 4})
    assert not is_subset({"a": [1, 2]}, {"a": [1]})
    assert not is_subset({"a": True}, {"a": 1})
    assert is_subset({"memory": "1024Mi"}, {"memory": "1Gi"})  # the API server canonicalises quantities
    assert not is_subset({"memory": "1Gi"}, {"memory": "2Gi"})
    assert not is_subset({"name": "a"}, {"name": "b"})
    assert is_subset({"x": 1}, {"x": 1.0})


def test_comparable_drops_bookkeeping():
    a = {
        "metadata": {"name": "x", "resourceVersion": "1", "managedFields": []},
        "status": {"x": 1},
        "spec": 1,
    }
    b = {"metadata": {"name": "x", "resourceVersion": "2"}, "spec": 1}
    assert comparable(a) == comparable(b)


def test_statefulset_claim_templates_are_kept_from_live():
    desired = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": "s"},
        "spec": {
            "volumeClaimTemplates": [
                {"metadata": {"name": "data"}, "spec": {"resources": {"requests": {"storage": "20Gi"}}}}
            ]
        },
    }
    live = {
        "spec": {
            "volumeClaimTemplates": [
                {
                    "apiVersion": "v1",
                    "kind": "PersistentVolumeClaim",
                    "metadata": {"name": "data"},
                    "spec": {
                        "accessModes": ["ReadWriteOnce"],
                        "volumeMode": "Filesystem",
                        "resources": {"requests": {"storage": "10Gi"}},
                    },
                    "status": {"phase": "Pending"},
                }
            ]
        }
    }
    kept = keep_immutable(desired, live)
    assert kept["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "10Gi"
    assert "status" not in kept["spec"]["volumeClaimTemplates"][0]
    assert keep_immutable(desired, None) is desired
