"""OmenDB status: phase, conditions (Kubernetes conventions), endpoints, versions and last backups.

Pure: the reconcile shell passes what it observed; ``build_status`` returns the new status, keeping each
condition's lastTransitionTime when its status did not change, so an unchanged world yields an equal
status and the shell writes nothing.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from omendb_operator import labels as L
from omendb_operator.plans.plan import merge_patch
from omendb_operator.plans.stuck import Stuck, summary
from omendb_operator.spec import OmenDBSpec
from omendb_operator.times import parse_time, timestamp

READY = "Ready"
PROGRESSING = "Progressing"
DEGRADED = "Degraded"
BACKUP_HEALTHY = "BackupHealthy"
CONTINUOUS_ARCHIVING = "ContinuousArchiving"  # as CloudNativePG names it
TLS_READY = "TLSReady"
MONITORING_READY = "MonitoringReady"
UPGRADE_HEALTHY = "UpgradeHealthy"
STORAGE_RESIZED = "StorageResized"
# kstatus (sigs.k8s.io/cli-utils/pkg/kstatus, read by Flux, Helm 4 --wait, kpt, Config Sync): abnormal-true
# conditions. Reconciling=True: the operator is still working towards the spec (InProgress); Stalled=True:
# it cannot get there without a human (Failed). Never both True (kstatus takes the first True one it
# meets); both False otherwise, so the resource is Current once Ready (or finished) is True.
RECONCILING = "Reconciling"
STALLED = "Stalled"

PHASE_CREATING = "Creating"
PHASE_READY = "Ready"
PHASE_UPDATING = "Updating"
PHASE_DEGRADED = "Degraded"
PHASE_FAILED = "Failed"
PHASE_HIBERNATED = "Hibernated"


def set_condition(previous: list[dict[str, Any]], type_: str, status: str, reason: str, message: str,
                  generation: int, now: dt.datetime) -> dict[str, Any]:
    old = next((c for c in previous if c.get("type") == type_), None)
    since = old["lastTransitionTime"] if old and old.get("status") == status and old.get(
        "lastTransitionTime") else timestamp(now)
    return {"type": type_, "status": status, "reason": reason, "message": message,
            "observedGeneration": generation, "lastTransitionTime": since}


def kstatus_conditions(previous: list[dict[str, Any]], stalled: tuple[str, str] | None,
                       reconciling: tuple[str, str] | None, generation: int, now: dt.datetime,
                       done: tuple[str, str] = ("ReconcileComplete", "the spec is reached; nothing left to do")
                       ) -> list[dict[str, Any]]:
    """[Reconciling, Stalled] from (reason, message) of what blocks and of what is still at work (None:
    nothing); a blocker wins, so the two are never True together. ``done``: Reconciling's reason and
    message when nothing is at work."""
    if stalled:
        rec = ("False", "Stalled", "progress is blocked; see the Stalled condition")
    elif reconciling:
        rec = ("True", *reconciling)
    else:
        rec = ("False", *done)
    stall = ("True", *stalled) if stalled else ("False", "NotStalled", "nothing blocks progress")
    return [set_condition(previous, RECONCILING, *rec, generation, now),
            set_condition(previous, STALLED, *stall, generation, now)]


def keep_finished(prev: dict[str, Any], generation: int, now: dt.datetime) -> dict[str, Any]:
    """The status of a finished OmenDBBackup or OmenDBRestore as it stays: the newest generation observed
    (it never runs again, so an edited spec changes nothing and kstatus must not wait for it), and the
    kstatus conditions that a status written by an operator before them lacks (Stalled once Failed)."""
    status = {**prev, "observedGeneration": generation}
    conditions = list(prev.get("conditions") or [])
    if not any(c.get("type") == STALLED for c in conditions):
        ready = next((c for c in conditions if c.get("type") == READY), None) or {}
        message = str(prev.get("error") or ready.get("message") or prev.get("phase"))
        stalled = (str(ready.get("reason") or "Failed"), message) if prev.get("phase") == "Failed" else None
        status["conditions"] = [c for c in conditions if c.get("type") != RECONCILING] + kstatus_conditions(
            conditions, stalled, None, generation, now, ("Finished", message))
    return status


@dataclass
class Observation:
    """What the reconcile saw, for the status."""

    statefulset: dict[str, Any] | None = None
    cronjobs: dict[str, dict[str, Any] | None] = field(default_factory=dict)  # full/incremental/cleanup
    spec_error: str | None = None
    apply_errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    tls_not_after: dt.datetime | None = None
    tls_error: str | None = None
    # The user's TLS Secret: what breaks backups/restores/upgrades (Degraded) and what breaks host-name
    # checks (a warning on TLSReady and Degraded), from certificates.review_user_tls_secret.
    tls_problems: list[str] = field(default_factory=list)
    tls_warnings: list[str] = field(default_factory=list)
    monitoring_missing: bool = False
    # Day-2 operations (day2.py): status.upgrade, status.storage and their conditions.
    upgrade: dict[str, Any] | None = None
    upgrade_condition: tuple[str, str, str] | None = None  # UpgradeHealthy (status, reason, message)
    storage: dict[str, Any] | None = None
    storage_condition: tuple[str, str, str] | None = None  # StorageResized
    operation_waiting: str | None = None  # why a running operation waits (Progressing's message)
    running_version: str | None = None  # the version the StatefulSet runs, when not the spec's (rollback)
    hibernation: str | None = None  # Hibernating / Hibernated while spec.hibernate is true
    # primaryPod, pods and failover, from the failover step (failover.py); None keeps the previous ones.
    replication: dict[str, Any] | None = None
    # From operations.py (backups, restores, bootstrap).
    last_backup: dict[str, Any] = field(default_factory=dict)  # from the newest succeeded backup Jobs
    backup_failure: str | None = None  # the newest finished scheduled backup Job failed: why
    wal_archive: dict[str, Any] | None = None  # the primary's /v1/stats "wal_archive" (None: not read)
    restore: dict[str, Any] | None = None  # the restore holding this OmenDB: {name, step}
    bootstrap: dict[str, Any] | None = None  # spec.bootstrap.fromBackup's progress
    # Children that cannot make progress without a human (stuck.py): Degraded always, Stalled while the
    # OmenDB is not yet where its spec says (creating, rolling out, an operation at work).
    stuck: list[Stuck] = field(default_factory=list)


def _rollout(spec: OmenDBSpec, sts: dict[str, Any] | None, generation_seen: bool) -> tuple[int, int, bool]:
    """(replicas, ready replicas, rollout complete). With ``updateStrategy: OnDelete`` the controller never
    moves currentRevision, so "every pod is on the update revision" is ``updatedReplicas``."""
    if not sts:
        return 0, 0, False
    st = sts.get("status") or {}
    replicas = int(st.get("replicas") or 0)
    ready = int(st.get("readyReplicas") or 0)
    updated = int(st.get("updatedReplicas") or 0)
    want = 0 if spec.hibernate else spec.replicas
    done = (generation_seen and st.get("observedGeneration") == sts["metadata"].get("generation")
            and ready >= want and updated >= want and replicas == want)
    return replicas, ready, done


def _archiving_condition(archive: dict[str, Any] | None) -> tuple[str, str, str]:
    """ContinuousArchiving, from the primary's WAL archiver (spec.backup.objectStore.archiveWal)."""
    if archive is None:
        return "Unknown", "PrimaryNotRead", "the primary's archiver state is not known yet"
    if archive.get("failing"):
        return "False", "ArchiveFailing", (f"shipping the WAL to {archive.get('url')} fails: {archive.get('error')}; "
                                           "see the OmenDBWALArchiveFailing runbook")
    if not archive.get("active"):
        return "Unknown", "ArchiverStarting", "the primary has not shipped its WAL yet"
    return "True", "ArchivingWAL", (f"the primary ships its WAL to {archive.get('url')} (through LSN "
                                    f"{archive.get('shipped_lsn')}, {archive.get('lag_seconds')}s behind)")


