"""Which pod is the primary, and how it moves: the pure decisions of failover, switchover and scale-down.

Observations (each pod's readiness and what its engine says about itself) go in; actions (promote a pod,
make a pod follow the primary) and the next ``status.failover`` come out. Every step that changes the
topology is recorded in status *before* it is acted on, so an operator that restarts half-way through a
failover or a switchover reads where it was and carries on (the shell is failover.py).

Phases of ``status.failover.phase``:

- ``Idle``: converge (a stray primary follows the primary; a replica following an old URL is repointed;
  the primary's engine, if it came up as a replica, is promoted) and watch the primary's readiness.
- ``Promoting`` (failover or switchover): promote ``to``; once its engine says primary, ``primaryPod``
  becomes ``to`` and the phase is Idle again (which repoints the others).
- ``Demoting`` (switchover): the primary follows ``to`` (client writes stop there); its LSN is then
  recorded as ``targetLsn``.
- ``CatchingUp`` (switchover): wait until ``to`` holds ``targetLsn``, then Promoting. So a switchover
  loses no acknowledged write, even with asynchronous replication.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from omendb_operator.times import parse_time, timestamp

PRIMARY, REPLICA = "primary", "replica"
IDLE, PROMOTING, DEMOTING, CATCHING_UP = "Idle", "Promoting", "Demoting", "CatchingUp"
FAILOVER, SWITCHOVER = "failover", "switchover"
SWITCHOVER_TIMEOUT_SECONDS = 60.0  # a switchover whose target cannot catch up in this time is undone
POLL_SECONDS = 1.0  # how soon a phase waiting on an engine looks again


def ordinal(pod: str) -> int:
    tail = pod.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else -1


@dataclass(frozen=True)
class Engine:
    """What a pod's engine says about itself (GET /v1/stats)."""

    role: str
    lsn: int
    term: int
    primary: str | None = None  # the URL a replica follows
    lag_seconds: float | None = None
    lag_lsn: int | None = None
    wal_archive: dict[str, Any] | None = None  # the primary's WAL archiver ([wal_archive]), when it has one
    # A replica's view of its primary: seconds since it last answered, and how much of that is beyond one
    # long poll (None: never reached it, or an engine of a release that does not say).
    primary_contact_age: float | None = None
    primary_silent: float | None = None


@dataclass(frozen=True)
class PodView:
    name: str
    ready: bool = False
    deleting: bool = False
    not_ready_since: dt.datetime | None = None  # the pod's Ready condition turned False at
    role_label: str | None = None
    engine: Engine | None = None  # None: the engine did not answer
    engine_error: str = ""
    node: str | None = None  # spec.nodeName: where it runs (None: not scheduled yet)


@dataclass(frozen=True)
class Promote:
    pod: str


@dataclass(frozen=True)
class Follow:
    pod: str
    primary: str  # pod name of the primary to follow


Action = Promote | Follow


@dataclass
class Decision:
    """What to do now. ``failover`` and ``primary_pod`` are written to status before ``actions`` run."""

    primary_pod: str
    failover: dict[str, Any]
    actions: list[Action] = field(default_factory=list)
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (type, reason, message)
    requeue_after: float | None = None
    again: bool = False  # the state moved on: observe and decide again at once
    switchover_finished: str | None = None  # "done" or "refused: why": the request is consumed


@dataclass(frozen=True)
class Inputs:
    now: dt.datetime
    primary_pod: str
    failover: dict[str, Any]  # status.failover as last written
    pods: dict[str, PodView]
    peer_urls: dict[str, str]  # pod -> the URL other pods reach its API at
    replicas: int  # spec.replicas: pods at or beyond this ordinal are going away
    enabled: bool = True  # spec.failover.enabled
    delay_seconds: float = 30.0  # spec.failover.delaySeconds
    switchover_to: str | None = None  # a requested switchover: a pod name, or "" for the best replica
    paused: bool = False  # another operation holds the pod count (restore, hibernation): no failover
    fence_seconds: float = 15.0  # the engines' [replication] fence_after_seconds (spec.fence_after_seconds)


