"""The rolling upgrade as a resumable state machine whose state is ``status.upgrade``. Pure.

A version (image) change goes: ``Pending`` (waits while a backup Job of the cluster runs) ->
``BackingUp`` (an OmenDBBackup of type full, waited on until it Succeeded; ``BackupFailed`` blocks) ->
``RollingOut`` (the new image in the StatefulSet; rollout.py picks the pods one at a time) ->
``Succeeded``. A replaced pod not Ready and healthy within ``spec.upgrade.timeout`` turns the upgrade into
``RollingBack`` (the previous image again, the broken pod replaced first) -> ``RolledBack``; the failed
image is remembered (``failedImage``) so the operator does not retry it until the spec names another.
A pod template change without a new image (config, resources) is a ``Template`` rollout: the same
one-at-a-time replacement, no backup, and ``Halted`` instead of a rollback (the old template is gone
from the spec) until the spec changes again. Setting the version back to ``fromImage`` aborts.

Two pure steps per reconcile: :func:`plan_upgrade` before the children are built (it decides which image
the StatefulSet gets) and :func:`plan_after_rollout` after they are applied (it turns the rollout
planner's step into pod deletions and status). Everything they need is passed in, so an operator that
restarts anywhere reads the same status and continues.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass, field
from typing import Any

from omendb_operator.plans.rollout import RolloutStep
from omendb_operator.times import parse_time, timestamp

PENDING = "Pending"
BACKING_UP = "BackingUp"
BACKUP_FAILED = "BackupFailed"
ROLLING_OUT = "RollingOut"
ROLLING_BACK = "RollingBack"
HALTED = "Halted"
SUCCEEDED = "Succeeded"
ROLLED_BACK = "RolledBack"
ABORTED = "Aborted"

VERSION = "Version"
TEMPLATE = "Template"

BEFORE_ROLLOUT = (PENDING, BACKING_UP, BACKUP_FAILED)
ACTIVE = (*BEFORE_ROLLOUT, ROLLING_OUT, ROLLING_BACK, HALTED)

Event = tuple[str, str, str]  # (type, reason, message)


@dataclass(frozen=True)
class UpgradeInputs:
    name: str
    spec_image: str
    spec_version: str  # how status.currentVersion names the spec's image: spec.version, or spec.image
    live_image: str | None  # the image in the live StatefulSet's template; None before it exists
    current_version: str | None  # status.currentVersion
    previous: dict[str, Any] | None  # status.upgrade
    now: dt.datetime
    hibernated: bool = False
    backup_wanted: bool = True
    backup_phase: str | None = None  # of the OmenDBBackup previous["backupName"]; None when it does not exist
    backup_error: str = ""
    active_backup_jobs: tuple[str, ...] = ()
    watched_ok: bool = True  # status.upgrade.pod is on the update revision, Ready and answers /health
    timeout_seconds: int = 600


@dataclass
class UpgradePlan:
    state: dict[str, Any] | None  # the new status.upgrade
    image: str  # the image the StatefulSet gets now
    version: str  # how currentVersion names that image
    rollout_allowed: bool = True  # whether pods may be replaced in this reconcile
    create_backup: str | None = None  # OmenDBBackup to create
    events: list[Event] = field(default_factory=list)
    waiting: str | None = None  # why the operation waits (for the Progressing condition)


def backup_name(name: str, from_image: str, to_image: str, started: str) -> str:
    digest = hashlib.sha256(f"{from_image}\0{to_image}\0{started}".encode()).hexdigest()[:8]
    return f"{name}-pre-upgrade-{digest}"


def _finish(st: dict[str, Any], phase: str, now: dt.datetime, message: str) -> None:
    st.update(phase=phase, finishedAt=timestamp(now), message=message)
    st.pop("pod", None)
    st.pop("podReplacedAt", None)


def plan_upgrade(inp: UpgradeInputs) -> UpgradePlan:
    """Phase transitions that decide the StatefulSet's image (run before the children are built)."""
    st: dict[str, Any] = dict(inp.previous or {})
    events: list[Event] = []
    failed = st.get("failedImage")
    if failed and failed != inp.spec_image:
        st.pop("failedImage")  # the spec names another image: the failed one may be retried later
        failed = None
    live_image = inp.live_image
    if live_image is None:
        if st.get("kind") != VERSION or not (st.get("phase") in ACTIVE or failed):
            return UpgradePlan(st or None, inp.spec_image, inp.spec_version)
        # The StatefulSet is being recreated (volume expansion) in the middle of an upgrade: what it ran
        # is in the state, so the backup and the rollback still hold.
        live_image = str(st["toImage"] if st.get("phase") == ROLLING_OUT else st["fromImage"])
    live_version = inp.current_version or live_image
    if inp.hibernated:
        # No pod runs: keep the image the volumes were last used with; an upgrade starts at wake-up, with
        # its backup and rollback, rather than letting new pods start on an untested version.
        return UpgradePlan(st or None, live_image, live_version, rollout_allowed=False)

    phase = st.get("phase")
    active = st.get("kind") == VERSION and phase in ACTIVE
    if active and inp.spec_image != st.get("toImage"):
        if inp.spec_image == st.get("fromImage"):
            if phase in BEFORE_ROLLOUT:
                _finish(st, ABORTED, inp.now, f"spec set back to {st.get('fromVersion')} before any pod was "
                                              "replaced")
                events.append(("Normal", "UpgradeAborted", str(st["message"])))
            elif phase != ROLLING_BACK:
                st.update(phase=ROLLING_BACK, message=f"aborted: spec set back to {st.get('fromVersion')}; "
                                                      "replacing the upgraded pods with it")
                events.append(("Normal", "UpgradeAborted", str(st["message"])))
        else:
            st.update(toImage=inp.spec_image, toVersion=inp.spec_version,
                      message=f"target changed to {inp.spec_version}")
            if phase in (ROLLING_BACK, HALTED):
                st["phase"] = ROLLING_OUT
                st.pop("podReplacedAt", None)
            events.append(("Normal", "UpgradeRetargeted", f"upgrade now goes to {inp.spec_version}"))
    elif not active and inp.spec_image != live_image and not failed:
        started = timestamp(inp.now)
        st = {"phase": PENDING, "kind": VERSION, "fromImage": live_image, "toImage": inp.spec_image,
              "fromVersion": live_version, "toVersion": inp.spec_version, "startedAt": started,
              "backupName": backup_name(inp.name, live_image, inp.spec_image, started),
              "message": f"upgrade from {live_version} to {inp.spec_version} requested"}
        events.append(("Normal", "UpgradeStarted", f"upgrading from {live_version} to {inp.spec_version}"))

    plan = UpgradePlan(st or None, inp.spec_image, inp.spec_version, events=events)
    phase = st.get("phase")
    if st.get("kind") == VERSION and phase in ACTIVE:
        _advance(inp, st, plan)
        phase = st["phase"]
    elif st.get("kind") == TEMPLATE and phase == ROLLING_OUT:
        _check_timeout(inp, st, plan)
    if st.get("kind") == VERSION and phase in (*BEFORE_ROLLOUT, ROLLING_BACK):
        plan.image, plan.version = st["fromImage"], st.get("fromVersion") or st["fromImage"]
    elif st.get("kind") == VERSION and phase == ROLLING_OUT:
        plan.image, plan.version = st["toImage"], st.get("toVersion") or st["toImage"]
    elif failed:
        plan.image, plan.version = live_image, live_version
    plan.rollout_allowed = phase not in BEFORE_ROLLOUT
    return plan


