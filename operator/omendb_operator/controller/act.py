"""Act: carry out one plan, in the fixed order plans/plan.py describes. With the kube wrapper, the only
module that writes to the Kubernetes API; with controller/engines.py, the only one that tells engines to
promote or follow.

A failed apply is reported (an ApplyFailed event and the status's Degraded condition say which child and
the API server's message) and the rest of the plan still runs; a failed engine action stops the remaining
engine actions (they assumed it succeeded) and the reconcile looks again soon.
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass, field
from typing import Any

import httpx
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic.exceptions import DynamicApiError, NotFoundError, ResourceNotFoundError

from omendb_operator.controller.engines import Engines
from omendb_operator.controller.kube import Kube
from omendb_operator.plans import topology as T
from omendb_operator.plans.changes import Outcome, comparable, decide, keep_immutable, with_hash
from omendb_operator.plans.plan import Plan

log = logging.getLogger(__name__)

API_ERRORS = (ApiException, DynamicApiError, ResourceNotFoundError)


def api_message(exc: Exception) -> str:
    """The API server's own message (it says which field is wrong), else the exception text."""
    body = getattr(exc, "body", None)
    if isinstance(body, bytes):
        body = body.decode(errors="replace")
    if isinstance(body, str):
        try:
            return str(json.loads(body).get("message", body))
        except (ValueError, AttributeError):
            return body
    return str(exc)


@dataclass
class Report:
    changed: list[str] = field(default_factory=list)  # "Kind name created|updated|deleted"
    apply_errors: list[str] = field(default_factory=list)
    engine_failed: bool = False


def _execute(engines: Engines, action: T.Action) -> str:
    if isinstance(action, T.Promote):
        out = engines.promote(action.pod)
        return f"promoted {action.pod}: term {out.get('term')}, LSN {out.get('lsn')}"
    out = engines.follow(action.pod, action.primary)
    return f"{action.pod} follows {action.primary} (its LSN {out.get('lsn')})"


def _apply(kube: Kube, manifest: dict[str, Any], live: dict[str, Any] | None) -> Outcome:
    """Apply ``manifest`` (with its hash) unless that would change nothing; ``live`` is its observed copy.
    When only the API server's normalisation could tell (``1000m`` is ``1``), a dry run decides."""
    desired = keep_immutable(with_hash(manifest), live)
    outcome = decide(desired, live)
    if outcome is Outcome.UNCHANGED:
        return outcome
    if live is not None and comparable(kube.apply(desired, dry_run=True)) == comparable(live):
        return Outcome.UNCHANGED
    kube.apply(desired)
    return Outcome.CREATED if live is None else Outcome.UPDATED


def act(kube: Kube, engines: Engines | None, plan: Plan, owner: dict[str, Any] | None) -> Report:
    report = Report()
    for write in plan.status_first:
        kube.patch_status(write.api_version, write.kind, write.name, write.namespace, write.patch)
    for action in plan.engine_actions:
        assert engines is not None
        try:
            log.info("%s", _execute(engines, action))
        except (httpx.HTTPError, RuntimeError, ValueError) as exc:
            report.engine_failed = True
            if owner is not None:
                kube.event(owner, "Warning", "ReplicationActionFailed", f"{action}: {exc}"[:1000])
            break
    for manifest in plan.creates:
        meta = manifest["metadata"]
        if kube.get(manifest["apiVersion"], manifest["kind"], meta["name"], meta["namespace"]) is None:
            kube.apply(manifest)
    for item in plan.applies:
        kind, child = item.manifest["kind"], item.manifest["metadata"]["name"]
        try:
            outcome = _apply(kube, item.manifest, item.live)
        except API_ERRORS as exc:
            message = f"{kind} {child}: {api_message(exc)}"
            report.apply_errors.append(message)
            if owner is not None:
                kube.event(owner, "Warning", "ApplyFailed", message)
            continue
        if outcome is not Outcome.UNCHANGED:
            report.changed.append(f"{kind} {child} {outcome.value}")
    for patch in plan.patches:
        with contextlib.suppress(NotFoundError):  # gone since it was observed: nothing left to label or grow
            kube.patch(patch.api_version, patch.kind, patch.name, patch.namespace, patch.body)
    for delete in plan.deletes:
        if kube.delete(delete.api_version, delete.kind, delete.name, delete.namespace, uid=delete.uid,
                       orphan=delete.orphan, grace_seconds=delete.grace_seconds):
            report.changed.append(f"{delete.kind} {delete.name} deleted")
    for write in plan.statuses:
        kube.patch_status(write.api_version, write.kind, write.name, write.namespace, write.patch)
    if report.changed and plan.report_changes_on is not None:
        kube.event(plan.report_changes_on, "Normal", "Reconciled", "; ".join(report.changed)[:1000])
        for type_, reason, message in plan.if_changed:
            kube.event(plan.report_changes_on, type_, reason, message)
    for event in plan.events:
        kube.event(event.involved, event.type, event.reason, event.message)
    if report.apply_errors:
        return report  # the status is planned again with the errors (controller/reconcile.py)
    if plan.status is not None:
        kube.patch_status(plan.status.api_version, plan.status.kind, plan.status.name, plan.status.namespace,
                          plan.status.patch)
    for event in plan.status_events:
        kube.event(event.involved, event.type, event.reason, event.message)
    return report
