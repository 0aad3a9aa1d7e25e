"""The I/O shell of failover, switchover and role labels (the decisions are in topology.py).

Each reconcile: read the OmenDB's pods and ask each engine about itself (``GET /v1/stats``), decide,
write the decision's ``status.failover``/``status.primaryPod`` *first*, then act (``POST /admin/promote``,
``POST /admin/follow``), and loop while the state moves on. Role labels (``role`` and ``omendb.io/role``)
follow ``status.primaryPod``; the Services select on them.

:func:`switchover_step` is the entry point for other operations (an upgrade moves the primary away before
restarting its pod): call it until it reports ``done``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from omendb_operator import labels as L
from omendb_operator.controller.kube import Kube
from omendb_operator.plans import topology as T
from omendb_operator.spec import OmenDBSpec
from omendb_operator.specs.secrets import PASSWORD_KEY, USERNAME_KEY, decode_secret_data
from omendb_operator.specs.services import ROLE_LABEL  # `role=primary|replica`; omendb.io/role says the same

log = logging.getLogger(__name__)

SWITCHOVER_ANNOTATION = f"{L.GROUP}/switchover-to"
STATS_TIMEOUT = 3.0
ACTION_TIMEOUT = 60.0  # promote/follow stop a follower first (one long poll at most)
MAX_STEPS = 8  # transitions per reconcile; a longer wait is a requeue


def pod_selector(name: str) -> str:
    return f"app.kubernetes.io/instance={name},{L.COMPONENT_LABEL}=database"


def peer_url(name: str, namespace: str, tls: bool, pod: str) -> str:
    """How the pods reach one another's API (the headless Service's per-pod DNS names)."""
    return f"{'https' if tls else 'http'}://{pod}.{L.Names(name).headless_service}.{namespace}.svc:{L.API_PORT}"


def peer_url_template(name: str, namespace: str, tls: bool) -> str:
    return peer_url(name, namespace, tls, "{pod}")


class Engines:
    """HTTP access to the engines of one OmenDB, as its admin user. ``url_for`` is where the operator
    reaches a pod (its DNS name in the cluster; a loopback address in tests); ``peer_url_for`` is what
    pods are told to follow."""

    def __init__(self, url_for: Callable[[str], str], peer_url_for: Callable[[str], str],
                 auth: tuple[str, str] | None, verify: Any = True) -> None:
        self.url_for, self.peer_url_for = url_for, peer_url_for
        self.auth, self.verify = auth, verify

    def _client(self, pod: str, timeout: float) -> httpx.Client:
        return httpx.Client(base_url=self.url_for(pod), auth=self.auth, verify=self.verify, timeout=timeout)

    def stats(self, pod: str) -> T.Engine:
        with self._client(pod, STATS_TIMEOUT) as client:
            r = client.get("/v1/stats")
            r.raise_for_status()
            body = r.json()
        rep = body.get("replication") or {}
        return T.Engine(role=str(body.get("role", T.PRIMARY)), lsn=int(body.get("lsn") or 0),
                        term=int(body.get("term") or 0), primary=body.get("primary"),
                        lag_seconds=rep.get("lag_seconds"), lag_lsn=rep.get("lag_lsn"))

    def _post(self, pod: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        with self._client(pod, ACTION_TIMEOUT) as client:
            r = client.post(path, json=body)
            if r.status_code >= 400:
                raise RuntimeError(f"POST {path} on {pod}: {r.status_code} {r.text[:300]}")
            result: dict[str, Any] = r.json()
            return result

    def promote(self, pod: str) -> dict[str, Any]:
        return self._post(pod, "/admin/promote")

    def follow(self, pod: str, primary: str) -> dict[str, Any]:
        return self._post(pod, "/admin/follow", {"primary_url": self.peer_url_for(primary)})


def cluster_engines(kube: Kube, name: str, namespace: str, spec: OmenDBSpec) -> Engines:
    """Engines reached in the cluster: pod DNS names, NAME-users' admin, the CA the pods are told to trust."""
    names = L.Names(name)
    auth = None
    if spec.auth.enabled:
        users = decode_secret_data(kube.get("v1", "Secret", names.users, namespace))
        if users.get(USERNAME_KEY):
            auth = (users[USERNAME_KEY], users.get(PASSWORD_KEY, ""))
    verify: Any = True
    if spec.tls.enabled:
        secret = names.ca if spec.tls.generate else str(spec.tls.secret_name)
        ca = decode_secret_data(kube.get("v1", "Secret", secret, namespace)).get("ca.crt")
        if ca:
            verify = ssl.create_default_context(cadata=ca)

    def url(pod: str) -> str:
        return peer_url(name, namespace, spec.tls.enabled, pod)

    return Engines(url, url, auth, verify)


