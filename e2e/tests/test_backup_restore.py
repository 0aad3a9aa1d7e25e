"""Backups and restores in the local cluster (issue 7's journeys), with the operator running in the cluster.

One OmenDB (`src`, 1 pod, TLS and auth as by default) goes through, in file order: records written -> a
full OmenDBBackup -> more writes (two of them) -> an incremental OmenDBBackup -> OmenDBRestore of the full
backup -> contents equal that backup; a point-in-time restore of the incremental to the LSN between its
two writes, then to the commit time between them; a restore of a backup that does not exist fails and
leaves the data as it was, then a new restore (latest) succeeds; then a second OmenDB (`copy`) bootstraps
from `src`'s full backup. (A full backup's snapshot is the state at its end, so a point between two
writes needs a chain whose WAL holds them: the incremental's.)
Records are written and read inside the database pod with omendb.client (as the generated admin user,
over TLS verified against NAME-ca), so the test needs no network path into the cluster.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from e2e.kube import Kube

TIMEOUT = 420  # one restore: scale to 0, restore Job, start, verify, discard Job

# Run inside the database pod: `put START COUNT VALUE` prints the write's LSN and commit time (µs since the
# epoch, from /v1/stats); `dump` prints every record.
CLIENT = """
import json, os, sys
from omendb.client import Client
c = Client("https://localhost:3000", username=os.environ["U"], password=os.environ["P"],
           ca_file="/etc/omendb/tls/ca.crt")
if sys.argv[1] == "put":
    start, n, v = int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    lsn = c.put_many(list(range(start, start + n)), [v] * n)
    print(json.dumps({"lsn": lsn, "commit_us": c.stats()["last_commit_us"]}))
else:
    keys, values = c.range(-2**63)
    print(json.dumps({"records": {str(int(k)): float(v) for k, v in zip(keys, values)}, "lsn": c.lsn()}))