def best_replica(pods: dict[str, PodView], primary: str, replicas: int,
                 require_ready: bool = False) -> PodView | None:
    """The replica to promote: the highest LSN (it holds every write any replica acknowledged; with
    synchronous replication, every acknowledged write), then the highest term, then a ready pod, then the
    lowest ordinal. Only pods that stay (ordinal < spec.replicas) and whose engine answers qualify."""
    candidates = [p for p in pods.values()
                  if p.name != primary and not p.deleting and p.engine is not None
                  and 0 <= ordinal(p.name) < replicas and (p.ready or not require_ready)]
    if not candidates:
        return None
    return max(candidates, key=lambda p: (p.engine.lsn, p.engine.term, p.ready,  # type: ignore[union-attr]
                                          -ordinal(p.name)))


def _positions(pods: dict[str, PodView]) -> str:
    parts = []
    for p in sorted(pods.values(), key=lambda p: ordinal(p.name)):
        parts.append(f"{p.name} LSN {p.engine.lsn} term {p.engine.term}" if p.engine
                     else f"{p.name} unreachable")
    return ", ".join(parts)


def _since(inputs: Inputs) -> dt.datetime:
    """When the primary was first seen down (kept in status, so a restart does not reset the clock), but
    never before it became the primary (a promoted replica may have been unready while its primary was
    gone)."""
    known = parse_time(inputs.failover.get("primaryNotReadySince"))
    pod = inputs.pods.get(inputs.primary_pod)
    seen = [t for t in (known, pod.not_ready_since if pod else None) if t is not None]
    since = min(seen) if seen else inputs.now
    last = inputs.failover.get("last") or {}
    became = parse_time(last.get("at")) if last.get("to") == inputs.primary_pod else None
    return max(since, became) if became else since


SILENT_SECONDS = 1.0  # a replica's primary silent this long beyond one long poll has stopped answering it
UNREACHABLE_MARGIN_SECONDS = 2.0  # promote an unreachable primary no sooner than its fence + this
UNREACHABLE_RECHECK_SECONDS = 3.0  # look again this soon at a Ready primary whose engine did not answer


def unreachable(inputs: Inputs) -> dt.datetime | None:
    """When the primary stopped answering everyone, if it has: its pod is still Ready (a dead or cut-off node
    keeps it Ready for ~40 s, until the node is marked NotReady), but its engine answers neither the
    operator nor any replica, and at least one replica's engine answers and says so. The time is when the
    most recent of them last heard from it. One witness is not enough: the operator alone not reaching it
    is a partition between the two (the replicas still stream from it), and so is a replica alone."""
    primary = inputs.pods.get(inputs.primary_pod)
    if primary is None or primary.deleting or primary.engine is not None:
        return None
    want = inputs.peer_urls.get(inputs.primary_pod, "").rstrip("/")
    witnesses = [p.engine for p in inputs.pods.values()
                 if p.name != inputs.primary_pod and not p.deleting and p.engine is not None
                 and p.engine.role == REPLICA and (p.engine.primary or "").rstrip("/") == want]
    if not witnesses or any(e.primary_silent is None or e.primary_silent < SILENT_SECONDS or
                            e.primary_contact_age is None for e in witnesses):
        return None
    age = min(float(e.primary_contact_age or 0.0) for e in witnesses)
    return inputs.now - dt.timedelta(seconds=age)


def primary_up(pod: PodView | None) -> bool:
    """The primary is up when its pod is ready, or when its engine answers as the primary (a readiness
    probe that fails while the engine serves is no reason to promote another pod and risk two writers)."""
    if pod is None or pod.deleting:
        return False
    return pod.ready or (pod.engine is not None and pod.engine.role == PRIMARY)


def _idle(inputs: Inputs, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"phase": IDLE}
    if inputs.failover.get("last"):
        out["last"] = inputs.failover["last"]
    out.update(extra)
    return out


def converge(inputs: Inputs) -> list[Action]:
    """With the primary's engine answering: promote it if it came up as a replica, and make every other
    answering engine follow it (a returning old primary, a replica still pointed at an old primary)."""
    primary = inputs.pods.get(inputs.primary_pod)
    if primary is None or primary.engine is None or primary.deleting:
        return []
    if primary.engine.role != PRIMARY:
        return [Promote(primary.name)]
    want = inputs.peer_urls[inputs.primary_pod].rstrip("/")
    actions: list[Action] = []
    for pod in sorted(inputs.pods.values(), key=lambda p: ordinal(p.name)):
        if pod.name == inputs.primary_pod or pod.engine is None or pod.deleting:
            continue
        if pod.engine.role == PRIMARY or (pod.engine.primary or "").rstrip("/") != want:
            actions.append(Follow(pod.name, inputs.primary_pod))
    return actions


