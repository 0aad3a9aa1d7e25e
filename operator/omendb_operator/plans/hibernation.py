"""Hibernation: ``spec.hibernate: true`` scales the database to zero pods and suspends scheduled backups.

Nothing is deleted: the data and WAL claims stay (the StatefulSet retains them on scale-down), so do the
backup volume and every Secret; ``false`` brings the same pods back on the same volumes. The pod count
goes through ``Observed.replicas_override``, so ``spec.replicas`` keeps the user's number for the wake-up.
"""

from __future__ import annotations

from dataclasses import replace

from omendb_operator.spec import OmenDBSpec


def replicas_override(spec: OmenDBSpec) -> int | None:
    return 0 if spec.hibernate else None


def spec_for_children(spec: OmenDBSpec) -> OmenDBSpec:
    """The spec the children are built from: while hibernated the backup CronJobs are suspended (a backup
    of a cluster with no pods could only fail)."""
    if not spec.hibernate or spec.backup.suspend:
        return spec
    return replace(spec, backup=replace(spec.backup, suspend=True))


def hibernation_state(spec: OmenDBSpec, live_replicas: int) -> str | None:
    """``Hibernated`` once no pod is left, ``Hibernating`` while they stop, else None."""
    if not spec.hibernate:
        return None
    return "Hibernated" if live_replicas == 0 else "Hibernating"
