"""Jobs of backups and restores (pure builders) and what the operator reads back from them.

Every Job here is the CronJobs' Job (cronjobs.job_template: image, credentials, CA, backup volume,
restricted security context, scheduling) with its own command, labels and, for restores, the database
volumes of one pod. Results travel back in the container's termination message: backup_tool writes one
JSON object to /dev/termination-log (``--result-file``), and on a failure without a result the kubelet
puts the end of the log there (terminationMessagePolicy FallbackToLogsOnError), which becomes the error.
"""

from __future__ import annotations

import hashlib
import shlex
from dataclasses import dataclass, replace
from typing import Any

from omendb.backup import contract
from omendb_operator import labels as L
from omendb_operator.spec import OmenDBSpec
from omendb_operator.specs import cronjobs
from omendb_operator.specs.backup_key import key_volume
from omendb_operator.specs.backup_store import BACKUP_DIR, BackupLocation, backup_location
from omendb_operator.specs.configmap import DATA_DIR, WAL_DIR
from omendb_operator.specs.security import writable_env

BACKUP_LABEL = f"{L.GROUP}/backup"  # on an OmenDBBackup's Job: the OmenDBBackup's name
RESTORE_LABEL = f"{L.GROUP}/restore"  # on an OmenDBRestore's Jobs: the OmenDBRestore's name
ACTION_LABEL = f"{L.GROUP}/restore-action"  # restore, set-aside, put-back or discard
COMPONENT_RESTORE = "restore"
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
MAX_NAME = 63  # Job names end up in the job-name label of their pods

# Where a restore keeps the data it replaces, in the data and WAL volumes (a rename, never a copy), until
# the restored database has been verified. The restore Jobs' program is the engine's
# omendb.backup.restore_job (every action can be rerun after a crash); the operator builds its command
# from contract.RestoreJobRequest.
SET_ASIDE = contract.SET_ASIDE
RESTORE_ACTIONS = contract.RESTORE_ACTIONS


def job_name(base: str, suffix: str) -> str:
    """``base-suffix``, shortened with a hash of the whole when longer than a label value allows."""
    name = f"{base}-{suffix}"
    if len(name) <= MAX_NAME:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{base[: MAX_NAME - len(suffix) - 10]}-{digest}-{suffix}"


def owner_reference(obj: dict[str, Any]) -> dict[str, Any]:
    """A controller reference to an OmenDBBackup/OmenDBRestore (its Jobs go when it is deleted)."""
    meta = obj["metadata"]
    return {"apiVersion": obj.get("apiVersion", L.API_VERSION), "kind": obj["kind"], "name": meta["name"],
            "uid": meta["uid"], "controller": True, "blockOwnerDeletion": False}


def _job(owner: dict[str, Any], spec: OmenDBSpec, name: str, template: dict[str, Any],
         job_owner: dict[str, Any], backoff_limit: int) -> dict[str, Any]:
    meta = L.metadata(owner, name, template["metadata"]["labels"][L.COMPONENT_LABEL], owned=False)
    meta["labels"] = dict(template["metadata"]["labels"])
    meta["ownerReferences"] = [owner_reference(job_owner) if job_owner.get("kind") != L.KIND
                               else L.owner_reference(job_owner)]
    job_spec = dict(template["spec"])
    job_spec["backoffLimit"] = backoff_limit
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": meta, "spec": job_spec}


def backup_job(owner: dict[str, Any], spec: OmenDBSpec, backup: dict[str, Any]) -> dict[str, Any]:
    """The Job of OmenDBBackup ``backup`` of OmenDB ``owner``: the CronJob's Job, owned by the backup."""
    name, namespace = owner["metadata"]["name"], owner["metadata"]["namespace"]
    kind = (backup.get("spec") or {}).get("type") or "full"
    action = "full-backup" if kind == "full" else "incremental-backup"
    labels = {cronjobs.BACKUP_TYPE_LABEL: kind, BACKUP_LABEL: backup["metadata"]["name"]}
    template = cronjobs.job_template(owner, spec, cronjobs.COMPONENT_BACKUP,
                                     cronjobs.backup_command(name, namespace, spec, action), labels)
    # No retry: a failed backup is reported at once (the OmenDBBackup's error); apply a new one to retry.
    return _job(owner, spec, job_name(backup["metadata"]["name"], "backup"), template, backup, 0)


