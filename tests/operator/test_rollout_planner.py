"""rollout.plan_rollout: which pod goes next, and when nothing may go."""

from __future__ import annotations

import datetime as dt

import pytest
from conftest import make_owner

from omendb_operator.plans.rollout import PodView, plan_rollout, pod_view, update_revision
from omendb_operator.spec import parse_spec
from omendb_operator.specs.configmap import build_configmap, config_hash
from omendb_operator.specs.statefulset import build_statefulset


def pods(*specs: tuple[int, str, bool]) -> list[PodView]:
    return [PodView(name=f"db-{i}", ordinal=i, revision=rev, ready=ready) for i, rev, ready in specs]


def test_replicas_first_highest_ordinal_first_then_switchover_then_primary():
    ps = pods((0, "old", True), (1, "old", True), (2, "old", True))
    assert plan_rollout("new", ps, 3, "db-0").pod == "db-2"
    ps = pods((0, "old", True), (1, "old", True), (2, "new", True))
    assert plan_rollout("new", ps, 3, "db-0", "db-2").pod == "db-1"
    ps = pods((0, "old", True), (1, "new", True), (2, "new", True))
    step = plan_rollout("new", ps, 3, "db-0", "db-1")
    assert (step.action, step.pod, step.target) == ("switchover", "db-0", "db-1")
    # After the switchover db-1 is the primary: db-0 (now a replica) goes.
    step = plan_rollout("new", ps, 3, "db-1", "db-1")
    assert (step.action, step.pod) == ("delete", "db-0")
    ps = pods((0, "new", True), (1, "new", True), (2, "new", True))
    assert plan_rollout("new", ps, 3, "db-1", "db-0").action == "done"


def test_primary_not_pod_zero_is_still_last():
    ps = pods((0, "old", True), (1, "old", True), (2, "old", True))
    assert plan_rollout("new", ps, 3, "db-2").pod == "db-1"
    ps = pods((0, "old", True), (1, "new", True), (2, "old", True))
    assert plan_rollout("new", ps, 3, "db-2").pod == "db-0"


def test_single_pod_is_deleted_without_switchover():
    step = plan_rollout("new", pods((0, "old", True)), 1, "db-0")
    assert (step.action, step.pod) == ("delete", "db-0")


def test_one_at_a_time_waits_for_the_replaced_pod_ready_and_healthy():
    # db-2 was replaced and is back on the new revision but not Ready: nothing else goes.
    ps = pods((0, "old", True), (1, "old", True), (2, "new", False))
    step = plan_rollout("new", ps, 3, "db-0", "db-2")
    assert step.action == "wait" and "db-2" in step.reason
    # Ready but /health not answered yet.
    ps = pods((0, "old", True), (1, "old", True), (2, "new", True))
    step = plan_rollout("new", ps, 3, "db-0", "db-2", watched_healthy=False)
    assert step.action == "wait" and "/health" in step.reason
    # Being recreated.
    ps = pods((0, "old", True), (1, "old", True))
    assert plan_rollout("new", ps, 3, "db-0", "db-2").action == "wait"


@pytest.mark.parametrize("ps", [
    [PodView("db-0", 0, "old", True), PodView("db-1", 1, "old", True, terminating=True)],
    [PodView("db-0", 0, "old", True)],
    [PodView("db-0", 0, "old", True), PodView("db-1", 1, "new", False)],
], ids=["terminating", "missing", "new-pod-not-ready"])
def test_nothing_is_deleted_while_a_pod_is_away(ps):
    assert plan_rollout("new", ps, 2, "db-0").action == "wait"


def test_an_outdated_pod_that_is_not_ready_goes_first():
    ps = pods((0, "old", True), (1, "old", False), (2, "old", True))
    assert plan_rollout("new", ps, 3, "db-0").pod == "db-1"
    # Even the primary's pod, and without a switchover (it serves nothing).
    ps = pods((0, "old", False), (1, "new", True))
    step = plan_rollout("new", ps, 2, "db-0")
    assert (step.action, step.pod) == ("delete", "db-0")


def test_unknown_revision_waits():
    assert plan_rollout(None, pods((0, "old", True)), 1, "db-0").action == "wait"


def test_update_revision_only_once_the_controller_saw_the_generation():
    sts = {"metadata": {"generation": 3}, "status": {"observedGeneration": 2, "updateRevision": "r2"}}
    assert update_revision(sts) is None
    sts["status"]["observedGeneration"] = 3
    assert update_revision(sts) == "r2"


def test_pod_view_reads_revision_readiness_and_deletion():
    pod = {"metadata": {"name": "db-12", "labels": {"controller-revision-hash": "db-abc"},
                        "deletionTimestamp": "2026-01-01T00:00:00Z"},
           "status": {"conditions": [{"type": "Ready", "status": "True"}]}}
    assert pod_view(pod) == PodView("db-12", 12, "db-abc", True, True)


def _sts(raw, owner=None):
    owner = owner or make_owner(name="db")
    spec = parse_spec(raw)
    cm = build_configmap(owner, spec)
    return build_statefulset(owner, spec, config_hash(cm["data"]["omendb.toml"]))


def test_statefulset_is_ondelete_and_its_template_is_stable_across_operator_versions():
    sts = _sts({})
    assert sts["spec"]["updateStrategy"] == {"type": "OnDelete"}
    assert sts["metadata"]["annotations"]["omendb.io/image"] == "omendb/omendb:0.1.0"
    # Rendering twice (as a new operator version would) gives the same pod template, and nothing in it
    # names the operator or its version: an operator upgrade alone never restarts a database pod.
    assert _sts({})["spec"]["template"] == sts["spec"]["template"]
    template = str(sts["spec"]["template"])
    assert "omendb-operator:" not in template and "operator-version" not in template
    assert set(sts["spec"]["template"]["metadata"]["annotations"]) == {"omendb.io/config-hash"}
    # A changed config does change it (the rollout replaces the pods).
    changed = _sts({"config": {"index": {"max_error": 7}}})["spec"]["template"]
    assert changed != sts["spec"]["template"]


def test_hibernated_statefulset_has_no_pods_and_backups_are_suspended():
    from omendb_operator.plans.children import Observed, build_children
    from omendb_operator.plans.hibernation import replicas_override, spec_for_children

    spec = parse_spec({"replicas": 3, "hibernate": True})
    desired = build_children(make_owner(name="db"), spec_for_children(spec),
                             Observed(replicas_override=replicas_override(spec)), dt.datetime.now(dt.UTC))
    by_kind = {}
    for m in desired.manifests:
        by_kind.setdefault(m["kind"], []).append(m)
    assert by_kind["StatefulSet"][0]["spec"]["replicas"] == 0
    assert all(c["spec"]["suspend"] for c in by_kind["CronJob"])
    assert {m["metadata"]["name"] for m in by_kind["Secret"]} == {"db-users", "db-backup-key", "db-ca", "db-tls"}
    assert [m["metadata"]["name"] for m in by_kind["PersistentVolumeClaim"]] == ["db-backups"]
    assert replicas_override(parse_spec({"replicas": 3})) is None
