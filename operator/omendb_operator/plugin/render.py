"""What ``kubectl omendb status`` prints, from the objects read (pure: tests feed it API objects)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from omendb_operator import labels as L

RECENT_EVENTS = 10


def _age(stamp: str | None, now: dt.datetime) -> str:
    if not stamp:
        return "-"
    try:
        then = dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return stamp
    seconds = max(0, int((now - then).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def table(rows: list[list[str]]) -> list[str]:
    """Left-aligned columns two spaces apart, like kubectl's."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows]


def pod_row(pod: dict[str, Any], primary: str | None, replication: dict[str, Any]) -> list[str]:
    meta, status = pod["metadata"], pod.get("status") or {}
    name = meta["name"]
    labels = meta.get("labels") or {}
    role = labels.get("role") or labels.get(L.ROLE_LABEL) or ("primary" if name == primary else "replica")
    conds = {c["type"]: c["status"] for c in status.get("conditions") or []}
    ready = "yes" if conds.get("Ready") == "True" else "no"
    restarts = sum(int(c.get("restartCount", 0)) for c in status.get("containerStatuses") or [])
    # LSN and lag from status.pods (the operator reads each engine's /v1/stats).
    rep = replication.get(name) or {}
    lsn = str(rep["lsn"]) if "lsn" in rep else "-"
    if "lagSeconds" in rep or "lagLsn" in rep:
        lag = f"{rep.get('lagSeconds', '?')}s/{rep.get('lagLsn', '?')} LSN"
    else:
        lag = "-"
    return [name, role, ready, status.get("phase", "-"), str(restarts), lsn, lag]


def failover_line(status: dict[str, Any]) -> str:
    fo = status.get("failover") or {}
    phase = fo.get("phase", "Idle")
    if phase != "Idle":
        text = f"{fo.get('reason', '')} {phase}: {fo.get('from', '?')} -> {fo.get('to', '?')}"
        if fo.get("targetLsn") is not None:
            text += f" (LSN {fo['targetLsn']})"
    else:
        text = "Idle"
        if fo.get("primaryNotReadySince"):
            text += f", primary down since {fo['primaryNotReadySince']}"
    last = fo.get("last") or {}
    if last:
        text += (f"; last {last.get('reason')} {last.get('from')} -> {last.get('to')} at {last.get('at')} "
                 f"(LSN {last.get('lsn')}, term {last.get('term')})")
    if fo.get("message"):
        text += f"; {fo['message']}"
    return text


def operation_line(kind: str, status: dict[str, Any]) -> str:
    """One line about an OmenDBBackup or OmenDBRestore: phase, step, result or error, or what it waits for."""
    phase = status.get("phase") or "Pending"
    parts = [phase]
    if status.get("step"):
        parts.append(f"step {status['step']}")
    if status.get("backupId"):
        parts.append(f"backup {status['backupId']}")
    if status.get("sizeBytes") is not None and kind == "OmenDBBackup" and status.get("backupId"):
        parts.append(f"{status['sizeBytes']} bytes")
    if status.get("restoredLSN") is not None:
        parts.append(f"LSN {status['restoredLSN']}, {status.get('recordCount')} records")
    if phase == "Failed" and status.get("error"):
        parts.append(str(status["error"]))
    elif phase != "Succeeded":
        ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)
        if ready and ready.get("message"):
            parts.append(str(ready["message"]))
    return ": ".join([parts[0], ", ".join(parts[1:])]) if len(parts) > 1 else parts[0]


