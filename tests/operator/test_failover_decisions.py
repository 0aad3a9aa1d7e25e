"""The pure decisions of failover, switchover and scale-down (operator/omendb_operator/topology.py)."""

from __future__ import annotations

import dataclasses
import datetime as dt

from omendb_operator.plans import topology as T

T0 = dt.datetime(2026, 11, 27, 8, 0, 0, tzinfo=dt.UTC)
URLS = {f"db-{i}": f"https://db-{i}.db-headless.ns.svc:3000" for i in range(5)}


def primary(name: str, lsn: int = 100, term: int = 1, ready: bool = True) -> T.PodView:
    return T.PodView(name, ready=ready, engine=T.Engine(T.PRIMARY, lsn, term))


def replica(name: str, lsn: int, of: str = "db-0", term: int = 1, ready: bool = True) -> T.PodView:
    return T.PodView(name, ready=ready, engine=T.Engine(T.REPLICA, lsn, term, primary=URLS[of], lag_seconds=0.4,
                                                        lag_lsn=2))


def down(name: str, since: dt.datetime | None = None) -> T.PodView:
    return T.PodView(name, ready=False, not_ready_since=since, engine_error="ConnectError")


def inputs(*pods: T.PodView, at: dt.datetime = T0, primary_pod: str = "db-0", failover: dict | None = None,
           **kw) -> T.Inputs:
    return T.Inputs(now=at, primary_pod=primary_pod, failover=failover or {"phase": T.IDLE},
                    pods={p.name: p for p in pods}, peer_urls=URLS, replicas=kw.pop("replicas", len(pods)), **kw)


def test_the_most_advanced_replica_is_chosen():
    pods = {p.name: p for p in (down("db-0"), replica("db-1", 90), replica("db-2", 95), replica("db-3", 95),
                                 replica("db-4", 99))}
    # db-4 is beyond spec.replicas (going away): never promoted.
    assert T.best_replica(pods, "db-0", replicas=4).name == "db-2"  # LSN 95, then the lowest ordinal
    pods["db-3"] = replica("db-3", 95, term=2)
    assert T.best_replica(pods, "db-0", replicas=4).name == "db-3"  # same LSN, newer term
    pods["db-2"] = dataclasses.replace(pods["db-2"], deleting=True)
    pods["db-3"] = T.PodView("db-3", ready=True)  # engine does not answer
    assert T.best_replica(pods, "db-0", replicas=4).name == "db-1"
    assert T.best_replica({"db-0": down("db-0")}, "db-0", replicas=1) is None


def test_failover_waits_for_the_delay_then_promotes_with_the_lsns_in_an_event():
    pods = (down("db-0", since=T0), replica("db-1", 90), replica("db-2", 95))
    early = T.decide(inputs(*pods, at=T0 + dt.timedelta(seconds=10)))
    assert early.actions == [] and early.failover["phase"] == T.IDLE
    assert early.failover["primaryNotReadySince"] == "2026-11-27T08:00:00Z"
    assert early.requeue_after == 20  # reconcile again when the delay is up

    later = T.decide(inputs(*pods, at=T0 + dt.timedelta(seconds=31), failover=early.failover))
    assert later.failover["phase"] == T.PROMOTING and later.failover["to"] == "db-2"
    assert later.failover["reason"] == T.FAILOVER and later.failover["targetLsn"] == 95
    assert later.primary_pod == "db-0" and later.again  # recorded first, then acted on
    kind, reason, message = later.events[0]
    assert (kind, reason) == ("Warning", "FailoverStarted")
    assert "db-1 LSN 90" in message and "db-2 LSN 95" in message and "db-0 unreachable" in message


def test_the_clock_survives_an_operator_restart_and_a_recreated_pod():
    # The pod was recreated a moment ago (its Ready condition is new) but status remembers since when.
    pods = (down("db-0", since=T0 + dt.timedelta(seconds=28)), replica("db-1", 90))
    d = T.decide(inputs(*pods, at=T0 + dt.timedelta(seconds=31),
                        failover={"phase": T.IDLE, "primaryNotReadySince": "2026-11-27T08:00:00Z"}))
    assert d.failover["phase"] == T.PROMOTING