def _advance(inp: UpgradeInputs, st: dict[str, Any], plan: UpgradePlan) -> None:
    to = st.get("toVersion")
    if st["phase"] == PENDING:
        if inp.active_backup_jobs:
            plan.waiting = (f"waiting for backup Job {', '.join(inp.active_backup_jobs)} to finish before "
                            f"upgrading to {to}")
            st["message"] = plan.waiting
            return
        if inp.backup_wanted:
            st.update(phase=BACKING_UP, message=f"taking the pre-upgrade backup {st['backupName']}")
        else:
            st.update(phase=ROLLING_OUT, message=f"rolling out {to} (no pre-upgrade backup: "
                                                 "spec.upgrade.backupBeforeUpgrade or spec.backup.enabled is false)")
            st.pop("backupName", None)
            plan.events.append(("Warning", "UpgradeWithoutBackup", str(st["message"])))
            return
    if st["phase"] in (BACKING_UP, BACKUP_FAILED):
        backup = st.get("backupName")
        if not inp.backup_wanted or not backup:
            st.update(phase=ROLLING_OUT, message=f"rolling out {to} without waiting for the backup "
                                                 "(spec.upgrade.backupBeforeUpgrade is false)")
            plan.events.append(("Warning", "UpgradeWithoutBackup", str(st["message"])))
        elif inp.backup_phase is None:
            plan.create_backup = backup
            st.update(phase=BACKING_UP, message=f"taking the pre-upgrade backup {backup}")
            plan.events.append(("Normal", "PreUpgradeBackup", f"created OmenDBBackup {backup} (full) before "
                                                             f"upgrading to {to}"))
            plan.waiting = st["message"]
        elif inp.backup_phase == "Succeeded":
            if inp.active_backup_jobs:
                plan.waiting = (f"backup {backup} succeeded; waiting for backup Job "
                                f"{', '.join(inp.active_backup_jobs)} to finish")
                st["message"] = plan.waiting
                return
            st.update(phase=ROLLING_OUT, message=f"backup {backup} succeeded; rolling out {to}")
            plan.events.append(("Normal", "UpgradeRollingOut", str(st["message"])))
        elif inp.backup_phase == "Failed":
            message = (f"the pre-upgrade backup {backup} failed ({inp.backup_error or 'see its status'}); the "
                       f"upgrade to {to} is blocked. Retry with `kubectl delete omendbbackup {backup}`, or set "
                       "spec.upgrade.backupBeforeUpgrade: false to upgrade without it")
            if st["phase"] != BACKUP_FAILED:
                plan.events.append(("Warning", "UpgradeBlocked", message))
            st.update(phase=BACKUP_FAILED, message=message)
        else:
            plan.waiting = f"waiting for the pre-upgrade backup {backup} ({inp.backup_phase or 'Pending'})"
            st["message"] = plan.waiting
    if st["phase"] == ROLLING_OUT:
        _check_timeout(inp, st, plan)