def _ready(pod: dict[str, Any]) -> tuple[bool, dt.datetime | None]:
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            since = T.parse_stamp(cond.get("last_transition_time") or cond.get("lastTransitionTime"))
            return cond.get("status") == "True", (None if cond.get("status") == "True" else since)
    return False, None


def _running(pod: dict[str, Any]) -> bool:
    """Worth asking the engine: the pod has an IP and a running container."""
    st = pod.get("status") or {}
    statuses = st.get("container_statuses") or st.get("containerStatuses") or []
    return bool(st.get("pod_ip") or st.get("podIP")) and any((c.get("state") or {}).get("running")
                                                              for c in statuses)


def observe(kube: Kube, name: str, namespace: str, engines: Engines) -> dict[str, T.PodView]:
    """Every pod of the OmenDB with its readiness and its engine's answer (asked only of pods with an IP
    and a running container: a pod that is starting or gone would only cost a connect timeout)."""
    out = {}
    for pod in kube.list("v1", "Pod", namespace, pod_selector(name)):
        meta = pod["metadata"]
        pod_name = str(meta["name"])
        ready, since = _ready(pod)
        deleting = bool(meta.get("deletion_timestamp") or meta.get("deletionTimestamp"))
        engine, error = None, ""
        if not deleting and _running(pod):
            try:
                engine = engines.stats(pod_name)
            except (httpx.HTTPError, ValueError, KeyError) as exc:
                error = f"{type(exc).__name__}: {exc}"
        out[pod_name] = T.PodView(name=pod_name, ready=ready, deleting=deleting, not_ready_since=since,
                                  role_label=(meta.get("labels") or {}).get(ROLE_LABEL), engine=engine,
                                  engine_error=error)
    return out


@dataclass
class Result:
    primary_pod: str
    status: dict[str, Any]  # primaryPod, pods, failover: for build_status
    requeue_after: float | None = None
    replicas_hold: int | None = None  # hold the StatefulSet at this size (a scale-down waits on a switchover)
    switchover_finished: str | None = None
    events: list[tuple[str, str, str]] = field(default_factory=list)


def _execute(engines: Engines, action: T.Action) -> str:
    if isinstance(action, T.Promote):
        out = engines.promote(action.pod)
        return f"promoted {action.pod}: term {out.get('term')}, LSN {out.get('lsn')}"
    out = engines.follow(action.pod, action.primary)
    return f"{action.pod} follows {action.primary} (its LSN {out.get('lsn')})"