def test_no_failover_when_disabled_paused_single_or_the_primary_engine_still_answers():
    late = T0 + dt.timedelta(seconds=120)
    pods = (down("db-0", since=T0), replica("db-1", 90))
    for kw in ({"enabled": False}, {"paused": True}, {"replicas": 1}):
        assert T.decide(inputs(*pods, at=late, **kw)).failover["phase"] == T.IDLE
    # Not ready, but its engine answers as the primary: no second writer is made.
    d = T.decide(inputs(primary("db-0", ready=False), replica("db-1", 90), at=late))
    assert d.failover["phase"] == T.IDLE and "primaryNotReadySince" not in d.failover
    # No replica answers: wait, and say so.
    d = T.decide(inputs(down("db-0", since=T0), down("db-1"), at=late))
    assert d.failover["phase"] == T.IDLE and "no replica" in d.failover["message"]


def test_a_just_promoted_primary_gets_its_own_delay():
    # db-1 lagged (not ready) before its promotion; its old Ready transition must not trigger a failover.
    last = {"reason": T.FAILOVER, "from": "db-0", "to": "db-1", "at": "2026-11-27T08:01:00Z"}
    pods = (down("db-1", since=T0), replica("db-2", 90, of="db-1"))
    d = T.decide(inputs(*pods, primary_pod="db-1", at=T0 + dt.timedelta(seconds=70),
                        failover={"phase": T.IDLE, "last": last}))
    assert d.failover["phase"] == T.IDLE and d.requeue_after == 20
    assert d.failover["last"] == last


def test_promoting_promotes_then_moves_the_primary():
    fo = {"phase": T.PROMOTING, "reason": T.FAILOVER, "from": "db-0", "to": "db-2",
          "startedAt": "2026-11-27T08:00:31Z", "targetLsn": 95}
    pods = [down("db-0"), replica("db-1", 90), replica("db-2", 95)]
    d = T.decide(inputs(*pods, at=T0 + dt.timedelta(seconds=32), failover=fo))
    assert d.actions == [T.Promote("db-2")] and d.primary_pod == "db-0"
    pods[2] = primary("db-2", 95, term=2)
    d = T.decide(inputs(*pods, at=T0 + dt.timedelta(seconds=33), failover=fo))
    assert d.primary_pod == "db-2" and d.failover["phase"] == T.IDLE
    assert d.failover["last"] == {"reason": T.FAILOVER, "from": "db-0", "to": "db-2", "at": "2026-11-27T08:00:33Z",
                                  "lsn": 95, "term": 2, "seconds": 2.0}
    assert d.events[0][1] == "FailoverCompleted"
    # The next step (Idle) repoints the replica still following db-0; the old primary is unreachable.
    d = T.decide(inputs(*pods, primary_pod="db-2", failover=d.failover, at=T0 + dt.timedelta(seconds=34)))
    assert d.actions == [T.Follow("db-1", "db-2")]


def test_a_promotion_target_that_vanished_is_abandoned():
    fo = {"phase": T.PROMOTING, "reason": T.FAILOVER, "from": "db-0", "to": "db-2", "startedAt": "2026-11-27T08:00:31Z"}
    d = T.decide(inputs(down("db-0"), replica("db-1", 90), at=T0 + dt.timedelta(seconds=40), failover=fo))
    assert d.failover["phase"] == T.IDLE and d.primary_pod == "db-0" and d.events[0][1] == "FailoverAborted"


def test_converge_demotes_a_returning_old_primary_and_repoints_replicas():
    # db-0 restarted from a stale primary-pod file and runs as a primary on its old term.
    pods = (primary("db-0", 120, term=1), primary("db-1", 100, term=2), replica("db-2", 100, of="db-0"))
    d = T.decide(inputs(*pods, primary_pod="db-1"))
    assert d.actions == [T.Follow("db-0", "db-1"), T.Follow("db-2", "db-1")]
    assert {e[1] for e in d.events} == {"Repointed"}
    # The status primary's engine came up as a replica: promote it.
    d = T.decide(inputs(replica("db-0", 100, of="db-1"), replica("db-1", 100, of="db-0"), primary_pod="db-1"))
    assert d.actions == [T.Promote("db-1")]


