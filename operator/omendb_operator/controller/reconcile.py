"""One reconcile of one OmenDB: observe, plan, act; again at once while a failover moves on.

kopf handlers and the resync loop only enqueue keys; a worker calls :meth:`Reconciler.reconcile`. The
world is read in one pass (observe.py), the plan is a pure function of it (plans/omendb.py), and act.py
alone writes. A failover acts on the engines between observations, so the loop observes again (at most
MAX_PASSES times) until it is quiet; the last pass plans everything.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable

from omendb_operator.controller import engines as E
from omendb_operator.controller import metrics
from omendb_operator.controller.act import act
from omendb_operator.controller.heartbeat import Heartbeat
from omendb_operator.controller.kube import Kube
from omendb_operator.controller.observe import HealthCheck, Observer, StatsFetch
from omendb_operator.plans.omendb import owner_of, plan_gone, plan_omendb

MAX_PASSES = 8  # failover transitions per reconcile; a longer wait is a requeue


class Reconciler:
    def __init__(self, kube: Kube, cluster_domain: str = "cluster.local",
                 clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
                 health: HealthCheck | None = None,
                 engines: E.EnginesFactory = E.cluster_engines,
                 stats: StatsFetch = E.fetch_stats,
                 requeue: Callable[[str, str, float], None] | None = None,
                 operator_namespace: str | None = None, heartbeat: Heartbeat | None = None) -> None:
        self.kube = kube
        self.cluster_domain = cluster_domain
        self.clock = clock
        # How observe and act reach the engines (pod DNS names in the cluster; loopback in tests).
        self.observer = Observer(kube, engines, health or E.PodHealth(), stats, operator_namespace)
        self.requeue = requeue  # reconcile this OmenDB again after a delay (an operation in progress)
        self.heartbeat = heartbeat  # told after each reconcile which pod is the primary to heartbeat

    def reconcile(self, namespace: str, name: str) -> str:
        started = time.monotonic()
        try:
            result = self._reconcile(namespace, name)
            metrics.RECONCILES.labels(result=result).inc()
            return result
        except Exception as exc:
            metrics.RECONCILES.labels(result="error").inc()
            metrics.RECONCILE_ERRORS.labels(error=type(exc).__name__).inc()
            raise
        finally:
            metrics.RECONCILE_DURATION.observe(time.monotonic() - started)

    def _reconcile(self, namespace: str, name: str) -> str:
        engines_failed, changed = False, False
        requeue: float | None = None
        for attempt in range(MAX_PASSES):
            world, engines = self.observer.observe(namespace, name)
            if world.omendb is None or world.omendb["metadata"].get("deletionTimestamp"):
                self._heartbeat(namespace, name, None, None)
            if world.omendb is None:
                act(self.kube, None, plan_gone(world, self.clock()), None)
                return "gone"
            if world.omendb["metadata"].get("deletionTimestamp"):
                # Children go with the OmenDB by garbage collection; nothing to do, and no finalizer.
                return "deleting"
            plan = plan_omendb(world, self.clock(), self.cluster_domain, final=attempt == MAX_PASSES - 1,
                               engines_failed=engines_failed)
            report = act(self.kube, engines, plan, owner_of(world.omendb))
            self._heartbeat(namespace, name, engines, plan.heartbeat)
            changed = changed or bool(report.changed)
            if report.apply_errors:
                errors = plan_omendb(world, self.clock(), self.cluster_domain, final=True,
                                     apply_errors=report.apply_errors)
                act(self.kube, engines, errors, None)
            if plan.requeue is not None:
                requeue = plan.requeue if requeue is None else min(requeue, plan.requeue)
            if plan.result == "invalid":
                return "invalid"
            engines_failed = report.engine_failed
            if not (plan.again or engines_failed):
                break
        if requeue is not None and self.requeue is not None:
            self.requeue(namespace, name, requeue)
        return "changed" if changed else "unchanged"

    def _heartbeat(self, namespace: str, name: str, engines: E.Engines | None, pod: str | None) -> None:
        if self.heartbeat is not None:
            self.heartbeat.watch((namespace, name), engines, pod)
