"""kopf handlers: thin. Each one only enqueues the OmenDB it is about; a worker reconciles it.

No handler here needs a finalizer (no on.delete, no timers or daemons, which would add one): children are
garbage-collected through owner references, so deleting an OmenDB or its namespace never waits for the
operator, even while it is down.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import kopf

from omendb_operator import labels as L
from omendb_operator.controller.workqueue import WorkQueue

log = logging.getLogger(__name__)

_queue: WorkQueue | None = None


def attach(queue: WorkQueue) -> None:
    global _queue
    _queue = queue


def _enqueue(namespace: str | None, name: str | None) -> None:
    if _queue is None or not namespace or not name:
        return
    _queue.add((namespace, name))


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    # kopf keeps its own bookkeeping in annotations (never in status or spec): the CRD's status schema
    # stays exact, and the operator never writes spec.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=L.GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=L.GROUP, key="last-handled-configuration")
    settings.persistence.finalizer = f"{L.GROUP}/unused-finalizer"  # never added: no handler needs one
    # Our reconcile records the events users need; kopf's per-handler events would be noise.
    settings.posting.enabled = False
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330


@kopf.on.resume(L.GROUP, L.VERSION, L.PLURAL)
@kopf.on.create(L.GROUP, L.VERSION, L.PLURAL)
@kopf.on.update(L.GROUP, L.VERSION, L.PLURAL)
def omendb_changed(namespace: str | None, name: str, **_: Any) -> None:
    _enqueue(namespace, name)


_MANAGED = {"app.kubernetes.io/managed-by": L.MANAGED_BY}


def _child_changed(namespace: str | None, labels: Mapping[str, str], type: str | None, **_: Any) -> None:
    # A child changed (a hand edit, a rollout's progress, deletion): reconcile its OmenDB, which puts a
    # hand-edited child back and refreshes the status.
    if type is None:  # the initial listing: the resume handler covers it
        return
    _enqueue(namespace, labels.get("app.kubernetes.io/instance"))


# Pods too: a primary turning unready starts the failover clock, a new pod needs its role label.
CHILD_RESOURCES = ("apps/v1/statefulsets", "v1/services", "v1/serviceaccounts", "v1/configmaps", "batch/v1/cronjobs",
                   "policy/v1/poddisruptionbudgets", "v1/pods", "batch/v1/jobs",
                   "networking.k8s.io/v1/networkpolicies")

for _resource in CHILD_RESOURCES:
    *_api, _plural = _resource.split("/")
    kopf.on.event("/".join(_api), _plural, labels=_MANAGED, id=f"child-{_plural}")(_child_changed)


@kopf.on.event(L.GROUP, L.VERSION, "omendbbackups", id="omendbbackups")
@kopf.on.event(L.GROUP, L.VERSION, "omendbrestores", id="omendbrestores")
def operation_changed(namespace: str | None, spec: Mapping[str, Any], **_: Any) -> None:
    # Backups and restores are carried out by their OmenDB's reconcile (operations.py): one worker decides
    # everything touching one database. The initial listing counts too: a backup naming an OmenDB that
    # does not exist is failed by that (absent) OmenDB's reconcile.
    _enqueue(namespace, (spec.get("cluster") or {}).get("name"))


# A drain starts with a cordon: the OmenDBs with a pod on that Node reconcile at once, so the one whose
# primary is there switches over while its budget holds the eviction back (specs/pdb.py, plans/failover.py).
@kopf.index("v1", "pods", labels=_MANAGED, id="omendb_pods_by_node")
def omendb_pods_by_node(namespace: str | None, labels: Mapping[str, str], spec: Mapping[str, Any],
                        **_: Any) -> dict[str, tuple[str | None, str | None]] | None:
    node = spec.get("nodeName")
    return {node: (namespace, labels.get("app.kubernetes.io/instance"))} if node else None


_unschedulable: dict[str, bool] = {}  # Node -> last seen spec.unschedulable: enqueue on changes only


@kopf.on.event("v1", "nodes", id="nodes")
def node_changed(name: str, spec: Mapping[str, Any], type: str | None, **kwargs: Any) -> None:
    by_node: kopf.Index[str, tuple[str | None, str | None]] = kwargs["omendb_pods_by_node"]
    cordoned = bool(spec.get("unschedulable")) or type == "DELETED"
    if _unschedulable.get(name, False) == cordoned:
        return
    _unschedulable[name] = cordoned
    if type == "DELETED":
        _unschedulable.pop(name, None)
    for namespace, instance in by_node.get(name, []):
        _enqueue(namespace, instance)
