"""Scheduled backups: the guide's backup_schedule.sh as three CronJobs and the volume they write to.

Each Job runs ``backup_tool --source https://NAME.NS.svc:3000 --backup-dir /var/backups/omendb ...``
against the primary over the network (an online backup), authenticated as the generated admin user from
NAME-users (its ``credentials`` key mounted as a file, env OMENDB_CREDENTIALS_FILE: never the password in an
environment variable, which `kubectl describe` and crash dumps show) and trusting the CA bundle from NAME-ca
(env OMENDB_CA_FILE), signing every backup with the key in NAME-backup-key (a file, env
OMENDB_BACKUP_KEY_FILE; backup_key.py). Backups land on the PVC NAME-backups, which outlives the OmenDB
unless spec.backup.volume.deleteOnDelete is set, or in the bucket of spec.backup.objectStore
(backup_store.py), where no backup volume is made.
"""

from __future__ import annotations

from typing import Any

from omendb.backup import contract
from omendb_operator import labels as L
from omendb_operator.spec import OmenDBSpec
from omendb_operator.specs.backup_key import key_volume
from omendb_operator.specs.backup_store import backup_location
from omendb_operator.specs.secrets import CREDENTIALS_KEY
from omendb_operator.specs.security import container_security_context, pod_security_context, writable_env

CA_MOUNT = "/etc/omendb/ca"
CA_FILE = f"{CA_MOUNT}/ca.crt"
CREDENTIALS_MOUNT = "/etc/omendb/credentials"
CREDENTIALS_FILE = f"{CREDENTIALS_MOUNT}/{CREDENTIALS_KEY}"
CREDENTIALS_FILE_ENV = "OMENDB_CREDENTIALS_FILE"  # as backup_tool and omendb.client read it
# backup_tool writes its result (backup id, size, LSNs) there as JSON; the kubelet keeps it in the pod's
# status (containerStatuses[].state.terminated.message), where the operator reads it (jobs.py).
RESULT_FILE = "/dev/termination-log"
# Every Job that takes a backup (scheduled, OmenDBBackup, pre-upgrade) carries component=backup (the
# contract "a backup is running" selects on it) and this label with full or incremental.
BACKUP_TYPE_LABEL = f"{L.GROUP}/backup-type"
COMPONENT_BACKUP = "backup"


def source_url(name: str, namespace: str, spec: OmenDBSpec) -> str:
    scheme = "https" if spec.tls.enabled else "http"
    return f"{scheme}://{L.Names(name).primary_service}.{namespace}.svc:{L.API_PORT}"


def backup_request(name: str, namespace: str, spec: OmenDBSpec, kind: str) -> contract.BackupRequest:
    """A ``kind`` (full or incremental) backup of the primary, online, its result in the termination log."""
    return contract.BackupRequest(kind, spec.database_name, backup_location(spec, namespace, name).backup_dir,
                                  source=source_url(name, namespace, spec), result_file=RESULT_FILE)


def cleanup_request(name: str, namespace: str, spec: OmenDBSpec) -> contract.CleanupRequest:
    return contract.CleanupRequest(backup_location(spec, namespace, name).backup_dir, spec.backup.retention_days,
                                   source_url(name, namespace, spec))


def backup_command(name: str, namespace: str, spec: OmenDBSpec, action: str) -> list[str]:
    """The backup_tool argv for ``action`` (full-backup, incremental-backup or cleanup)."""
    if action == "cleanup":
        return cleanup_request(name, namespace, spec).argv()
    kind = {command: kind for kind, command in contract.COMMAND_OF_TYPE.items()}.get(action)
    if kind is None:
        raise ValueError(f"unknown backup action {action!r}")
    return backup_request(name, namespace, spec, kind).argv()


def _ca_source(name: str, spec: OmenDBSpec) -> dict[str, Any] | None:
    if not spec.tls.enabled:
        return None
    if spec.tls.generate:
        # Only ca.crt: the CA's private key (also in NAME-ca) never reaches a Job.
        return {"secretName": L.Names(name).ca, "items": [{"key": "ca.crt", "path": "ca.crt"}]}
    # A user-supplied (or cert-manager's) certificate Secret may carry its CA as ca.crt; without one, the
    # system trust applies.
    return {"secretName": spec.tls.secret(name), "items": [{"key": "ca.crt", "path": "ca.crt"}],
            "optional": True}