def decide(inputs: Inputs) -> Decision:
    phase = inputs.failover.get("phase") or IDLE
    if phase == PROMOTING:
        return _promoting(inputs)
    if phase == DEMOTING:
        return _demoting(inputs)
    if phase == CATCHING_UP:
        return _catching_up(inputs)
    return _idle_step(inputs)


def _idle_step(inputs: Inputs) -> Decision:
    primary = inputs.pods.get(inputs.primary_pod)
    decision = Decision(primary_pod=inputs.primary_pod, failover=_idle(inputs))
    lost_at = unreachable(inputs) if primary_up(primary) else None
    if primary_up(primary) and lost_at is None:
        if primary is not None and primary.engine is None and len(inputs.pods) > 1:
            # Ready, but its engine did not answer us: look again soon, to see whether the replicas agree
            # (not every second: a NetworkPolicy that keeps the operator out would make that forever).
            decision.requeue_after = UNREACHABLE_RECHECK_SECONDS
        decision.actions = converge(inputs)
        for action in decision.actions:
            if isinstance(action, Follow):
                decision.events.append(("Normal", "Repointed", f"{action.pod} now follows the primary "
                                                               f"{action.primary}"))
            else:
                decision.events.append(("Warning", "PrimaryPromoted", f"{action.pod} is the primary but its "
                                        "engine started as a replica; promoted it"))
        if inputs.switchover_to is not None:
            return _start_switchover(inputs, decision)
        return decision

    # The primary is down: failover once that has lasted spec.failover.delaySeconds. An unreachable
    # primary (pod still Ready) is down since the replicas last heard from it, and is replaced no sooner than
    # its self-fence is up (fencing.py: it stops writing fence_seconds after the last replica poll).
    since = _since(inputs) if lost_at is None else min(lost_at, _since(inputs))
    delay = inputs.delay_seconds if lost_at is None else max(inputs.delay_seconds,
                                                              inputs.fence_seconds + UNREACHABLE_MARGIN_SECONDS)
    decision.failover["primaryNotReadySince"] = timestamp(since)
    if lost_at is not None:
        decision.failover["message"] = (f"the primary {inputs.primary_pod} answers neither the operator nor any "
                                        "replica (its pod is still Ready: its node may be down or cut off)")
    if inputs.switchover_to is not None:
        decision.switchover_finished = (f"refused: the primary {inputs.primary_pod} is not ready; a failover "
                                        "(not a switchover) moves the primary when it stays unready")
    if not inputs.enabled or inputs.paused or inputs.replicas < 2:
        return decision
    waited = (inputs.now - since).total_seconds()
    if waited < delay:
        decision.requeue_after = max(0.5, delay - waited)
        return decision
    target = best_replica(inputs.pods, inputs.primary_pod, inputs.replicas)
    if target is None:
        decision.failover["message"] = (f"the primary {inputs.primary_pod} has not been ready for "
                                        f"{int(waited)}s and no replica's engine answers; waiting")
        decision.requeue_after = 5.0
        return decision
    assert target.engine is not None
    decision.failover = {
        "phase": PROMOTING, "reason": FAILOVER, "from": inputs.primary_pod, "to": target.name,
        "startedAt": timestamp(inputs.now), "targetLsn": target.engine.lsn,
        "primaryNotReadySince": timestamp(since), **({"last": inputs.failover["last"]}
                                                  if inputs.failover.get("last") else {}),
    }
    down = "not ready" if lost_at is None else "unreachable (operator and replicas)"
    decision.events.append(("Warning", "FailoverStarted",
                            f"primary {inputs.primary_pod} {down} for {int(waited)}s: promoting "
                            f"{target.name} (LSN {target.engine.lsn}); {_positions(inputs.pods)}"))
    decision.again = True
    return decision


