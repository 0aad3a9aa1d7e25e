"""Jobs of backups and restores (pure builders) and what the operator reads back from them.

Every Job here is the CronJobs' Job (cronjobs.job_template: image, credentials, CA, backup volume,
restricted security context, scheduling) with its own command, labels and, for restores, the database
volumes of one pod. Results travel back in the container's termination message: backup_tool writes one
JSON object to /dev/termination-log (``--result-file``), and on a failure without a result the kubelet
puts the end of the log there (terminationMessagePolicy FallbackToLogsOnError), which becomes the error.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from dataclasses import dataclass
from typing import Any

from omendb_operator import labels as L
from omendb_operator.spec import OmenDBSpec
from omendb_operator.specs import cronjobs
from omendb_operator.specs.backup_key import key_volume
from omendb_operator.specs.configmap import DATA_DIR, WAL_DIR
from omendb_operator.specs.security import writable_env

BACKUP_LABEL = f"{L.GROUP}/backup"  # on an OmenDBBackup's Job: the OmenDBBackup's name
RESTORE_LABEL = f"{L.GROUP}/restore"  # on an OmenDBRestore's Jobs: the OmenDBRestore's name
ACTION_LABEL = f"{L.GROUP}/restore-action"  # restore, set-aside, put-back or discard
COMPONENT_RESTORE = "restore"
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
MAX_NAME = 63  # Job names end up in the job-name label of their pods

# Where a restore keeps the data it replaces, in the data and WAL volumes (a rename, never a copy), until
# the restored database has been verified (omendb.backup.restore.SET_ASIDE: backup_tool leaves it alone).
SET_ASIDE = ".restore-saved"

# The restore Jobs' program (POSIX sh in the engine image). Every action can be rerun after a crash:
# set_aside marks a directory done (.complete) only after every entry moved; put_back deletes what a
# restore wrote only while .complete is there, renames it to .putting-back, then moves the saved entries
# back; LOCK (the engine's lock file) and lost+found stay where they are. An empty data directory gets a
# LOCK so backup_tool reads --data-dir as the data directory, not as the parent of data/ and wal/.
RESTORE_SCRIPT = f"set -eu\nS={SET_ASIDE} D={DATA_DIR} W={WAL_DIR}\n" + r"""
entries() { for f in "$1"/* "$1"/.[!.]* "$1"/..?*; do [ -e "$f" ] && printf '%s\n' "$f"; done; return 0; }
set_aside() {
  [ -f "$1/$S/.complete" ] && return 0
  mkdir -p "$1/$S"
  entries "$1" | while IFS= read -r f; do
    case "${f##*/}" in "$S"|LOCK|lost+found) ;; *) mv "$f" "$1/$S/" ;; esac
  done
  sync; touch "$1/$S/.complete"; sync
  echo "set aside the previous contents of $1 in $1/$S"
}
put_back() {
  [ -d "$1/$S" ] || { echo "nothing set aside in $1"; return 0; }
  if [ -f "$1/$S/.complete" ]; then
    entries "$1" | while IFS= read -r f; do
      case "${f##*/}" in "$S"|LOCK|lost+found) ;; *) rm -rf "$f" ;; esac
    done
    sync; mv "$1/$S/.complete" "$1/$S/.putting-back"
  fi
  entries "$1/$S" | while IFS= read -r f; do
    case "${f##*/}" in .putting-back) ;; *) mv "$f" "$1/" ;; esac
  done
  sync; rm -f "$1/$S/.putting-back"; rmdir "$1/$S"; sync
  echo "put the previous contents of $1 back"
}
action=$1; shift
case "$action" in
  set-aside) set_aside "$D"; set_aside "$W" ;;
  restore) set_aside "$D"; set_aside "$W"; touch "$D/LOCK"; exec "$@" ;;
  put-back) put_back "$D"; put_back "$W" ;;
  discard) rm -rf "$D/$S" "$W/$S"; sync; echo "deleted the data set aside by the restore" ;;
  *) echo "unknown action $action" >&2; exit 2 ;;
esac
"""

RESTORE_ACTIONS = ("restore", "set-aside", "put-back", "discard")


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
    """What to restore: a backup (id or latest) of a backup volume, optionally to a time or an LSN."""

    backup_id: str = "latest"
    lsn: int | None = None
    time: str | None = None
    backups_claim: str | None = None  # default: the OmenDB's own NAME-backups
    key_secret: str | None = None  # the key of those backups; default: the OmenDB's own NAME-backup-key
    allow_unkeyed: bool = False  # OmenDBRestore spec.allowUnkeyed: also accept a backup made without a key

    def argv(self) -> list[str]:
        out = ["--backup-id", self.backup_id or "latest"]
        if self.lsn is not None:
            out += ["--to-lsn", str(self.lsn)]
        elif self.time:
            out += ["--to-time", self.time]
        if self.allow_unkeyed:
            out.append("--allow-unkeyed")
        return out


def restore_job(owner: dict[str, Any], spec: OmenDBSpec, job_owner: dict[str, Any], base: str, action: str,
                ordinal: int, target: RestoreTarget, labels: dict[str, str]) -> dict[str, Any]:
    """A Job doing ``action`` (RESTORE_ACTIONS) on the data and WAL volumes of pod ``ordinal``
    (``data-NAME-i``, ``wal-NAME-i``), with the backup volume mounted for ``restore``.

    ``discard`` runs while the database runs (the restore succeeded): it is placed on the node of the pod
    using the volumes (podAffinity), as ReadWriteOnce volumes are shared only on one node."""
    if action not in RESTORE_ACTIONS:
        raise ValueError(f"unknown restore action {action!r}")
    name = owner["metadata"]["name"]
    names = L.Names(name)
    command = ["sh", "-c", RESTORE_SCRIPT, "restore-job", action]
    if action == "restore":
        command += ["backup_tool", "--data-dir", DATA_DIR, "--wal-dir", WAL_DIR, "--backup-dir",
                    cronjobs.BACKUP_DIR, "--result-file", cronjobs.RESULT_FILE, "--lock-timeout", "60",
                    "restore", *target.argv(), "--force"]
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
        mounts.append({"name": "backups", "mountPath": cronjobs.BACKUP_DIR})
        volumes.append({"name": "backups", "persistentVolumeClaim": {
            "claimName": target.backups_claim or names.backup_volume}})
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


def parse_result(message: str | None) -> dict[str, Any] | None:
    """backup_tool's --result-file JSON (the last line of the message), or None."""
    if not message:
        return None
    for line in reversed(message.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except ValueError:
                return None
            return value if isinstance(value, dict) else None
    return None


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
    if command[:2] == ["sh", "-c"]:
        command = command[3:]
    return " ".join(shlex.quote(c) for c in command)
