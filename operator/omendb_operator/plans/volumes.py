"""Data and WAL volume expansion: the pure plan. Claims of StatefulSet pods are never resized by the
StatefulSet (its claim templates are immutable), so the operator patches each claim's request, and
recreates the StatefulSet without its pods (delete with ``propagationPolicy: Orphan``, then apply) so
pods made later get the new size too. Shrinking is refused; a StorageClass without
``allowVolumeExpansion: true`` gets a clear message instead of a patch the API server would refuse.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kubernetes.utils.quantity import parse_quantity

VOLUMES = ("data", "wal")

RESIZED = "Resized"
EXPANDING = "Expanding"
WAITING = "Waiting"
BLOCKED = "Blocked"


@dataclass(frozen=True)
class ClaimView:
    name: str
    volume: str  # data or wal
    requested: str
    capacity: str | None
    storage_class: str | None
    bound: bool


@dataclass
class VolumePlan:
    patches: list[tuple[str, str]] = field(default_factory=list)  # (claim, new request)
    recreate_statefulset: bool = False
    status: dict[str, Any] | None = None  # status.storage
    condition: tuple[str, str, str] | None = None  # StorageResized (status, reason, message)
    warnings: list[str] = field(default_factory=list)
    waiting: str | None = None


def claim_view(pvc: dict[str, Any]) -> ClaimView | None:
    name = str(pvc["metadata"]["name"])
    volume = name.split("-", 1)[0]
    if volume not in VOLUMES:
        return None
    spec, st = pvc.get("spec") or {}, pvc.get("status") or {}
    return ClaimView(name=name, volume=volume,
                     requested=str(((spec.get("resources") or {}).get("requests") or {}).get("storage", "0")),
                     capacity=(st.get("capacity") or {}).get("storage"),
                     storage_class=spec.get("storageClassName"), bound=st.get("phase") == "Bound")


def _q(value: str | None) -> Any:
    return parse_quantity(value) if value else None


def template_sizes(sts: dict[str, Any] | None) -> dict[str, str]:
    out = {}
    for t in ((sts or {}).get("spec") or {}).get("volumeClaimTemplates") or []:
        out[t["metadata"]["name"]] = str(t.get("spec", {}).get("resources", {}).get("requests", {}).get("storage"))
    return out


def plan_volumes(want: dict[str, str], claims: list[ClaimView], expandable: dict[str, bool],
                 templates: dict[str, str], active_backup_jobs: tuple[str, ...] = (),
                 previous: dict[str, Any] | None = None) -> VolumePlan:
    """``want``: volume -> size from the spec; ``expandable``: StorageClass name -> allowVolumeExpansion;
    ``templates``: volume -> size in the live StatefulSet's claim templates."""
    plan = VolumePlan()
    grow: list[ClaimView] = []
    problems: list[str] = []
    blocked_volumes: set[str] = set()
    pending: list[ClaimView] = []
    for c in sorted(claims, key=lambda c: c.name):
        target = want.get(c.volume)
        if target is None:
            continue
        if _q(c.requested) > _q(target):
            blocked_volumes.add(c.volume)
            problems.append(f"claim {c.name} requests {c.requested} but spec.storage.{c.volume}.size is {target}: "
                            f"volumes cannot shrink; set spec.storage.{c.volume}.size to at least {c.requested}")
        elif _q(c.requested) < _q(target):
            if not c.storage_class or not expandable.get(c.storage_class, False):
                blocked_volumes.add(c.volume)
                problems.append(f"claim {c.name} cannot grow from {c.requested} to {target}: StorageClass "
                                f"{c.storage_class or '(none)'} does not set allowVolumeExpansion: true; "
                                "use a StorageClass that allows expansion or move the data to new volumes")
            elif not c.bound:
                pending.append(c)  # only bound claims can be resized; it is made at the new size anyway
            else:
                grow.append(c)
        elif c.capacity and _q(c.capacity) < _q(c.requested):
            pending.append(c)
    drift = [v for v in VOLUMES if v in templates and v in want and _q(templates[v]) != _q(want[v])
             and v not in blocked_volumes and _q(templates[v]) < _q(want[v])]
    claims_status = [{"name": c.name, "requested": c.requested, **({"capacity": c.capacity} if c.capacity else {})}
                     for c in sorted(claims, key=lambda c: c.name) if c.volume in want]
    if (grow or drift) and active_backup_jobs:
        plan.waiting = (f"waiting for backup Job {', '.join(active_backup_jobs)} to finish before expanding "
                        "volumes")
        plan.status = {"phase": WAITING, "message": plan.waiting, "claims": claims_status}
        plan.condition = ("False", "WaitingForBackupJob", plan.waiting)
        return plan
    plan.patches = [(c.name, want[c.volume]) for c in grow]
    plan.recreate_statefulset = bool(drift)
    if problems:
        message = "; ".join(problems)
        plan.warnings.append(message)
        plan.status = {"phase": BLOCKED, "message": message, "claims": claims_status}
        plan.condition = ("False", "ShrinkRefused" if "cannot shrink" in message else "ExpansionNotSupported",
                          message)
    elif grow or pending or drift:
        names = ", ".join(c.name for c in [*grow, *pending]) or "the StatefulSet's claim templates"
        message = f"expanding {names} to " + ", ".join(f"{v} {want[v]}" for v in VOLUMES if v in want)
        plan.status = {"phase": EXPANDING, "message": message, "claims": claims_status}
        plan.condition = ("False", "Expanding", message)
    elif previous:
        message = "every data and WAL claim has the size the spec asks for"
        plan.status = {"phase": RESIZED, "message": message, "claims": claims_status}
        plan.condition = ("True", "Resized", message)
    return plan