def test_switchover_demotes_waits_for_the_lsn_then_promotes():
    pods = [primary("db-0", 100), replica("db-1", 98), replica("db-2", 99)]
    d = T.decide(inputs(*pods, switchover_to=""))  # "": the most advanced ready replica
    assert d.failover["phase"] == T.DEMOTING and d.failover["to"] == "db-2" and d.failover["reason"] == T.SWITCHOVER
    fo = d.failover
    d = T.decide(inputs(*pods, failover=fo))
    assert d.actions == [T.Follow("db-0", "db-2")]
    # Demoted at LSN 101 (a write landed just before): the target must hold 101 before it is promoted.
    pods[0] = replica("db-0", 101, of="db-2")
    d = T.decide(inputs(*pods, failover=fo))
    assert d.failover["phase"] == T.CATCHING_UP and d.failover["targetLsn"] == 101
    fo = d.failover
    d = T.decide(inputs(*pods, failover=fo, at=T0 + dt.timedelta(seconds=1)))
    assert d.failover["phase"] == T.CATCHING_UP and d.requeue_after == T.POLL_SECONDS and not d.actions
    pods[2] = replica("db-2", 101)
    d = T.decide(inputs(*pods, failover=fo, at=T0 + dt.timedelta(seconds=2)))
    assert d.failover["phase"] == T.PROMOTING
    d = T.decide(inputs(*pods, failover=d.failover))
    assert d.actions == [T.Promote("db-2")]
    pods[2] = primary("db-2", 101, term=2)
    d = T.decide(inputs(*pods, failover={**fo, "phase": T.PROMOTING}, at=T0 + dt.timedelta(seconds=3)))
    assert d.primary_pod == "db-2" and d.switchover_finished == "done: db-2 is the primary"
    # db-0 already follows db-2; db-1 is repointed.
    d = T.decide(inputs(*pods, primary_pod="db-2", failover=d.failover))
    assert d.actions == [T.Follow("db-1", "db-2")]


def test_a_switchover_whose_target_cannot_catch_up_is_undone():
    fo = {"phase": T.CATCHING_UP, "reason": T.SWITCHOVER, "from": "db-0", "to": "db-1",
          "startedAt": "2026-11-27T08:00:00Z", "targetLsn": 101}
    pods = (replica("db-0", 101, of="db-1"), replica("db-1", 90))
    d = T.decide(inputs(*pods, failover=fo, at=T0 + dt.timedelta(seconds=61)))
    assert d.failover["phase"] == T.IDLE and d.primary_pod == "db-0" and d.events[0][1] == "SwitchoverAborted"
    assert d.switchover_finished.startswith("refused")
    # Idle then promotes db-0 again (it was demoted), so writes resume there.
    assert T.decide(inputs(*pods, failover=d.failover)).actions == [T.Promote("db-0")]


def test_switchover_requests_that_cannot_be_done_are_refused_with_the_reason():
    pods = (primary("db-0"), replica("db-1", 98, ready=False), replica("db-2", 99))
    assert T.decide(inputs(*pods, switchover_to="db-1")).switchover_finished.startswith("refused: db-1")
    assert T.decide(inputs(*pods, switchover_to="db-7")).switchover_finished.startswith("refused: db-7")
    assert T.decide(inputs(*pods, switchover_to="db-0")).switchover_finished == "done: db-0 is already the primary"
    d = T.decide(inputs(down("db-0"), replica("db-1", 98), switchover_to="db-1"))
    assert d.switchover_finished.startswith("refused: the primary db-0 is not ready")


def test_scale_down_holds_the_statefulset_until_the_primary_moved():
    assert T.scale_hold(replicas=1, primary_pod="db-2", live_replicas=3, phase=T.IDLE) == 3
    assert T.scale_hold(replicas=2, primary_pod="db-2", live_replicas=3, phase=T.DEMOTING) == 3
    assert T.scale_hold(replicas=2, primary_pod="db-0", live_replicas=3, phase=T.IDLE) is None
    assert T.scale_hold(replicas=2, primary_pod="db-0", live_replicas=3, phase=T.CATCHING_UP) == 3
    assert T.scale_hold(replicas=3, primary_pod="db-0", live_replicas=1, phase=T.IDLE) is None


def test_labels_and_pod_status_follow_the_status_primary():
    pods = {p.name: p for p in (dataclasses.replace(primary("db-0"), role_label=T.PRIMARY),
                                dataclasses.replace(replica("db-1", 98, of="db-0"), role_label=T.PRIMARY),
                                replica("db-2", 99), down("db-3"))}
    assert T.role_labels(pods, "db-0") == {"db-1": T.REPLICA, "db-2": T.REPLICA, "db-3": T.REPLICA}
    assert T.role_labels(pods, "db-1") == {"db-0": T.REPLICA, "db-2": T.REPLICA, "db-3": T.REPLICA}
    rows = T.pod_statuses(pods, "db-0")
    assert rows[0] == {"name": "db-0", "role": "primary", "ready": True, "engineRole": "primary", "lsn": 100,
                       "term": 1}
    assert rows[1] == {"name": "db-1", "role": "replica", "ready": True, "engineRole": "replica", "lsn": 98,
                       "term": 1, "lagLsn": 2, "lagSeconds": 0}
    assert rows[3] == {"name": "db-3", "role": "replica", "ready": False, "error": "ConnectError"}