def _backup_condition(spec: OmenDBSpec, cronjobs: dict[str, dict[str, Any] | None],
                      job_failure: str | None = None) -> tuple[str, str, str]:
    if not spec.backup.enabled:
        return "Unknown", "BackupsDisabled", "spec.backup.enabled is false"
    failing: list[str] = [job_failure] if job_failure else []
    never = []
    for kind in ("full", "incremental"):
        cj = cronjobs.get(kind)
        st = (cj or {}).get("status") or {}
        scheduled = parse_time(st.get("lastScheduleTime"))
        succeeded = parse_time(st.get("lastSuccessfulTime"))
        if scheduled is None:
            never.append(kind)
        elif not st.get("active") and (succeeded is None or succeeded < scheduled) and not job_failure:
            failing.append(f"the last {kind} backup (scheduled {timestamp(scheduled)}) did not succeed")
    if failing:
        return "False", "BackupFailed", "; ".join(failing) + "; see the backup Jobs' logs"
    if len(never) == 2:
        return "Unknown", "NoBackupYet", "no scheduled backup has run yet"
    return "True", "BackupsSucceeding", "the last scheduled backups succeeded"


# UpgradeHealthy / StorageResized reasons after which the operator waits for a new spec (upgrade.py,
# volumes.py): the spec cannot be reached as it stands.
STALLED_UPGRADE = {"BackupFailed": "UpgradeBackupFailed", "RolloutHalted": "RolloutHalted",
                   "RolledBack": "UpgradeRolledBack"}