def run(kube: Kube, owner: dict[str, Any], spec: OmenDBSpec, status: dict[str, Any], engines: Engines,
        now: Callable[[], dt.datetime], *, switchover_to: str | None = None, paused: bool = False,
        live_replicas: int = 0) -> Result:
    """Observe, decide, persist, act; until the state stops moving (or MAX_STEPS)."""
    meta = owner["metadata"]
    name, namespace = meta["name"], meta["namespace"]
    primary = str(status.get("primaryPod") or L.Names(name).pod(0))
    failover = dict(status.get("failover") or {"phase": T.IDLE})
    pods: dict[str, T.PodView] = {}
    decision: T.Decision | None = None
    events: list[tuple[str, str, str]] = []
    finished: str | None = None
    for _ in range(MAX_STEPS):
        pods = observe(kube, name, namespace, engines)
        inputs = T.Inputs(now=now(), primary_pod=primary, failover=failover, pods=pods,
                          peer_urls={p: engines.peer_url_for(p) for p in {*pods, primary}},
                          replicas=spec.replicas, enabled=spec.failover.enabled,
                          delay_seconds=spec.failover.delay_seconds, switchover_to=switchover_to,
                          paused=paused)
        if switchover_to is None and T.ordinal(primary) >= spec.replicas and failover.get("phase") == T.IDLE:
            # A scale-down would remove the primary: switch over to a pod that stays first.
            inputs = dataclasses.replace(inputs, switchover_to="")
        decision = T.decide(inputs)
        if decision.failover != failover or decision.primary_pod != primary:
            # Written before acting: a restart from here resumes, rather than repeats or forgets, the step.
            kube.patch_status(L.API_VERSION, L.KIND, name, namespace,
                              {"primaryPod": decision.primary_pod, "failover": _nulls(failover, decision.failover)})
        for event in decision.events:
            kube.event(owner, *event)
            events.append(event)
        primary, failover = decision.primary_pod, decision.failover
        if decision.switchover_finished:
            finished = decision.switchover_finished
            switchover_to = None
        failed = False
        for action in decision.actions:
            try:
                message = _execute(engines, action)
                log.info("%s/%s: %s", namespace, name, message)
            except (httpx.HTTPError, RuntimeError, ValueError) as exc:
                failed = True
                kube.event(owner, "Warning", "ReplicationActionFailed", f"{action}: {exc}"[:1000])
        if failed:
            decision.requeue_after = min(decision.requeue_after or 2.0, 2.0)
            break
        if not (decision.again or decision.actions):
            break
    assert decision is not None
    _label(kube, namespace, pods, primary)
    hold = T.scale_hold(spec.replicas, primary, live_replicas, str(failover.get("phase")))
    rows, observed_at = T.refresh_pods(status.get("pods"), status.get("podsObservedAt"),
                                       T.pod_statuses(pods, primary), now())
    fragment = {"primaryPod": primary, "pods": rows, "podsObservedAt": observed_at, "failover": failover}
    return Result(primary_pod=primary, status=fragment, requeue_after=decision.requeue_after,
                  replicas_hold=hold, switchover_finished=finished, events=events)


def _nulls(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """A merge patch value for status.failover: keys gone from ``new`` are removed."""
    return {**{k: None for k in old if k not in new}, **new}


def _label(kube: Kube, namespace: str, pods: dict[str, T.PodView], primary: str) -> None:
    for pod, role in T.role_labels(pods, primary).items():
        kube.patch("v1", "Pod", pod, namespace, {"metadata": {"labels": {ROLE_LABEL: role, L.ROLE_LABEL: role}}})


@dataclass(frozen=True)
class SwitchoverProgress:
    done: bool
    primary_pod: str
    phase: str
    message: str = ""
    status: dict[str, Any] = field(default_factory=dict)  # primaryPod, pods, failover: for build_status


def switchover_step(kube: Kube, owner: dict[str, Any], spec: OmenDBSpec, status: dict[str, Any],
                    target_pod: str | None, *, engines: Engines | None = None,
                    now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)) -> SwitchoverProgress:
    """One resumable step moving the primary away from the current primary pod, to ``target_pod`` or (None)
    the most advanced ready replica. Call again until ``done``; state lives in status.failover.

    Pass an explicit ``target_pod`` to be idempotent across restarts: with None, a call after the
    switchover finished would start another one."""
    meta = owner["metadata"]
    engines = engines or cluster_engines(kube, meta["name"], meta["namespace"], spec)
    fo = status.get("failover") or {}
    in_progress = fo.get("reason") == T.SWITCHOVER and fo.get("phase", T.IDLE) != T.IDLE
    wanted = None if in_progress else (target_pod or "")
    result = run(kube, owner, spec, status, engines, now, switchover_to=wanted)
    phase = str(result.status["failover"].get("phase"))
    finished = result.switchover_finished or ""
    if finished.startswith("refused"):
        return SwitchoverProgress(done=False, primary_pod=result.primary_pod, phase=phase, message=finished,
                                  status=result.status)
    target = target_pod or str(result.status["failover"].get("to") or
                               (result.status["failover"].get("last") or {}).get("to") or "")
    done = phase == T.IDLE and (result.primary_pod == target if target else bool(finished))
    return SwitchoverProgress(done=done, primary_pod=result.primary_pod, phase=phase,
                              message=finished or str(result.status["failover"].get("message", "")),
                              status=result.status)