def test_pod_figures_alone_are_refreshed_at_most_once_a_minute():
    old = [{"name": "db-0", "role": "primary", "ready": True, "engineRole": "primary", "lsn": 10, "term": 1}]
    moved = [{**old[0], "lsn": 12}]
    at = "2026-11-27T08:00:00Z"
    assert T.refresh_pods(old, at, moved, T0 + dt.timedelta(seconds=30)) == (old, at)
    assert T.refresh_pods(old, at, moved, T0 + dt.timedelta(seconds=61)) == (moved, "2026-11-27T08:01:01Z")
    # A change of readiness or role is written at once.
    unready = [{**moved[0], "ready": False}]
    assert T.refresh_pods(old, at, unready, T0 + dt.timedelta(seconds=1)) == (unready, "2026-11-27T08:00:01Z")
    assert T.refresh_pods(None, None, old, T0) == (old, at)
    assert T.refresh_pods(old, at, old, T0 + dt.timedelta(seconds=300)) == (old, at)  # nothing to write


def silent(name: str, lsn: int, contact_age: float, silence: float, of: str = "db-0") -> T.PodView:
    return T.PodView(name, ready=True, engine=T.Engine(T.REPLICA, lsn, 1, primary=URLS[of], lag_seconds=silence,
                                                        primary_contact_age=contact_age,
                                                        primary_silent=silence))


def test_a_ready_primary_that_answers_nobody_is_down_since_the_replicas_last_heard_from_it():
    lost = T.PodView("db-0", ready=True, engine_error="ReadTimeout")  # its pod is still Ready
    pods = (lost, silent("db-1", 90, 4.0, 3.5), silent("db-2", 95, 3.0, 2.5))
    d = T.decide(inputs(*pods, delay_seconds=2, fence_seconds=5))
    # The most recent witness heard from it 3 s ago; wait for its fence (5 s) + 2 s from then.
    assert d.failover["phase"] == T.IDLE and d.failover["primaryNotReadySince"] == "2026-11-27T07:59:57Z"
    assert "answers neither the operator nor any replica" in d.failover["message"]
    assert d.requeue_after == 4
    later = T.decide(inputs(*pods, at=T0 + dt.timedelta(seconds=4), delay_seconds=2, fence_seconds=5,
                            failover=d.failover))
    assert later.failover["phase"] == T.PROMOTING and later.failover["to"] == "db-2"
    assert "unreachable (operator and replicas)" in later.events[0][2]
    # A longer delay than the fence is the delay.
    d = T.decide(inputs(*pods, at=T0 + dt.timedelta(seconds=4), delay_seconds=30, fence_seconds=15))
    assert d.failover["phase"] == T.IDLE and d.requeue_after == 27


def test_one_witness_still_hearing_the_primary_or_none_at_all_keeps_it_the_primary():
    lost = T.PodView("db-0", ready=True, engine_error="ConnectError")
    late = T0 + dt.timedelta(seconds=120)
    cases = {
        "a replica still streams from it": (lost, silent("db-1", 90, 30.0, 29.5), silent("db-2", 95, 0.2, 0.0)),
        "no replica answers": (lost, down("db-1"), down("db-2")),
        "the replica follows another primary": (lost, silent("db-1", 90, 30.0, 29.5, of="db-2")),
        "an engine that does not say": (lost, replica("db-1", 90)),
    }
    for why, pods in cases.items():
        d = T.decide(inputs(*pods, at=late, delay_seconds=1, fence_seconds=5))
        assert d.failover["phase"] == T.IDLE and "primaryNotReadySince" not in d.failover, why
        assert d.requeue_after == T.UNREACHABLE_RECHECK_SECONDS, why  # ... and looks again soon
    # The operator reaches it: up, whatever the replicas say.
    d = T.decide(inputs(primary("db-0"), silent("db-1", 90, 30.0, 29.5), at=late, delay_seconds=1))
    assert d.failover["phase"] == T.IDLE and d.requeue_after is None