STALLED_STORAGE = ("ShrinkRefused", "ExpansionNotSupported")


def _stalled(obs: Observation, reconciling: bool) -> tuple[str, str] | None:
    """(reason, message) of what keeps the OmenDB from its spec until a human acts, else None. A stuck
    child stalls only an OmenDB that still has work to do: a scheduled backup Job stuck next to a Ready
    database degrades it (Degraded=True) but the database is as its spec says."""
    if obs.apply_errors:
        return "ReconcileError", "; ".join(obs.apply_errors)
    if obs.tls_error:
        return "TLSSecretUnusable", obs.tls_error
    if obs.upgrade_condition and obs.upgrade_condition[0] == "False":
        _, reason, message = obs.upgrade_condition
        if reason in STALLED_UPGRADE:
            return STALLED_UPGRADE[reason], message
        if reason == "RollingBack" and (obs.upgrade or {}).get("failedImage"):
            return "UpgradeRollingBack", message  # the spec names an image that never became Ready
    boot, restore = obs.bootstrap or {}, obs.restore or {}
    if boot.get("phase") == "Failed":  # bootstrap.py: at 0 pods until the Job is deleted
        return "BootstrapFailed", str(boot.get("message") or boot.get("error"))
    if restore.get("message"):  # operations.py: a restore deleted mid-way holds the pods at 0
        return "RestoreDeleted", str(restore["message"])
    if obs.storage_condition and obs.storage_condition[1] in STALLED_STORAGE:
        return obs.storage_condition[1], obs.storage_condition[2]
    if obs.stuck and reconciling:
        return obs.stuck[0].reason, summary(obs.stuck)
    return None


