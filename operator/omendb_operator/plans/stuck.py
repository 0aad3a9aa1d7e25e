"""Children that cannot make progress without a human: pods that cannot pull their image, crash in a
loop, cannot be created or scheduled, and Jobs whose pods cannot start. Pure: objects in, findings out.

Kubernetes retries all of these for ever (a pod in ImagePullBackOff never fails, so neither does its
Job), and the StatefulSet's or Job's own status only says "not ready" or "active". Reading the pods'
waiting reasons is how the OmenDB, OmenDBBackup and OmenDBRestore statuses name the object and the cause
within one reconcile (the operator requeues every few seconds while an operation runs) instead of
waiting for a timeout: the Degraded condition always, and Stalled when the resource cannot reach its spec
because of it (status.py, backups.py, restores.py).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from omendb_operator.specs import jobs
from omendb_operator.times import parse_time

# Container waiting reasons that do not clear by themselves: a human must fix the image, the command or
# the referenced Secret/ConfigMap. (ContainerCreating and PodInitializing are normal and not listed.)
STUCK_WAITING = ("ImagePullBackOff", "ErrImagePull", "InvalidImageName", "CrashLoopBackOff",
                 "CreateContainerConfigError", "CreateContainerError", "RunContainerError")
# An unschedulable pod may be waiting for a cluster autoscaler to add a node, which takes a minute or
# two; only one that stays unschedulable longer is reported.
UNSCHEDULABLE_GRACE = dt.timedelta(minutes=2)
# A Job that has created no pod at all this long after it was created: its pods are refused (a
# ResourceQuota, a LimitRange, an admission policy); the reason is only in its events.
NO_POD_GRACE = dt.timedelta(minutes=2)
MESSAGE_LIMIT = 300  # of a kubelet message, which can quote a whole registry answer


@dataclass(frozen=True)
class Stuck:
    """One child that cannot make progress: ``kind``/``name`` of the object to look at, ``reason`` (a
    kubelet or scheduler reason, or JobPodsNotCreated) and a message naming both."""

    kind: str
    name: str
    reason: str
    message: str


def _clip(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= MESSAGE_LIMIT else text[:MESSAGE_LIMIT - 3] + "..."


def stuck_pod(pod: dict[str, Any], now: dt.datetime) -> tuple[str, str] | None:
    """(reason, detail) when ``pod`` cannot make progress by itself, else None. Finished and deleted
    pods are never stuck."""
    meta, st = pod.get("metadata") or {}, pod.get("status") or {}
    if meta.get("deletionTimestamp") or st.get("phase") in ("Succeeded", "Failed"):
        return None
    statuses = [("init container", cs) for cs in st.get("initContainerStatuses") or []] + \
        [("container", cs) for cs in st.get("containerStatuses") or []]
    for what, cs in statuses:
        waiting = (cs.get("state") or {}).get("waiting") or {}
        reason = str(waiting.get("reason") or "")
        if reason in STUCK_WAITING:
            detail = f"{what} {cs.get('name')} is waiting: {reason}"
            if reason == "CrashLoopBackOff":
                last = (cs.get("lastState") or {}).get("terminated") or {}
                detail += f" (restarted {int(cs.get('restartCount') or 0)} times"
                if last:
                    detail += f", last exit code {last.get('exitCode')}"
                    if last.get("reason"):
                        detail += f" {last.get('reason')}"
                detail += ")"
            elif waiting.get("message"):
                detail += f" ({_clip(waiting['message'])})"
            if reason in ("ImagePullBackOff", "ErrImagePull", "InvalidImageName") and cs.get("image"):
                detail += f"; image {cs.get('image')}"
            return reason, detail
    for cond in st.get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False" and \
                cond.get("reason") == "Unschedulable":
            since = parse_time(cond.get("lastTransitionTime")) or parse_time(meta.get("creationTimestamp"))
            if since is not None and now - since < UNSCHEDULABLE_GRACE:
                return None
            return "Unschedulable", f"cannot be scheduled ({_clip(cond.get('message') or 'no reason given')})"
    return None


def find_stuck(pods: list[dict[str, Any]], job_list: list[dict[str, Any]], now: dt.datetime) -> list[Stuck]:
    """Every stuck child among ``pods`` (any: database pods and Jobs' pods) and ``job_list``, in name
    order. A Job's stuck pod is reported as the Job (the object the user created or that the operator
    names in its status) with the pod in the message; a Job that made no pod in NO_POD_GRACE too."""
    job_names = {str(j["metadata"]["name"]) for j in job_list}
    out: list[Stuck] = []
    pods_of_jobs: dict[str, int] = {}
    for pod in sorted(pods, key=lambda p: str(p["metadata"]["name"])):
        name = str(pod["metadata"]["name"])
        labels = pod["metadata"].get("labels") or {}
        job = labels.get("batch.kubernetes.io/job-name") or labels.get("job-name")
        if job:
            pods_of_jobs[job] = pods_of_jobs.get(job, 0) + 1
        found = stuck_pod(pod, now)
        if found is None:
            continue
        reason, detail = found
        if job and job in job_names:
            out.append(Stuck("Job", job, reason, f"Job {job}: pod {name} {detail}"))
        else:
            out.append(Stuck("Pod", name, reason, f"pod {name} {detail}"))
    for job in sorted(job_list, key=lambda j: str(j["metadata"]["name"])):
        name = str(job["metadata"]["name"])
        created = parse_time(job["metadata"].get("creationTimestamp"))
        st = job.get("status") or {}
        if jobs.job_running(job) and not job.get("spec", {}).get("suspend") and not pods_of_jobs.get(name) \
                and not st.get("active") and not st.get("failed") and not st.get("succeeded") \
                and created is not None and now - created >= NO_POD_GRACE:
            out.append(Stuck("Job", name, "JobPodsNotCreated",
                             f"Job {name} has created no pod in {int((now - created).total_seconds())}s (a "
                             f"ResourceQuota, LimitRange or admission policy may refuse it: "
                             f"`kubectl describe job {name}` shows why)"))
    # One line per object: a Job with several stuck pods is named once, with its first pod.
    seen: set[tuple[str, str]] = set()
    unique = []
    for s in out:
        if (s.kind, s.name) not in seen:
            seen.add((s.kind, s.name))
            unique.append(s)
    return unique


def recheck_after(pods: list[dict[str, Any]], job_list: list[dict[str, Any]], now: dt.datetime) -> float | None:
    """Seconds until the first grace period above ends for a pod or Job that may turn out stuck, else
    None: nothing changes on such an object when its grace ends, so no event would wake the operator."""
    ends = []
    for pod in pods:
        for cond in (pod.get("status") or {}).get("conditions") or []:
            if cond.get("type") == "PodScheduled" and cond.get("status") == "False" and \
                    cond.get("reason") == "Unschedulable":
                since = parse_time(cond.get("lastTransitionTime")) or parse_time(
                    pod["metadata"].get("creationTimestamp"))
                if since is not None and now - since < UNSCHEDULABLE_GRACE:
                    ends.append(since + UNSCHEDULABLE_GRACE)
    for job in job_list:
        created = parse_time(job["metadata"].get("creationTimestamp"))
        st = job.get("status") or {}
        if created is not None and now - created < NO_POD_GRACE and jobs.job_running(job) and not st.get("active") \
                and not st.get("failed") and not st.get("succeeded"):
            ends.append(created + NO_POD_GRACE)
    return max(1.0, (min(ends) - now).total_seconds() + 1) if ends else None


def summary(found: list[Stuck]) -> str:
    """One message for a condition: every finding, joined."""
    return "; ".join(s.message for s in found)