"""


@dataclass
class Db:
    namespace: str
    name: str = "src"
    backup_id: str = ""  # the full backup
    at_backup: dict[str, float] = field(default_factory=dict)  # contents when the full backup was taken
    incremental_id: str = ""
    at_incremental: dict[str, float] = field(default_factory=dict)
    lsn_between: int = 0  # the LSN of the first of two writes, both in the incremental backup
    time_between: str = ""  # its commit time (RFC 3339, to the microsecond)
    last_commit_us: int = 0


def _omendb(name: str, **extra: Any) -> dict[str, Any]:
    return {"apiVersion": "omendb.io/v1alpha1", "kind": "OmenDB", "metadata": {"name": name},
            "spec": {"version": "0.1.0", "replicas": 1,
                     "storage": {"data": {"size": "256Mi"}, "wal": {"size": "256Mi"}},
                     "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
                     "monitoring": {"prometheusRule": False, "serviceMonitor": False},
                     "backup": {"volume": {"size": "512Mi", "deleteOnDelete": True}}, **extra}}


def _credentials(kube: Kube, ns: str, name: str) -> tuple[str, str]:
    data = kube.get(ns, "secret", f"{name}-users")["data"]
    return base64.b64decode(data["username"]).decode(), base64.b64decode(data["password"]).decode()


def _client(kube: Kube, ns: str, name: str, *args: str) -> Any:
    user, password = _credentials(kube, ns, name)
    out = kube.kubectl("-n", ns, "exec", f"{name}-0", "-c", "omendb", "--", "env", f"U={user}", f"P={password}",
                       "python3", "-c", CLIENT, *args, timeout=120).stdout
    return json.loads(out.strip().splitlines()[-1])


def _put(kube: Kube, d: Db, start: int, count: int, value: float) -> int:
    """Write; returns the LSN (and records the commit time of the last write in d.last_commit_us)."""
    answer = _client(kube, d.namespace, d.name, "put", str(start), str(count), str(value))
    d.last_commit_us = int(answer["commit_us"])
    return int(answer["lsn"])


def _contents(kube: Kube, ns: str, name: str) -> dict[str, float]:
    return dict(_client(kube, ns, name, "dump")["records"])


def _expected(*writes: tuple[int, int, float]) -> dict[str, float]:
    out: dict[str, float] = {}
    for start, count, value in writes:
        out.update({str(k): value for k in range(start, start + count)})
    return out


def _wait_ready(kube: Kube, ns: str, name: str) -> None:
    kube.kubectl("wait", "-n", ns, "--for=condition=Ready", f"omendb/{name}", "--timeout=300s", timeout=320)


def _wait_phase(kube: Kube, ns: str, kind: str, name: str, phases: tuple[str, ...],
                timeout: float = TIMEOUT) -> dict[str, Any]:
    def finished() -> dict[str, Any] | None:
        obj = kube.get(ns, kind, name)
        return obj if (obj.get("status") or {}).get("phase") in phases else None
    result: dict[str, Any] = kube.wait_until(f"{kind}/{name} phase in {phases}", finished, timeout, interval=2)
    return result


def _restore(kube: Kube, d: Db, name: str, **spec: Any) -> dict[str, Any]:
    kube.apply(d.namespace, {"apiVersion": "omendb.io/v1alpha1", "kind": "OmenDBRestore",
                             "metadata": {"name": name}, "spec": {"cluster": {"name": d.name}, **spec}})
    return _wait_phase(kube, d.namespace, "omendbrestore", name, ("Succeeded", "Failed"))


@pytest.fixture(scope="module")
def db(kube: Kube, operator: str, journey_namespace: str) -> Iterator[Db]:
    d = Db(journey_namespace)
    kube.apply(d.namespace, _omendb(d.name))
    yield d


def _backup(kube: Kube, d: Db, name: str, kind: str) -> dict[str, Any]:
    kube.apply(d.namespace, {"apiVersion": "omendb.io/v1alpha1", "kind": "OmenDBBackup", "metadata": {"name": name},
                             "spec": {"cluster": {"name": d.name}, "type": kind}})
    status: dict[str, Any] = _wait_phase(kube, d.namespace, "omendbbackup", name, ("Succeeded", "Failed"))["status"]
    assert status["phase"] == "Succeeded", status
    assert status["backupId"].endswith("-full" if kind == "full" else "-incr"), status
    assert status["sizeBytes"] > 0 and status["startedAt"] and status["completedAt"]
    job = kube.get(d.namespace, "job", f"{name}-backup")
    assert job["metadata"]["labels"]["app.kubernetes.io/component"] == "backup"
    assert job["metadata"]["ownerReferences"][0]["kind"] == "OmenDBBackup"
    kube.wait_until("status.lastBackup of the OmenDB", lambda: (kube.get(d.namespace, "omendb", d.name)[
        "status"].get("lastBackup") or {}).get("id") == status["backupId"], 60, interval=2)
    return status


def test_backup_more_writes_restore_gives_the_backup_back(kube: Kube, db: Db) -> None:
    _wait_ready(kube, db.namespace, db.name)
    _put(kube, db, 0, 100, 1.0)
    _put(kube, db, 100, 100, 2.0)
    db.at_backup = _expected((0, 100, 1.0), (100, 100, 2.0))
    assert _contents(kube, db.namespace, db.name) == db.at_backup
    db.backup_id = _backup(kube, db, "full", "full")["backupId"]

    db.lsn_between = _put(kube, db, 200, 50, 3.0)
    db.time_between = (dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=db.last_commit_us)
                       ).isoformat().replace("+00:00", "Z")
    _put(kube, db, 0, 10, 9.0)
    db.at_incremental = _expected((0, 100, 1.0), (100, 100, 2.0), (200, 50, 3.0), (0, 10, 9.0))
    assert _contents(kube, db.namespace, db.name) == db.at_incremental
    db.incremental_id = _backup(kube, db, "incremental", "incremental")["backupId"]

    restore = _restore(kube, db, "to-the-full-backup", backupId=db.backup_id)
    assert restore["status"]["phase"] == "Succeeded", restore["status"]
    assert restore["status"]["recordCount"] == 200 and restore["status"]["backupId"] == db.backup_id
    _wait_ready(kube, db.namespace, db.name)
    assert _contents(kube, db.namespace, db.name) == db.at_backup
    odb = kube.get(db.namespace, "omendb", db.name)
    assert "restore" not in odb["status"], "the restore marker must go when the restore is done"
    for cron in ("full", "incremental"):
        assert kube.get(db.namespace, "cronjob", f"{db.name}-backup-{cron}")["spec"]["suspend"] is False
    reasons = kube.kubectl("-n", db.namespace, "get", "events", "--field-selector",
                           "involvedObject.name=to-the-full-backup", "-o",
                           "jsonpath={.items[*].reason}").stdout.split()
    for reason in ("RestoreScaleDown", "RestoreRestore", "RestoreScaleUp", "RestoreVerify", "RestoreSucceeded"):
        assert reason in reasons, reasons


def test_point_in_time_restore_to_an_lsn_between_two_writes(kube: Kube, db: Db) -> None:
    restore = _restore(kube, db, "to-lsn", backupId=db.incremental_id, pointInTime={"lsn": db.lsn_between})
    assert restore["status"]["phase"] == "Succeeded", restore["status"]
    assert restore["status"]["restoredLSN"] == db.lsn_between
    _wait_ready(kube, db.namespace, db.name)
    assert _contents(kube, db.namespace, db.name) == _expected((0, 100, 1.0), (100, 100, 2.0), (200, 50, 3.0))


def test_point_in_time_restore_to_a_time_between_two_writes(kube: Kube, db: Db) -> None:
    _put(kube, db, 900, 5, 7.0)  # something to replace
    restore = _restore(kube, db, "to-time", backupId="latest", pointInTime={"time": db.time_between})
    assert restore["status"]["phase"] == "Succeeded", restore["status"]
    assert restore["status"]["backupId"] == db.incremental_id and restore["status"]["restoredLSN"] == db.lsn_between
    _wait_ready(kube, db.namespace, db.name)
    assert _contents(kube, db.namespace, db.name) == _expected((0, 100, 1.0), (100, 100, 2.0), (200, 50, 3.0))


def test_failed_restore_leaves_the_data_then_a_new_restore_succeeds(kube: Kube, db: Db) -> None:
    _put(kube, db, 500, 10, 5.0)
    before = _contents(kube, db.namespace, db.name)
    failed = _restore(kube, db, "no-such-backup", backupId="src-20000101T000000000Z-full")
    status = failed["status"]
    assert status["phase"] == "Failed", status
    assert "no backup" in status["error"] and "previous data is back in place" in status["error"], status
    _wait_ready(kube, db.namespace, db.name)
    assert _contents(kube, db.namespace, db.name) == before
    assert "restore" not in kube.get(db.namespace, "omendb", db.name)["status"]

    retry = _restore(kube, db, "latest-after-failure")  # backupId defaults to latest: the incremental
    assert retry["status"]["phase"] == "Succeeded", retry["status"]
    assert retry["status"]["backupId"] == db.incremental_id
    _wait_ready(kube, db.namespace, db.name)
    assert _contents(kube, db.namespace, db.name) == db.at_incremental


def test_bootstrap_a_second_omendb_from_the_first_ones_backup(kube: Kube, db: Db) -> None:
    kube.apply(db.namespace, _omendb("copy", bootstrap={"fromBackup": {"cluster": {"name": db.name},
                                                                       "backupId": db.backup_id}}))
    _wait_ready(kube, db.namespace, "copy")
    boot = kube.get(db.namespace, "omendb", "copy")["status"]["bootstrap"]
    assert boot["phase"] == "Succeeded" and boot["backupId"] == db.backup_id and boot["recordCount"] == 200, boot
    assert _contents(kube, db.namespace, "copy") == db.at_backup
