"""How many pods the StatefulSet runs now: the spec's count, unless an operation holds another one.

Several operations want a say (issue 7's collision rules): a restore or bootstrap holds the pods at zero and
wins over everything; hibernation scales to zero; a scale-down that would remove the primary waits for a
switchover; and no scale-down (hibernation included) starts while a backup Job is running.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PodCount:
    override: int | None  # None: the spec's replicas
    waiting: str | None = None  # why a scale-down waits (the Progressing condition's message)


def decide_pod_count(spec_replicas: int, live_replicas: int, *, restore_hold: int | None,
                     hibernation_hold: int | None, switchover_hold: int | None,
                     backup_jobs: tuple[str, ...]) -> PodCount:
    if restore_hold is not None:
        return PodCount(restore_hold)
    hold = hibernation_hold if hibernation_hold is not None else switchover_hold
    target = spec_replicas if hold is None else hold
    if backup_jobs and live_replicas > target:
        return PodCount(live_replicas, f"the scale-down from {live_replicas} to {target} pods waits for backup "
                                       f"Job(s) {', '.join(backup_jobs)} to finish")
    return PodCount(hold)
