"""What one reconcile will do: the planners' output, carried out by controller/act.py in a fixed order.

Planners never write; they return parts of a :class:`Plan`. The act module runs it in this order:

1. ``status_first``: status fragments that must be on record before anything acts on them (a failover's
   decision: an operator restarted mid-failover resumes the step instead of repeating or forgetting it);
2. ``engine_actions``: promote and follow, on the engines;
3. ``creates``: objects made once and never updated (Jobs, an upgrade's OmenDBBackup, bootstrap claims);
4. ``applies``: the children, by server-side apply (written only when they differ from the live copy);
5. ``patches`` then ``deletes``: claim growth, role labels, a consumed annotation; a pod replaced by a
   rollout (uid precondition), a StatefulSet recreated with its pods kept, children no longer wanted;
6. ``statuses`` of OmenDBBackups and OmenDBRestores;
7. ``events``; then the OmenDB's own ``status`` and its phase event, last.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omendb_operator.plans import topology as T

Event = tuple[str, str, str]  # (type, reason, message)


@dataclass(frozen=True)
class StatusWrite:
    """A merge patch of one object's status subresource."""

    api_version: str
    kind: str
    name: str
    namespace: str
    patch: dict[str, Any]


@dataclass(frozen=True)
class Patch:
    """A JSON merge patch of one object (labels, annotations, a claim's requested size)."""

    api_version: str
    kind: str
    name: str
    namespace: str
    body: dict[str, Any]


@dataclass(frozen=True)
class Delete:
    """``uid``: delete only that incarnation (a pod already replaced is left alone); ``orphan``: keep the
    object's dependents (a StatefulSet recreated without its pods); ``grace_seconds``: 0 removes a pod at
    once, without its kubelet's confirmation (plans/lost_pods.py)."""

    api_version: str
    kind: str
    name: str
    namespace: str
    uid: str | None = None
    orphan: bool = False
    grace_seconds: int | None = None


@dataclass(frozen=True)
class Apply:
    """A desired child and the live copy the observation saw (None: it does not exist)."""

    manifest: dict[str, Any]
    live: dict[str, Any] | None


@dataclass(frozen=True)
class EventOn:
    involved: dict[str, Any]  # apiVersion, kind, metadata.name/namespace/uid
    type: str
    reason: str
    message: str


@dataclass
class Plan:
    status_first: list[StatusWrite] = field(default_factory=list)
    engine_actions: list[T.Action] = field(default_factory=list)
    creates: list[dict[str, Any]] = field(default_factory=list)
    applies: list[Apply] = field(default_factory=list)
    patches: list[Patch] = field(default_factory=list)
    deletes: list[Delete] = field(default_factory=list)
    statuses: list[StatusWrite] = field(default_factory=list)  # OmenDBBackups' and OmenDBRestores'
    events: list[EventOn] = field(default_factory=list)
    # The OmenDB's own status and the event of its phase change: written last, and only when every apply
    # succeeded (otherwise the reconcile plans the status again, with the errors).
    status: StatusWrite | None = None
    status_events: list[EventOn] = field(default_factory=list)
    # Events about what the applies changed: "Reconciled" (the changes) on ``report_changes_on``, then
    # these, only when something changed.
    report_changes_on: dict[str, Any] | None = None
    if_changed: list[Event] = field(default_factory=list)
    requeue: float | None = None  # reconcile again after this many seconds (something is in progress)
    # The failover moved on (its decision is on record, engines acted): observe again at once, before
    # planning the rest (the children are built from where the primary ends up).
    again: bool = False
    result: str = "unchanged"  # for the reconciles metric: changed, unchanged, invalid, gone
    # The pod the operator's heartbeat goes to from now on (controller/heartbeat.py): the primary of a
    # replicated OmenDB with failover on; None: no heartbeat.
    heartbeat: str | None = None

    def event(self, involved: dict[str, Any], type_: str, reason: str, message: str) -> None:
        self.events.append(EventOn(involved, type_, reason, message))

    def events_on(self, involved: dict[str, Any], events: list[Event]) -> None:
        for type_, reason, message in events:
            self.event(involved, type_, reason, message)

    def requeue_within(self, seconds: float | None) -> None:
        if seconds is not None:
            self.requeue = seconds if self.requeue is None else min(self.requeue, seconds)


def merge_patch(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """A JSON merge patch turning ``old`` into ``new`` at the top level: keys gone from ``new`` are nulled."""
    return {**{k: None for k in old if k not in new}, **new}