def job_template(owner: dict[str, Any], spec: OmenDBSpec, component: str, command: list[str],
                 extra_labels: dict[str, str] | None = None) -> dict[str, Any]:
    """The Job (metadata.labels + spec) every backup_tool Job of OmenDB ``owner`` runs: the image, the
    credentials, the CA, the backup volume or object store, the restricted security context and the scheduling of the
    database pods. CronJobs, OmenDBBackup and restores (jobs.py) all build on it."""
    name = owner["metadata"]["name"]
    names = L.Names(name)
    location = backup_location(spec, owner["metadata"]["namespace"], name)
    env: list[dict[str, Any]] = [{"name": CREDENTIALS_FILE_ENV, "value": CREDENTIALS_FILE}, *writable_env(),
                                 *location.env]
    mounts: list[dict[str, Any]] = [*location.mounts,
                                    {"name": "tmp", "mountPath": "/tmp"},
                                    {"name": "credentials", "mountPath": CREDENTIALS_MOUNT, "readOnly": True}]
    volumes: list[dict[str, Any]] = [
        *location.volumes,
        {"name": "tmp", "emptyDir": {}},
        # Only the `user:password` line: the htpasswd hashes in the same Secret never reach a Job.
        {"name": "credentials", "secret": {"secretName": names.users, "defaultMode": 0o440,
                                           "items": [{"key": CREDENTIALS_KEY, "path": CREDENTIALS_KEY}]}},
    ]
    # The backup key signs and authenticates backups: a file from NAME-backup-key, never on the backup volume.
    key_vol, key_mount, key_env = key_volume(names.backup_key)
    env.append(key_env)
    mounts.append(key_mount)
    volumes.append(key_vol)
    ca = _ca_source(name, spec)
    if ca:
        env.append({"name": "OMENDB_CA_FILE", "value": CA_FILE})
        mounts.append({"name": "ca", "mountPath": CA_MOUNT, "readOnly": True})
        volumes.append({"name": "ca", "secret": ca})
    # Without the `app` selector label: Services, the PodDisruptionBudget and the StatefulSet select the
    # database pods by the selector labels, and a Job's pod must never be taken for one of them.
    pod_labels = {k: v for k, v in L.labels(name, component).items() if k != "app"}
    pod_labels.update(extra_labels or {})
    container: dict[str, Any] = {
        "name": "backup",
        "image": spec.container_image,
        "imagePullPolicy": spec.image_pull_policy,
        "command": command,
        # The result JSON on success; on a failure without one, the end of the log (the error).
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "env": env,
        "securityContext": container_security_context(),
        "volumeMounts": mounts,
    }
    if spec.backup.resources:
        container["resources"] = spec.backup.resources  # defaults: spec.default_backup_resources
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": pod_security_context(),
        "containers": [container],
        "volumes": volumes,
    }
    if spec.scheduling.node_selector:
        pod_spec["nodeSelector"] = spec.scheduling.node_selector
    if spec.scheduling.tolerations:
        pod_spec["tolerations"] = spec.scheduling.tolerations
    if spec.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": s} for s in spec.image_pull_secrets]
    return {
        "metadata": {"labels": pod_labels},
        "spec": {
            "backoffLimit": 2,
            "activeDeadlineSeconds": spec.backup.active_deadline_seconds,
            "template": {"metadata": {"labels": pod_labels}, "spec": pod_spec},
        },
    }


def _cronjob(owner: dict[str, Any], spec: OmenDBSpec, job_name: str, component: str, schedule: str,
             command: list[str], suspend: bool) -> dict[str, Any]:
    kind = component.removeprefix("backup-")
    if kind in ("full", "incremental"):
        template = job_template(owner, spec, COMPONENT_BACKUP, command, {BACKUP_TYPE_LABEL: kind})
    else:
        template = job_template(owner, spec, component, command)
    cron_spec: dict[str, Any] = {
        "schedule": schedule,
        # Never two backups of one kind at once: a slow full backup is not overlapped by the next.
        "concurrencyPolicy": "Forbid",
        # Also suspended while a restore runs (restores.py): no backup of a database being replaced.
        "suspend": spec.backup.suspend or suspend,
        "startingDeadlineSeconds": 3600,
        "successfulJobsHistoryLimit": spec.backup.successful_jobs_history_limit,
        "failedJobsHistoryLimit": spec.backup.failed_jobs_history_limit,
        "jobTemplate": template,
    }
    if spec.backup.time_zone:
        cron_spec["timeZone"] = spec.backup.time_zone
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": L.metadata(owner, job_name, component),
        "spec": cron_spec,
    }


def build_cronjobs(owner: dict[str, Any], spec: OmenDBSpec, suspend: bool = False) -> list[dict[str, Any]]:
    """The three CronJobs; ``suspend`` holds them (a restore is in progress) whatever spec.backup says."""
    name, namespace = owner["metadata"]["name"], owner["metadata"]["namespace"]
    names = L.Names(name)
    b = spec.backup
    return [
        _cronjob(owner, spec, names.backup_full, "backup-full", b.full_schedule,
                 backup_command(name, namespace, spec, "full-backup"), suspend),
        _cronjob(owner, spec, names.backup_incremental, "backup-incremental", b.incremental_schedule,
                 backup_command(name, namespace, spec, "incremental-backup"), suspend),
        _cronjob(owner, spec, names.backup_cleanup, "backup-cleanup", b.cleanup_schedule,
                 backup_command(name, namespace, spec, "cleanup"), suspend),
    ]


def build_backup_volume(owner: dict[str, Any], spec: OmenDBSpec) -> dict[str, Any]:
    """The backup PVC. Owned by the OmenDB (so deleted with it) only when deleteOnDelete is set."""
    vol = spec.backup.volume
    pvc_spec: dict[str, Any] = {"accessModes": list(vol.access_modes),
                                "resources": {"requests": {"storage": vol.size}}}
    if vol.storage_class_name:
        pvc_spec["storageClassName"] = vol.storage_class_name
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": L.metadata(owner, L.Names(owner["metadata"]["name"]).backup_volume, "backup",
                               owned=vol.delete_on_delete),
        "spec": pvc_spec,
    }