def build_status(owner: dict[str, Any], spec: OmenDBSpec | None, obs: Observation,
                 previous: dict[str, Any] | None, now: dt.datetime) -> dict[str, Any]:
    meta = owner["metadata"]
    name, namespace = meta["name"], meta["namespace"]
    generation = int(meta.get("generation") or 0)
    prev = dict(previous or {})
    prev_conditions = list(prev.get("conditions") or [])
    names = L.Names(name)

    def cond(type_: str, status: str, reason: str, message: str) -> dict[str, Any]:
        return set_condition(prev_conditions, type_, status, reason, message, generation, now)

    status: dict[str, Any] = {"observedGeneration": generation, "selector": L.selector_string(name)}
    if spec is None:
        message = obs.spec_error or "the spec is invalid"
        status.update({
            "phase": PHASE_FAILED,
            "replicas": prev.get("replicas", 0), "readyReplicas": prev.get("readyReplicas", 0),
            "conditions": [
                cond(READY, "False", "InvalidSpec", message),
                cond(PROGRESSING, "False", "InvalidSpec", message),
                cond(DEGRADED, "True", "InvalidSpec", message),
                *kstatus_conditions(prev_conditions, ("InvalidSpec", message), None, generation, now),
            ],
        })
        # primaryPod and failover must survive a bad spec: forgetting them would make pod 0 the primary again.
        for key in ("currentVersion", "endpoints", "lastBackup", "credentialsSecret", "tls", "upgrade", "storage",
                    "primaryPod", "pods", "podsObservedAt", "failover", "restore", "bootstrap"):
            if key in prev:
                status[key] = prev[key]
        return status

    replicas, ready, done = _rollout(spec, obs.statefulset, True)
    was_ready = any(c.get("type") == READY and c.get("status") == "True" for c in prev_conditions) or \
        bool(prev.get("currentVersion"))
    version = obs.running_version or (spec.version if not spec.image else spec.image)
    current_version = prev.get("currentVersion")
    if done:
        current_version = version

    conditions = []
    if obs.hibernation:
        hibernated = obs.hibernation == PHASE_HIBERNATED
        conditions.append(cond(READY, "False", "Hibernated" if hibernated else "Hibernating",
                               "spec.hibernate is true: no pod runs; the volumes, backups and Secrets are kept. "
                               "Set spec.hibernate: false to wake it"))
        conditions.append(cond(PROGRESSING, "False" if hibernated else "True", obs.hibernation,
                               f"{replicas} pod(s) left"))
    elif obs.operation_waiting and done:
        conditions.append(cond(READY, "True", "AllReplicasReady", f"{ready}/{spec.replicas} pods are ready"))
        conditions.append(cond(PROGRESSING, "True", "OperationInProgress", obs.operation_waiting))
    elif obs.operation_waiting:
        conditions.append(cond(READY, "False", "ReplicasNotReady", f"{ready}/{spec.replicas} pods are ready"))
        conditions.append(cond(PROGRESSING, "True", "OperationInProgress", obs.operation_waiting))
    elif done:
        conditions.append(cond(READY, "True", "AllReplicasReady", f"{ready}/{spec.replicas} pods are ready"))
        conditions.append(cond(PROGRESSING, "False", "RolloutComplete", f"running {version}"))
    else:
        conditions.append(cond(READY, "False", "ReplicasNotReady", f"{ready}/{spec.replicas} pods are ready"))
        if obs.restore:  # an OmenDBRestore holds the pods (restores.py): expected, not a degradation
            conditions.append(cond(PROGRESSING, "True", "Restoring",
                                   f"OmenDBRestore {obs.restore.get('name')}: step {obs.restore.get('step')}"))
        else:
            conditions.append(cond(PROGRESSING, "True", "RollingOut" if was_ready else "Creating",
                                   f"rolling out {version}: {ready}/{spec.replicas} pods ready"))
    problems = list(obs.apply_errors) + [s.message for s in obs.stuck] + obs.tls_problems
    if was_ready and not done and not spec.hibernate and ready < min(replicas, spec.replicas):
        problems.append(f"{spec.replicas - ready} of {spec.replicas} pods are not ready")
    if problems:
        reason = "ReconcileError" if obs.apply_errors else obs.stuck[0].reason if obs.stuck else \
            "TLSSecretIncomplete" if obs.tls_problems else "PodsNotReady"
        conditions.append(cond(DEGRADED, "True", reason, "; ".join(problems)))
    elif obs.warnings or obs.tls_warnings:
        conditions.append(cond(DEGRADED, "False", "AsExpectedWithWarnings",
                               "; ".join(obs.warnings + obs.tls_warnings)))
    else:
        conditions.append(cond(DEGRADED, "False", "AsExpected", "no problems found"))
    conditions.append(cond(BACKUP_HEALTHY, *_backup_condition(spec, obs.cronjobs, obs.backup_failure)))
    if spec.backup.object_store is not None and spec.backup.object_store.archive_wal:
        conditions.append(cond(CONTINUOUS_ARCHIVING, *_archiving_condition(obs.wal_archive)))
    if not spec.tls.enabled:
        # Off by choice is as the spec asks, not a fault: True, so neither dashboards nor
        # `kubectl wait --for=condition=TLSReady` read it as a broken certificate.
        conditions.append(cond(TLS_READY, "True", "TLSDisabled",
                               "spec.tls.enabled is false: the database serves plain HTTP, as asked"))
    elif obs.tls_error:
        conditions.append(cond(TLS_READY, "False", "CertificateProblem", obs.tls_error))
    elif obs.tls_not_after is not None and (obs.tls_problems or obs.tls_warnings):
        conditions.append(cond(TLS_READY, "True", "CertificateIncomplete" if obs.tls_problems else
                               "CertificateNamesMissing",
                               f"the server certificate is valid until {timestamp(obs.tls_not_after)}, but "
                               + "; ".join(obs.tls_problems + obs.tls_warnings)))
    elif obs.tls_not_after is not None:
        conditions.append(cond(TLS_READY, "True", "CertificateValid",
                               f"the server certificate is valid until {timestamp(obs.tls_not_after)}"))
    else:
        conditions.append(cond(TLS_READY, "Unknown", "CertificatePending", "no certificate seen yet"))
    if obs.monitoring_missing:
        conditions.append(cond(MONITORING_READY, "False", "MonitoringCRDsMissing",
                               "PrometheusRule/ServiceMonitor (monitoring.coreos.com/v1) are not "
                               "installed in this cluster; install the Prometheus Operator CRDs or set "
                               "spec.monitoring.prometheusRule and serviceMonitor to false"))
    else:
        conditions.append(cond(MONITORING_READY, "True", "MonitoringConfigured",
                               "alerts and scraping are configured as the spec asks"))

    if obs.apply_errors or obs.tls_problems:
        phase = PHASE_DEGRADED
    elif obs.hibernation:
        phase = PHASE_HIBERNATED if obs.hibernation == PHASE_HIBERNATED else PHASE_UPDATING
    elif done:
        phase = PHASE_READY
    elif was_ready:
        phase = PHASE_UPDATING if ready >= 1 or obs.restore else PHASE_DEGRADED
    else:
        phase = PHASE_CREATING

    scheme = "https" if spec.tls.enabled else "http"
    status.update({
        "phase": phase,
        "replicas": replicas,
        "readyReplicas": ready,
        "primaryPod": prev.get("primaryPod") or names.pod(0),
        "endpoints": {
            "primary": f"{scheme}://{names.primary_service}.{namespace}.svc:{L.API_PORT}",
            "readOnly": f"{scheme}://{names.read_service}.{namespace}.svc:{L.API_PORT}",
            "metrics": f"http://{names.headless_service}.{namespace}.svc:{L.METRICS_PORT}/metrics",
        },
        "credentialsSecret": names.users,
        "conditions": conditions,
        # Any status write stores the whole OmenDB as the API server read it, spec.version's schema default
        # included: an OmenDB created before the CRD had that default gets it recorded by this first write,
        # so a later CRD with a newer default does not change its version (docs/operations/upgrades.md).
        "specDefaultsRecorded": True,
    })
    status.update({k: prev[k] for k in ("pods", "podsObservedAt", "failover") if k in prev})
    status.update(obs.replication or {})
    if current_version:
        status["currentVersion"] = current_version
    if obs.upgrade_condition:
        conditions.append(cond(UPGRADE_HEALTHY, *obs.upgrade_condition))
    if obs.storage_condition:
        conditions.append(cond(STORAGE_RESIZED, *obs.storage_condition))
    progressing = next(c for c in conditions if c["type"] == PROGRESSING)
    reconciling = (progressing["reason"], progressing["message"]) if progressing["status"] == "True" else None
    conditions += kstatus_conditions(prev_conditions, _stalled(obs, reconciling is not None), reconciling,
                                     generation, now)
    if obs.upgrade:
        status["upgrade"] = obs.upgrade
    if obs.storage:
        status["storage"] = obs.storage
    # The newest succeeded backup (id, type, time, size: read from its Job) and the newest of each kind;
    # a backup whose Job is gone (history limits) is still counted through the CronJobs' status.
    last_backup: dict[str, Any] = dict(prev.get("lastBackup") or {}) if spec.backup.enabled else {}
    newest = {k: v for k, v in obs.last_backup.items() if k not in ("full", "incremental")}
    if newest.get("time") and str(newest["time"]) >= str(last_backup.get("time") or ""):
        last_backup.update(newest)
    for kind in ("full", "incremental"):
        st = (obs.cronjobs.get(kind) or {}).get("status") or {}
        times = [t for t in (parse_time(st.get("lastSuccessfulTime")), parse_time(obs.last_backup.get(kind)),
                             parse_time(last_backup.get(kind))) if t]
        if times:
            last_backup[kind] = timestamp(max(times))
    if last_backup:
        status["lastBackup"] = last_backup
    if obs.restore:
        status["restore"] = obs.restore
    if obs.bootstrap:
        status["bootstrap"] = obs.bootstrap
    if spec.tls.enabled:
        tls: dict[str, Any] = {"secretName": spec.tls.secret(names.name)}
        if spec.tls.generate:
            tls["caSecretName"] = names.ca
        if spec.tls.cert_manager:
            tls["certificate"] = names.name  # the cert-manager Certificate that issues secretName
        if obs.tls_not_after:
            tls["notAfter"] = timestamp(obs.tls_not_after)
        status["tls"] = tls
    return status