def _check_timeout(inp: UpgradeInputs, st: dict[str, Any], plan: UpgradePlan) -> None:
    since = parse_time(st.get("podReplacedAt"))
    if not st.get("pod") or since is None or inp.watched_ok:
        return
    if (inp.now - since).total_seconds() <= inp.timeout_seconds:
        return
    pod, limit = st["pod"], inp.timeout_seconds
    if st.get("kind") == VERSION:
        message = (f"pod {pod} was not Ready and healthy on {st.get('toVersion')} within {limit}s "
                   f"(spec.upgrade.timeout); rolling back to {st.get('fromVersion')}. The data volumes are "
                   "untouched")
        st.update(phase=ROLLING_BACK, failedImage=st["toImage"], message=message)
        st.pop("podReplacedAt", None)
        plan.events.append(("Warning", "UpgradeRollingBack", message))
    else:
        message = (f"pod {pod} was not Ready and healthy within {limit}s after a pod template change; the "
                   "rollout is halted (the other pods keep running). Fix the spec; the next change resumes it")
        st.update(phase=HALTED, message=message)
        plan.events.append(("Warning", "RolloutHalted", message))


@dataclass
class RolloutActions:
    state: dict[str, Any] | None
    delete_pod: str | None = None
    switchover_pod: str | None = None
    switchover_target: str | None = None
    events: list[Event] = field(default_factory=list)
    waiting: str | None = None


