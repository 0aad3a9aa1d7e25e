"""plans/omendb.py and its parts, as pure functions of a World built by hand: no API server, no engine.

The same planners run against a real kube-apiserver in test_apiserver_*.py and test_failover_apiserver.py;
here each decision that the observe/plan/act split introduced is pinned on its own.
"""

from __future__ import annotations

import copy
import datetime as dt
from typing import Any

from omendb_operator.plans import day2, failover, operations
from omendb_operator.plans import topology as T
from omendb_operator.plans.changes import with_hash
from omendb_operator.plans.children import Observed, build_children
from omendb_operator.plans.omendb import owner_of, plan_omendb
from omendb_operator.plans.plan import Delete, Patch, StatusWrite, merge_patch
from omendb_operator.plans.world import World
from omendb_operator.spec import parse_spec

NOW = dt.datetime(2026, 12, 4, 12, 0, tzinfo=dt.UTC)
SPEC = {"replicas": 3, "tls": {"enabled": False}, "backup": {"enabled": False},
        "monitoring": {"prometheusRule": False, "serviceMonitor": False}, "failover": {"delaySeconds": 5}}


def _omendb(spec: dict[str, Any] | None = None, status: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"apiVersion": "omendb.io/v1alpha1", "kind": "OmenDB",
            "metadata": {"name": "db", "namespace": "ns", "uid": "u-1", "generation": 1},
            "spec": spec or SPEC, "status": status or {}}


def _pod(name: str, ready: bool = True, uid: str | None = None) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "ns", "uid": uid or f"uid-{name}",
                         "labels": {"app.kubernetes.io/instance": "db", "app.kubernetes.io/component": "database",
                                    "controller-revision-hash": "rev-1", "role": None}},
            "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False",
                                       "lastTransitionTime": "2026-12-04T11:00:00Z"}]}}


def _engine(role: str, lsn: int = 10) -> T.Engine:
    return T.Engine(role=role, lsn=lsn, term=1, primary="http://db-0:3000" if role == "replica" else None)


def _steady_world() -> World:
    """Three pods, db-0 primary, every child live exactly as the builders make it."""
    omendb = _omendb(status={"primaryPod": "db-0", "failover": {"phase": "Idle"}})
    world = World(namespace="ns", name="db", omendb=omendb)
    spec = parse_spec(SPEC)
    desired = build_children(owner_of(omendb), spec, Observed(primary_pod="db-0"), NOW)
    for manifest in desired.manifests:
        live = with_hash(manifest)
        if manifest["kind"] == "Secret":
            world.secrets[manifest["metadata"]["name"]] = live
        else:
            world.children.setdefault(manifest["kind"], {})[manifest["metadata"]["name"]] = live
    sts = world.children["StatefulSet"]["db"]
    sts["metadata"]["generation"] = 1
    sts["status"] = {"observedGeneration": 1, "replicas": 3, "readyReplicas": 3, "updatedReplicas": 3,
                     "updateRevision": "rev-1"}
    world.children["Pod"] = {}
    for i in range(3):
        pod = _pod(f"db-{i}")
        pod["metadata"]["labels"]["role"] = "primary" if i == 0 else "replica"
        world.children["Pod"][f"db-{i}"] = pod
        world.pods[f"db-{i}"] = T.PodView(name=f"db-{i}", ready=True, role_label=pod["metadata"]["labels"]["role"],
                                         engine=_engine("primary" if i == 0 else "replica"))
    world.peer_urls = {p: f"http://{p}:3000" for p in world.pods}
    return world


def test_a_steady_world_plans_no_write():
    world = _steady_world()
    first = plan_omendb(world, NOW)
    # Status written once; fold it in as the API server would, and the next plan writes nothing.
    assert first.status is not None
    world.omendb = copy.deepcopy(world.omendb)
    world.omendb["status"] = {k: v for k, v in {**world.omendb["status"], **first.status.patch}.items()
                              if v is not None}
    plan = plan_omendb(world, NOW)
    assert plan.status is None and not plan.status_first and not plan.engine_actions
    assert not plan.creates and not plan.patches and not plan.deletes and not plan.statuses
    assert all(a.live is not None for a in plan.applies)  # each child compared with its live copy
    assert not plan.again and plan.requeue is None


def test_a_failover_in_motion_plans_only_the_failover_and_records_it_first():
    world = _steady_world()
    world.pods["db-0"] = T.PodView(name="db-0", ready=False, not_ready_since=NOW - dt.timedelta(seconds=30),
                                   role_label="primary", engine=None, engine_error="refused")
    plan = plan_omendb(world, NOW)
    assert plan.again
    (first,) = plan.status_first
    assert first.patch["failover"]["phase"] == "Promoting" and first.patch["failover"]["from"] == "db-0"
    assert not plan.applies and plan.status is None  # the rest waits until the primary settled
    # The last pass of a reconcile plans everything anyway.
    final = plan_omendb(world, NOW, final=True)
    assert final.status_first == plan.status_first and final.applies