def status_text(omendb: dict[str, Any], pods: list[dict[str, Any]], events: list[dict[str, Any]],
                now: dt.datetime, operations: list[dict[str, Any]] | None = None) -> str:
    meta, spec, status = omendb["metadata"], omendb.get("spec") or {}, omendb.get("status") or {}
    out = [
        f"OmenDB {meta['namespace']}/{meta['name']}",
        f"  Phase:      {status.get('phase', 'Unknown (the operator has not reported yet)')}",
        f"  Version:    {status.get('currentVersion', '-')} (wanted {spec.get('version', '-')})",
        f"  Replicas:   {status.get('readyReplicas', 0)}/{spec.get('replicas', status.get('replicas', '-'))}"
        " ready",
        f"  Primary:    {status.get('primaryPod', '-')}",
        f"  Failover:   {failover_line(status)}",
    ]
    endpoints = status.get("endpoints") or {}
    if endpoints:
        out.append(f"  Endpoints:  primary {endpoints.get('primary', '-')}, "
                   f"read-only {endpoints.get('readOnly', '-')}")
    if status.get("credentialsSecret"):
        out.append(f"  Credentials: Secret {status['credentialsSecret']} (keys username, password)")
    last = status.get("lastBackup") or {}
    out.append("  Last backup: " + (", ".join(f"{kind} {last[kind]} ({_age(last[kind], now)} ago)"
                                              for kind in ("full", "incremental") if last.get(kind))
                                    or "none yet"))
    if last.get("id"):
        out.append(f"  Newest backup: {last['id']} ({last.get('type', '-')}, {last.get('sizeBytes', '-')} bytes)")
    if status.get("restore"):
        out.append(f"  Restore:    {status['restore'].get('name')} in progress (step {status['restore'].get('step')}; "
                   "pods held, scheduled backups suspended)")
    boot = status.get("bootstrap") or {}
    if boot:
        out.append(f"  Bootstrap:  {boot.get('phase')} ({boot.get('message') or boot.get('error') or ''})")
    if (status.get("observedGeneration") or 0) < (meta.get("generation") or 0):
        out.append(f"  Note: generation {meta.get('generation')} not yet processed "
                   f"(observed {status.get('observedGeneration', 0)})")

    out += ["", "Pods:"]
    if pods:
        replication = {str(r.get("name")): r for r in status.get("pods") or [] if isinstance(r, dict)}
        rows = [["NAME", "ROLE", "READY", "PHASE", "RESTARTS", "LSN", "LAG"]]
        rows += [pod_row(p, status.get("primaryPod"), replication)
                 for p in sorted(pods, key=lambda p: p["metadata"]["name"])]
        out += ["  " + line for line in table(rows)]
    else:
        out.append("  none")

    if operations:
        out += ["", "Backups and restores:"]
        rows = [["KIND", "NAME", "AGE", "STATUS"]]
        for op in sorted(operations, key=lambda o: str(o["metadata"].get("creationTimestamp") or ""))[-10:]:
            rows.append([op["kind"], op["metadata"]["name"], _age(op["metadata"].get("creationTimestamp"), now),
                         operation_line(op["kind"], op.get("status") or {})])
        out += ["  " + line for line in table(rows)]

    out += ["", "Conditions:"]
    conditions = status.get("conditions") or []
    if conditions:
        rows = [["TYPE", "STATUS", "REASON", "AGE", "MESSAGE"]]
        rows += [[c.get("type", "-"), c.get("status", "-"), c.get("reason", "-"),
                  _age(c.get("lastTransitionTime"), now), c.get("message", "")] for c in conditions]
        out += ["  " + line for line in table(rows)]
    else:
        out.append("  none")

    out += ["", f"Recent events (last {RECENT_EVENTS}):"]

    def when(e: dict[str, Any]) -> str:
        return str(e.get("lastTimestamp") or e.get("eventTime") or e["metadata"].get("creationTimestamp") or "")
    recent = sorted(events, key=when)[-RECENT_EVENTS:]
    if recent:
        rows = [["AGE", "TYPE", "REASON", "OBJECT", "MESSAGE"]]
        for e in recent:
            involved = e.get("involvedObject") or {}
            rows.append([_age(when(e), now), e.get("type", "-"), e.get("reason", "-"),
                         f"{involved.get('kind', '')}/{involved.get('name', '')}", (e.get("message") or "").strip()])
        out += ["  " + line for line in table(rows)]
    else:
        out.append("  none")
    return "\n".join(out) + "\n"