def _start_switchover(inputs: Inputs, decision: Decision) -> Decision:
    wanted = inputs.switchover_to or ""
    if wanted == inputs.primary_pod:
        decision.switchover_finished = f"done: {wanted} is already the primary"
        return decision
    if wanted:
        target = inputs.pods.get(wanted)
        if target is None or target.engine is None or target.deleting or not target.ready:
            decision.switchover_finished = (f"refused: {wanted} is not a ready pod of this OmenDB whose engine "
                                            f"answers ({_positions(inputs.pods)})")
            return decision
        if ordinal(wanted) >= inputs.replicas:
            decision.switchover_finished = f"refused: {wanted} is beyond spec.replicas and is going away"
            return decision
    else:
        target = best_replica(inputs.pods, inputs.primary_pod, inputs.replicas, require_ready=True)
        if target is None:
            decision.switchover_finished = "refused: no ready replica to switch over to"
            decision.requeue_after = 5.0  # a scale-down waiting for a pod that stays looks again
            return decision
    assert target.engine is not None
    if decision.actions:  # converge first: the target must follow this primary before it can catch up
        decision.requeue_after = POLL_SECONDS
        return decision
    decision.failover = {**_idle(inputs), "phase": DEMOTING, "reason": SWITCHOVER, "from": inputs.primary_pod,
                         "to": target.name, "startedAt": timestamp(inputs.now)}
    decision.events.append(("Normal", "SwitchoverStarted",
                            f"moving the primary from {inputs.primary_pod} to {target.name}: "
                            f"{_positions(inputs.pods)}"))
    decision.again = True
    return decision


def _elapsed(inputs: Inputs) -> float:
    started = parse_time(inputs.failover.get("startedAt")) or inputs.now
    return (inputs.now - started).total_seconds()


def _finish(inputs: Inputs, new_primary: str, engine: Engine) -> Decision:
    fo = inputs.failover
    reason = fo.get("reason", FAILOVER)
    last = {"reason": reason, "from": fo.get("from", ""), "to": new_primary, "at": timestamp(inputs.now),
            "lsn": engine.lsn, "term": engine.term, "seconds": round(_elapsed(inputs), 1)}
    decision = Decision(primary_pod=new_primary, failover={"phase": IDLE, "last": last}, again=True)
    decision.events.append(("Normal", "FailoverCompleted" if reason == FAILOVER else "SwitchoverCompleted",
                            f"{new_primary} is the primary (term {engine.term}, LSN {engine.lsn}); was "
                            f"{fo.get('from')}; {_positions(inputs.pods)}"))
    if reason == SWITCHOVER:
        decision.switchover_finished = f"done: {new_primary} is the primary"
    return decision


def _abort(inputs: Inputs, why: str) -> Decision:
    """Back to Idle, keeping the primary: Idle's convergence promotes it again if it was demoted, and a
    failover starts afresh if it is still not ready."""
    fo = inputs.failover
    decision = Decision(primary_pod=inputs.primary_pod, failover=_idle(inputs), again=True)
    what = "switchover" if fo.get("reason") == SWITCHOVER else "failover"
    decision.events.append(("Warning", f"{what.capitalize()}Aborted",
                            f"{what} from {fo.get('from')} to {fo.get('to')} abandoned: {why}"))
    if fo.get("reason") == SWITCHOVER:
        decision.switchover_finished = f"refused: {why}"
    return decision


def _promoting(inputs: Inputs) -> Decision:
    fo = inputs.failover
    target = inputs.pods.get(str(fo.get("to")))
    if target is not None and target.engine is not None and target.engine.role == PRIMARY:
        return _finish(inputs, target.name, target.engine)
    if target is None or target.deleting or target.engine is None:
        if _elapsed(inputs) > SWITCHOVER_TIMEOUT_SECONDS or target is None or target.deleting:
            return _abort(inputs, f"{fo.get('to')} is gone or its engine stopped answering "
                                  f"({target.engine_error if target else 'no pod'})")
        return Decision(primary_pod=inputs.primary_pod, failover=dict(fo), requeue_after=POLL_SECONDS)
    return Decision(primary_pod=inputs.primary_pod, failover=dict(fo), actions=[Promote(target.name)],
                    again=True)


def _demoting(inputs: Inputs) -> Decision:
    fo = inputs.failover
    old = inputs.pods.get(str(fo.get("from")))
    target = inputs.pods.get(str(fo.get("to")))
    if target is None or target.engine is None or target.deleting:
        return _abort(inputs, f"{fo.get('to')} stopped answering before the primary was demoted")
    if old is None or old.engine is None or old.deleting:
        return _abort(inputs, f"the primary {fo.get('from')} stopped answering; failover handles it if it "
                              "stays unready")
    if old.engine.role == PRIMARY:
        if _elapsed(inputs) > SWITCHOVER_TIMEOUT_SECONDS:
            return _abort(inputs, f"{fo.get('from')} could not be demoted")
        return Decision(primary_pod=inputs.primary_pod, failover=dict(fo),
                        actions=[Follow(old.name, target.name)], again=True)
    # Demoted: its LSN no longer moves (it refuses client writes); the target must reach it.
    new = {**fo, "phase": CATCHING_UP, "targetLsn": old.engine.lsn}
    decision = Decision(primary_pod=inputs.primary_pod, failover=new, again=True)
    decision.events.append(("Normal", "PrimaryDemoted", f"{old.name} refuses writes at LSN {old.engine.lsn}; "
                                                        f"waiting for {target.name} to hold it"))
    return decision


