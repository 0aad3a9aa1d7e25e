"""spec.bootstrap.fromBackup: a new OmenDB starts from a backup of another OmenDB.

Before the StatefulSet runs any pod (replicas held at 0), the operator creates pod 0's data and WAL
volumes itself (``data-NAME-0``, ``wal-NAME-0``, as the StatefulSet's claim templates would, so the
StatefulSet adopts them) and runs a restore Job on them from the source's backup volume
``SOURCE-backups``, or from the bucket of ``fromBackup.objectStore`` (another cluster's backups: the
region-failure recovery of docs/operations/disaster-recovery.md). When it succeeds,
``status.bootstrap.phase`` becomes Succeeded and the OmenDB starts; that is recorded once and never rerun.
A failed Job leaves the OmenDB at 0 pods with the error in ``status.bootstrap``; delete the Job
(``kubectl delete job NAME-bootstrap-restore-0``) to try again. An OmenDB that already ran
(status.currentVersion set) never bootstraps: adding the field later is recorded as Skipped.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from omendb.backup.contract import RestoreResult
from omendb_operator import labels as L
from omendb_operator.spec import OmenDBSpec
from omendb_operator.specs import jobs
from omendb_operator.specs.backup_store import BackupLocation, object_store_location, object_store_url, volume_location
from omendb_operator.specs.statefulset import build_statefulset
from omendb_operator.times import timestamp

PENDING, RUNNING, SUCCEEDED, FAILED, SKIPPED = "Pending", "Running", "Succeeded", "Failed", "Skipped"


@dataclass
class BootstrapPlan:
    status: dict[str, Any] | None  # status.bootstrap (None: no bootstrap at all)
    create: list[dict[str, Any]] = field(default_factory=list)  # claims, then the Job
    replicas_override: int | None = None
    events: list[tuple[str, str, str]] = field(default_factory=list)

    @property
    def running(self) -> bool:
        return self.replicas_override == 0


def job_base(name: str) -> str:
    return f"{name}-bootstrap"


def pod0_claims(owner: dict[str, Any], spec: OmenDBSpec) -> list[dict[str, Any]]:
    """``data-NAME-0`` and ``wal-NAME-0`` exactly as the StatefulSet would create them."""
    name = owner["metadata"]["name"]
    sts = build_statefulset(owner, spec, "")
    out = []
    for template in sts["spec"]["volumeClaimTemplates"]:
        out.append({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                    "metadata": {"name": f"{template['metadata']['name']}-{L.Names(name).pod(0)}",
                                 "namespace": owner["metadata"]["namespace"],
                                 "labels": L.selector_labels(name)},
                    "spec": template["spec"]})
    return out


def source_location(owner: dict[str, Any], spec: OmenDBSpec) -> BackupLocation:
    """Where the bootstrap's backups are: the bucket of fromBackup.objectStore (its path defaulting to
    NAMESPACE/<cluster.name, else this OmenDB's name>), else the source OmenDB's volume."""
    b = spec.bootstrap
    assert b is not None
    if b.object_store is not None:
        return object_store_location(b.object_store, owner["metadata"]["namespace"],
                                     b.source_cluster or owner["metadata"]["name"])
    return volume_location(L.Names(b.source_cluster).backup_volume)


def source_name(owner: dict[str, Any], spec: OmenDBSpec) -> str:
    """How status and events name the source: the OmenDB, or the bucket URL."""
    b = spec.bootstrap
    assert b is not None
    if b.object_store is not None:
        return object_store_url(b.object_store, owner["metadata"]["namespace"],
                                b.source_cluster or owner["metadata"]["name"])
    return b.source_cluster


def bootstrap_job(owner: dict[str, Any], spec: OmenDBSpec) -> dict[str, Any]:
    assert spec.bootstrap is not None
    b = spec.bootstrap
    # The source's backups are signed with the source's key: SOURCE-backup-key (it outlives its OmenDB as long
    # as the backup volume does). From a bucket, this OmenDB's own NAME-backup-key, which must be a copy of
    # the source's, made before the OmenDB (the disaster-recovery runbook's first step).
    key = None if b.object_store is not None else L.Names(b.source_cluster).backup_key
    target = jobs.RestoreTarget(b.backup_id, b.lsn, b.time, source_location(owner, spec), key)
    return jobs.restore_job(owner, spec, owner, job_base(owner["metadata"]["name"]), "restore", 0, target,
                            {f"{L.GROUP}/bootstrap": owner["metadata"]["name"]})


def plan_bootstrap(owner: dict[str, Any], spec: OmenDBSpec, previous: dict[str, Any], source_volume: bool,
                   claims: set[str], job: dict[str, Any] | None, pods: list[dict[str, Any]],
                   now: dt.datetime) -> BootstrapPlan:
    """``previous``: the OmenDB's status; ``claims``: names of existing PVCs among pod 0's; ``job``: the
    bootstrap Job if it exists, ``pods`` its pods."""
    prev = previous.get("bootstrap")
    if spec.bootstrap is None:
        return BootstrapPlan(prev)  # a past bootstrap stays on record
    if prev and prev.get("phase") in (SUCCEEDED, SKIPPED):
        return BootstrapPlan(prev)
    b = spec.bootstrap
    source: dict[str, Any] = {"backupId": b.backup_id}
    if b.source_cluster:
        source["cluster"] = b.source_cluster
    if b.object_store is not None:
        source["objectStore"] = source_name(owner, spec)
    if b.lsn is not None:
        source["lsn"] = b.lsn
    if b.time:
        source["time"] = b.time
    if not prev and previous.get("currentVersion"):
        message = "the OmenDB already ran before spec.bootstrap was set; bootstrap applies only to a new OmenDB"
        return BootstrapPlan({"phase": SKIPPED, "source": source, "message": message},
                             events=[("Warning", "BootstrapSkipped", message)])
    status: dict[str, Any] = {**(prev or {}), "source": source}
    where = source_name(owner, spec) if b.object_store is not None else L.Names(b.source_cluster).backup_volume
    if job is None:
        if b.object_store is None and not source_volume:
            message = (f"waiting: the source backup volume {where} does not exist in this namespace (is "
                       f"spec.bootstrap.fromBackup.cluster.name right? backups of {b.source_cluster} go there)")
            events = [] if (prev or {}).get("message") == message else [("Warning", "BootstrapWaiting", message)]
            status.update(phase=PENDING, message=message)
            return BootstrapPlan(status, replicas_override=0, events=events)
        create = [c for c in pod0_claims(owner, spec) if c["metadata"]["name"] not in claims]
        manifest = bootstrap_job(owner, spec)
        create.append(manifest)
        message = f"Job {manifest['metadata']['name']} restores backup {b.backup_id} from {where}"
        status.update(phase=RUNNING, message=message, startedAt=timestamp(now))
        status.pop("error", None)
        return BootstrapPlan(status, create=create, replicas_override=0,
                             events=[("Normal", "BootstrapStarted", message)])
    outcome = jobs.job_finished(job)
    ok_message, failed_message = jobs.termination_message(pods)
    if outcome is None:
        status.update(phase=RUNNING)
        return BootstrapPlan(status, replicas_override=0)
    if outcome == "Failed":
        error = jobs.failure_text(job, failed_message)
        message = (f"the bootstrap restore failed: {error}; the OmenDB stays at 0 pods. Fix the cause, then "
                   f"`kubectl delete job {job['metadata']['name']}` to run it again")
        events = [] if (prev or {}).get("phase") == FAILED else [("Warning", "BootstrapFailed", message)]
        status.update(phase=FAILED, error=error, message=message)
        return BootstrapPlan(status, replicas_override=0, events=events)
    result = jobs.restore_result(ok_message)
    status.update(phase=SUCCEEDED, completedAt=(job.get("status") or {}).get("completionTime") or timestamp(now))
    if isinstance(result, RestoreResult):
        status.update(backupId=result.backup_id, restoredLSN=result.lsn, recordCount=result.records)
    message = (f"bootstrapped from backup {status.get('backupId', b.backup_id)} of {source_name(owner, spec)} "
               f"(LSN {status.get('restoredLSN')}, {status.get('recordCount')} records); starting the pods")
    status["message"] = message
    status.pop("error", None)
    return BootstrapPlan(status, events=[("Normal", "BootstrapSucceeded", message)])