@dataclass(frozen=True)
class RestoreTarget:
    """What to restore: a backup (id or latest) of a backup volume or bucket, optionally to a time or an LSN."""

    backup_id: str = "latest"
    lsn: int | None = None
    time: str | None = None
    location: BackupLocation | None = None  # default: the OmenDB's own (NAME-backups or its objectStore)
    key_secret: str | None = None  # the key of those backups; default: the OmenDB's own NAME-backup-key
    allow_unkeyed: bool = False  # OmenDBRestore spec.allowUnkeyed: also accept a backup made without a key

    def request(self) -> contract.RestoreRequest:
        """The backup_tool restore a restore Job runs on a pod's volumes (the backup volume mounted, or the
        bucket reachable)."""
        backup_dir = self.location.backup_dir if self.location else BACKUP_DIR  # restore_job fills it in
        return contract.RestoreRequest(DATA_DIR, backup_dir, self.backup_id or "latest", WAL_DIR,
                                       self.lsn, self.time, self.allow_unkeyed, force=True,
                                       result_file=cronjobs.RESULT_FILE, lock_timeout=60)

    def argv(self) -> list[str]:
        """backup_tool restore's options naming what to restore."""
        return self.request().target_argv()


def restore_job(owner: dict[str, Any], spec: OmenDBSpec, job_owner: dict[str, Any], base: str, action: str,
                ordinal: int, target: RestoreTarget, labels: dict[str, str]) -> dict[str, Any]:
    """A Job doing ``action`` (RESTORE_ACTIONS) on the data and WAL volumes of pod ``ordinal``
    (``data-NAME-i``, ``wal-NAME-i``), with the backup volume mounted (or the bucket's settings) for ``restore``.

    ``discard`` runs while the database runs (the restore succeeded): it is placed on the node of the pod
    using the volumes (podAffinity), as ReadWriteOnce volumes are shared only on one node."""
    if action not in RESTORE_ACTIONS:
        raise ValueError(f"unknown restore action {action!r}")
    name = owner["metadata"]["name"]
    names = L.Names(name)
    if target.location is None:
        target = replace(target, location=backup_location(spec, owner["metadata"]["namespace"], name))
    assert target.location is not None
    command = contract.RestoreJobRequest(action, DATA_DIR, WAL_DIR,
                                         target.request() if action == "restore" else None).argv()
    all_labels = {**labels, ACTION_LABEL: action}
    template = cronjobs.job_template(owner, spec, COMPONENT_RESTORE, command, all_labels)
    pod = template["spec"]["template"]["spec"]
    container = pod["containers"][0]
    container["name"] = "restore"
    # A restore needs no credentials and no CA: it reads files (and the backup key, below).
    container["env"] = writable_env()
    mounts = [{"name": "data", "mountPath": DATA_DIR}, {"name": "wal", "mountPath": WAL_DIR},
              {"name": "tmp", "mountPath": "/tmp"}]
    volumes: list[dict[str, Any]] = [
        {"name": "data", "persistentVolumeClaim": {"claimName": f"data-{names.pod(ordinal)}"}},
        {"name": "wal", "persistentVolumeClaim": {"claimName": f"wal-{names.pod(ordinal)}"}},
        {"name": "tmp", "emptyDir": {}},
    ]
    if action == "restore":
        container["env"] += target.location.env
        mounts += target.location.mounts
        volumes += target.location.volumes
        # backup_tool authenticates what it restores with the key the backups were signed with.
        key_vol, key_mount, key_env = key_volume(target.key_secret or names.backup_key,
                                                 optional=target.key_secret is not None)
        container["env"].append(key_env)
        mounts.append(key_mount)
        volumes.append(key_vol)
    container["volumeMounts"] = mounts
    pod["volumes"] = volumes
    if action == "discard":
        pod["affinity"] = {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{
            "labelSelector": {"matchLabels": {L.POD_NAME_LABEL: names.pod(ordinal)}},
            "topologyKey": "kubernetes.io/hostname"}]}}
    template["spec"]["activeDeadlineSeconds"] = spec.backup.active_deadline_seconds
    # The script is safe to rerun; a transient failure (a node lost) is retried once.
    return _job(owner, spec, job_name(base, f"{action}-{ordinal}"), template, job_owner, 1)