def test_an_engine_action_that_failed_is_not_repeated_in_the_same_reconcile():
    world = _steady_world()
    world.pods["db-1"] = T.PodView(name="db-1", ready=True, role_label="replica", engine=_engine("primary"))
    plan = plan_omendb(world, NOW)
    assert plan.engine_actions == [T.Follow("db-1", "db-0")] and plan.again
    retry = plan_omendb(world, NOW, engines_failed=True)
    assert not retry.engine_actions and not retry.again and retry.requeue == 2.0 and retry.applies


def test_a_switchover_annotation_is_consumed_with_a_patch_and_an_event():
    world = _steady_world()
    world.omendb["metadata"]["annotations"] = {failover.SWITCHOVER_ANNOTATION: "db-0"}
    plan = plan_omendb(world, NOW)
    assert Patch("omendb.io/v1alpha1", "OmenDB", "db", "ns",
                 {"metadata": {"annotations": {failover.SWITCHOVER_ANNOTATION: None}}}) in plan.patches
    assert [(e.reason, e.message) for e in plan.events if e.reason.startswith("Switchover")] == [
        ("SwitchoverDone", f"{failover.SWITCHOVER_ANNOTATION}=db-0: done: db-0 is already the primary")]


def test_the_rollout_waits_while_the_statefulset_it_applies_changes():
    world = _steady_world()
    world.pods["db-2"] = T.PodView(name="db-2", ready=True, role_label="replica", engine=_engine("replica"))
    world.children["Pod"]["db-2"]["metadata"]["labels"]["controller-revision-hash"] = "rev-0"  # outdated
    plan = plan_omendb(world, NOW)
    assert Delete("v1", "Pod", "db-2", "ns", uid="uid-db-2") in plan.deletes  # replicas first, uid-guarded
    # The same world with a new spec: the StatefulSet changes now, so its revision is not known yet.
    world.omendb["spec"] = {**SPEC, "resources": {"requests": {"cpu": "300m"}}}
    plan = plan_omendb(world, NOW)
    assert not [d for d in plan.deletes if d.kind == "Pod"]
    assert day2.statefulset_after(world.statefulset, True)["metadata"]["generation"] == 2
    assert day2.statefulset_after(world.statefulset, False) is world.statefulset


def test_the_two_facts_about_backup_jobs():
    world = World(namespace="ns", name="db", omendb=_omendb())

    def job(name: str, component: str, status: dict[str, Any]) -> dict[str, Any]:
        return {"apiVersion": "batch/v1", "kind": "Job", "status": status,
                "metadata": {"name": name, "labels": {"app.kubernetes.io/component": component}}}

    world.children["Job"] = {
        "a-cleanup": job("a-cleanup", "backup-cleanup", {}),  # created, not started: holds the volume
        "b-backup": job("b-backup", "backup", {"active": 1}),
        "c-done": job("c-done", "backup", {"conditions": [{"type": "Complete", "status": "True"}]}),
    }
    assert operations.backup_volume_lock(world) == "a-cleanup"
    assert operations.backups_reading_pods(world) == ("b-backup",)


def test_a_gone_omendb_fails_its_backups():
    world = World(namespace="ns", name="ghost", omendb=None)
    world.backups = [{"apiVersion": "omendb.io/v1alpha1", "kind": "OmenDBBackup", "status": {},
                      "metadata": {"name": "b1", "namespace": "ns", "generation": 1},
                      "spec": {"cluster": {"name": "ghost"}}}]
    from omendb_operator.plans.omendb import plan_gone

    plan = plan_gone(world, NOW)
    (write,) = plan.statuses
    assert isinstance(write, StatusWrite) and write.kind == "OmenDBBackup" and write.patch["phase"] == "Failed"


def test_merge_patch_nulls_what_is_gone():
    assert merge_patch({"a": 1, "b": 2}, {"a": 3}) == {"b": None, "a": 3}


def test_backup_jobs_run_the_version_that_runs_not_the_one_asked_for():
    """A typo in spec.version must not block the backup that protects the upgrade to it."""
    world = _steady_world()
    world.omendb["spec"] = {**SPEC, "version": "0.1.9-typo", "backup": {"enabled": True}}
    world.statefulset["metadata"].setdefault("annotations", {})["omendb.io/image"] = "omendb/omendb:0.1.0"
    world.backups = [{"apiVersion": "omendb.io/v1alpha1", "kind": "OmenDBBackup", "status": {},
                      "metadata": {"name": "b1", "namespace": "ns", "generation": 1, "uid": "b-1"},
                      "spec": {"cluster": {"name": "db"}, "type": "full"}}]
    plan = plan_omendb(world, NOW, final=True)
    (job,) = [c for c in plan.creates if c["kind"] == "Job"]
    assert [c["image"] for c in job["spec"]["template"]["spec"]["containers"]] == ["omendb/omendb:0.1.0"]