# Status keys build_status writes; a key among these that the new status lacks is removed (set to null in
# the merge patch) so a stale value (e.g. tls after TLS was switched off) does not linger.
MANAGED_KEYS = ("observedGeneration", "selector", "phase", "replicas", "readyReplicas", "primaryPod",
                "endpoints", "credentialsSecret", "conditions", "currentVersion", "lastBackup", "tls",
                "upgrade", "storage", "pods", "podsObservedAt", "failover", "restore", "bootstrap",
                "specDefaultsRecorded")


def status_patch(old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    """The merge patch turning ``old`` into ``new`` for the keys we manage (others are left alone)."""
    old = old or {}
    patch: dict[str, Any] = dict(new)
    for key in MANAGED_KEYS:
        if key in old and key not in new:
            patch[key] = None
        elif isinstance(old.get(key), dict) and isinstance(new.get(key), dict) and \
                any(k not in new[key] for k in old[key]):
            # A merge patch merges objects: a field gone from an object (e.g. bootstrap.error once it
            # succeeded) must be nulled too, or it lingers.
            patch[key] = merge_patch(old[key], new[key])
    return patch


def status_changed(old: dict[str, Any] | None, new: dict[str, Any]) -> bool:
    """True when writing ``new`` would change what the OmenDB's status says (keys we do not manage, such
    as an operation's state written by another handler, are compared only where we set them)."""
    old = old or {}
    return any(old.get(k) != v for k, v in status_patch(old, new).items())