# ---- reading Jobs back ----------------------------------------------------------------------------------


def job_finished(job: dict[str, Any] | None) -> str | None:
    """'Complete' or 'Failed' once the Job controller says so, else None (running or not started)."""
    for cond in ((job or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") in ("Complete", "Failed") and cond.get("status") == "True":
            return str(cond["type"])
    return None


def job_running(job: dict[str, Any]) -> bool:
    """Not finished yet: the contract's "status.active > 0", and also a Job created a moment ago whose pod
    the Job controller has not started (so two operations never both start in that gap)."""
    return job_finished(job) is None and not (job.get("metadata") or {}).get("deletionTimestamp")


def termination_message(pods: list[dict[str, Any]]) -> tuple[str | None, str | None]:
    """(message of a pod whose container succeeded, message of the latest failed one) among a Job's pods."""
    ok = failed = None
    failed_at = ""
    for pod in pods:
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            term = (cs.get("state") or {}).get("terminated") or {}
            if not term:
                continue
            msg = str(term.get("message") or "").strip()
            if term.get("exitCode") == 0:
                ok = msg
            elif str(term.get("finishedAt") or "") >= failed_at:
                failed_at = str(term.get("finishedAt") or "")
                failed = msg or f"{term.get('reason') or 'Error'} (exit code {term.get('exitCode')})"
    return ok, failed


def backup_result(message: str | None) -> contract.BackupResult | contract.UnreadableResult | None:
    """The result of a backup Job in its termination message (contract.parse_result), or None."""
    result = contract.parse_result(message)
    if result is None or isinstance(result, contract.BackupResult | contract.UnreadableResult):
        return result
    return contract.UnreadableResult(f"a backup Job reported a {type(result).__name__}, not a backup's result")


def restore_result(message: str | None) -> contract.RestoreResult | contract.UnreadableResult | None:
    """The result of a restore Job in its termination message (contract.parse_result), or None."""
    result = contract.parse_result(message)
    if result is None or isinstance(result, contract.RestoreResult | contract.UnreadableResult):
        return result
    return contract.UnreadableResult(f"a restore Job reported a {type(result).__name__}, not a restore's "
                                     f"result")


def failure_text(job: dict[str, Any], failed_message: str | None) -> str:
    """Why a Job failed, for a status: the end of its log (backup_tool's error) or the Job's reason."""
    if failed_message:
        lines = [ln for ln in failed_message.strip().splitlines() if ln.strip()]
        errors = [ln for ln in lines if "error" in ln.lower()]
        return (errors[-1] if errors else lines[-1])[:1000] if lines else "the Job failed"
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Failed":
            return f"{cond.get('reason')}: {cond.get('message')}"[:1000]
    return "the Job failed"


def describe_command(job: dict[str, Any]) -> str:
    """The Job's command as a shell line (for messages)."""
    container = job["spec"]["template"]["spec"]["containers"][0]
    command = container["command"]
    if "--" in command:  # a restore Job: the backup_tool command its program runs
        command = command[command.index("--") + 1:]
    return " ".join(shlex.quote(c) for c in command)