def plan_after_rollout(state: dict[str, Any] | None, step: RolloutStep, revision: str | None, image: str,
                       version: str, now: dt.datetime, rollout_allowed: bool,
                       active_backup_jobs: tuple[str, ...] = ()) -> RolloutActions:
    """Turn the rollout planner's step into the pod to delete (or switch over from) and the new state."""
    st: dict[str, Any] = dict(state or {})
    out = RolloutActions(st or None)
    phase = st.get("phase")
    if not rollout_allowed or (phase == HALTED and st.get("revision") == revision):
        return out
    if step.action == "done":
        if phase == ROLLING_OUT:
            _finish(st, SUCCEEDED, now, f"every pod runs {version}")
            reason = "UpgradeSucceeded" if st.get("kind") == VERSION else "RolloutSucceeded"
            out.events.append(("Normal", reason, str(st["message"])))
        elif phase == ROLLING_BACK:
            if st.get("failedImage"):
                _finish(st, ROLLED_BACK, now, f"rolled back to {version}; {st.get('toVersion')} never became "
                                              "Ready. Set spec.version (or spec.image) to a working release "
                                              "to try again")
                out.events.append(("Warning", "UpgradeRolledBack", str(st["message"])))
            else:
                _finish(st, ABORTED, now, f"aborted; every pod runs {version} again")
                out.events.append(("Normal", "UpgradeAborted", str(st["message"])))
        elif phase == HALTED:
            _finish(st, SUCCEEDED, now, f"every pod runs revision {revision}")
        out.state = st or None
        return out
    if step.action == "wait":
        if phase in (ROLLING_OUT, ROLLING_BACK):
            out.waiting = step.reason
        return out
    # delete or switchover: a rollout is needed
    if phase not in (ROLLING_OUT, ROLLING_BACK):
        keep = {k: st[k] for k in ("failedImage",) if k in st}
        st = {"phase": ROLLING_OUT, "kind": TEMPLATE, "fromImage": image, "toImage": image,
              "fromVersion": version, "toVersion": version, "startedAt": timestamp(now), **keep,
              "message": "the pod template changed; replacing pods one at a time, the primary last"}
        out.events.append(("Normal", "RolloutStarted", str(st["message"])))
    st["revision"] = revision
    out.state = st
    if active_backup_jobs:
        out.waiting = f"waiting for backup Job {', '.join(active_backup_jobs)} to finish before replacing a pod"
        st["message"] = out.waiting
        return out
    if step.action == "switchover":
        out.switchover_pod, out.switchover_target = step.pod, step.target
        out.waiting = step.reason
        return out
    st.update(pod=step.pod, podReplacedAt=timestamp(now), message=f"replacing pod {step.pod} ({step.reason})")
    out.delete_pod = step.pod
    out.events.append(("Normal", "ReplacingPod", str(st["message"])))
    return out


def upgrade_condition(state: dict[str, Any] | None) -> tuple[str, str, str]:
    """(status, reason, message) of the UpgradeHealthy condition."""
    st = state or {}
    phase = st.get("phase")
    message = str(st.get("message") or "")
    if phase == BACKUP_FAILED:
        return "False", "BackupFailed", message
    if phase == ROLLING_BACK:
        return "False", "RollingBack", message
    if phase == HALTED:
        return "False", "RolloutHalted", message
    if st.get("failedImage"):
        return "False", "RolledBack", message
    if phase in ACTIVE:
        return "True", "UpgradeInProgress", message
    if phase:
        return "True", f"Upgrade{phase}" if phase != SUCCEEDED else "UpgradeSucceeded", message
    return "True", "NoUpgrade", "no upgrade has run"