def _catching_up(inputs: Inputs) -> Decision:
    fo = inputs.failover
    target = inputs.pods.get(str(fo.get("to")))
    want = int(fo.get("targetLsn") or 0)
    if target is not None and target.engine is not None and target.engine.lsn >= want:
        return Decision(primary_pod=inputs.primary_pod, failover={**fo, "phase": PROMOTING}, again=True)
    if _elapsed(inputs) > SWITCHOVER_TIMEOUT_SECONDS or target is None or target.deleting:
        have = target.engine.lsn if target is not None and target.engine is not None else "unknown"
        return _abort(inputs, f"{fo.get('to')} did not reach LSN {want} (it holds {have}) within "
                              f"{SWITCHOVER_TIMEOUT_SECONDS:g}s; {fo.get('from')} stays the primary")
    return Decision(primary_pod=inputs.primary_pod, failover=dict(fo), requeue_after=POLL_SECONDS)


def scale_hold(replicas: int, primary_pod: str, live_replicas: int, phase: str) -> int | None:
    """The StatefulSet size to hold while a scale-down would remove the primary: the live count, until a
    switchover has moved the primary below the new size. None: no hold."""
    if ordinal(primary_pod) >= replicas or (phase != IDLE and live_replicas > replicas):
        return max(live_replicas, ordinal(primary_pod) + 1)
    return None


def pod_statuses(pods: dict[str, PodView], primary_pod: str) -> list[dict[str, Any]]:
    """status.pods: each pod's role, readiness, LSN and lag (whole seconds, so a quiet database's status
    stays byte-identical between reconciles)."""
    out = []
    for pod in sorted(pods.values(), key=lambda p: ordinal(p.name)):
        entry: dict[str, Any] = {"name": pod.name, "role": PRIMARY if pod.name == primary_pod else REPLICA,
                                 "ready": pod.ready}
        if pod.engine is not None:
            entry.update(engineRole=pod.engine.role, lsn=pod.engine.lsn, term=pod.engine.term)
            if pod.engine.role == REPLICA:
                if pod.engine.lag_lsn is not None:
                    entry["lagLsn"] = pod.engine.lag_lsn
                if pod.engine.lag_seconds is not None:
                    entry["lagSeconds"] = int(pod.engine.lag_seconds)
        elif pod.engine_error:
            entry["error"] = pod.engine_error[:200]
        out.append(entry)
    return out


PODS_REFRESH_SECONDS = 60.0
_FIGURES = ("lsn", "term", "lagLsn", "lagSeconds")


def refresh_pods(previous: list[dict[str, Any]] | None, previous_at: str | None, current: list[dict[str, Any]],
                 now: dt.datetime) -> tuple[list[dict[str, Any]], str]:
    """status.pods and status.podsObservedAt: a change of role, readiness or reachability is written at
    once; a change of figures alone (LSN, lag) at most every PODS_REFRESH_SECONDS, so a database under
    write load does not rewrite its status on every reconcile (the metrics carry the live figures)."""
    def shape(rows: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
        return [{k: v for k, v in r.items() if k not in _FIGURES} for r in rows or []]

    at = parse_time(previous_at)
    if previous is not None and at is not None and shape(previous) == shape(current) and \
            (now - at).total_seconds() < PODS_REFRESH_SECONDS:
        return previous, str(previous_at)
    if previous == current and previous_at:
        return previous, str(previous_at)
    return current, timestamp(now)


def role_labels(pods: dict[str, PodView], primary_pod: str) -> dict[str, str]:
    """Pods whose role label must change: pod -> role. Exactly one pod (the status primary) is primary."""
    out = {}
    for pod in pods.values():
        want = PRIMARY if pod.name == primary_pod else REPLICA
        if pod.role_label != want and not pod.deleting:
            out[pod.name] = want
    return out
