"""Day-2 journeys of one OmenDB in the local cluster, with the operator running in it (issue 7).

In file order, one OmenDB (one pod, small volumes, imagePullPolicy Never: the cluster has no registry):
write 300 records -> upgrade 0.1.0 -> 0.1.1 (the same engine loaded under a second tag by
e2e/images.py): every record readable, the new version in status and in the pod -> an image that never
becomes Ready: rolled back after spec.upgrade.timeout with the records intact -> hibernate (no pod, the
volumes kept) and wake with the records intact.

The first upgrades opt out of the pre-upgrade backup (spec.upgrade.backupBeforeUpgrade: false) to keep the
journey short; test_upgrade_takes_a_backup_first is the journey with the backup (the default).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e.kube import Kube

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "manifests" / "samples" / "omendb-development.yaml"
RECORDS = 300

# Writes or reads RECORDS records through the pod's own API, as the generated admin user over TLS.
CLIENT = """
import sys
from omendb.client import Client
c = Client("https://localhost:3000", username="admin", password=sys.argv[2], ca_file="/etc/omendb/tls/ca.crt")
n = int(sys.argv[3])
if sys.argv[1] == "write":
    c.put_many(list(range(n)), [k * 0.5 for k in range(n)])
values, found = c.get_many(list(range(n)))
ok = sum(1 for k, (v, f) in enumerate(zip(values.tolist(), found.tolist())) if f and v == k * 0.5)
print(f"records {c.count()} readable {ok}")
"""


@dataclass(frozen=True)
class Db:
    namespace: str
    name: str


def _odb(kube: Kube, d: Db) -> dict[str, Any]:
    return kube.get(d.namespace, "omendb", d.name)


def _status(kube: Kube, d: Db) -> dict[str, Any]:
    return _odb(kube, d).get("status") or {}


def _patch(kube: Kube, d: Db, spec: dict[str, Any]) -> None:
    kube.kubectl("-n", d.namespace, "patch", "omendb", d.name, "--type=merge", "-p", json.dumps({"spec": spec}))


def _pod(kube: Kube, d: Db) -> dict[str, Any] | None:
    return kube.get_or_none(d.namespace, "pod", f"{d.name}-0")


def _ready(pod: dict[str, Any] | None) -> bool:
    return bool(pod) and not pod["metadata"].get("deletionTimestamp") and any(  # type: ignore[index]
        c["type"] == "Ready" and c["status"] == "True" for c in pod.get("status", {}).get("conditions", []))  # type: ignore[union-attr]


def _records(kube: Kube, d: Db, mode: str = "read") -> str:
    secret = kube.get(d.namespace, "secret", f"{d.name}-users")
    password = base64.b64decode(secret["data"]["password"]).decode()
    out = kube.kubectl("-n", d.namespace, "exec", f"{d.name}-0", "-c", "omendb", "--", "python", "-c", CLIENT,
                       mode, password, str(RECORDS), timeout=120)
    return out.stdout.strip()


def _condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions", []) if c["type"] == type_), {})


def _reasons(kube: Kube, d: Db) -> list[str]:
    events = json.loads(kube.kubectl("-n", d.namespace, "get", "events", "-o", "json").stdout)["items"]
    return [e["reason"] for e in events if e["involvedObject"].get("name") == d.name]


@pytest.fixture(scope="module")
def db(kube: Kube, operator: str, journey_namespace: str) -> Iterator[Db]:
    doc = yaml.safe_load(SAMPLE.read_text())
    doc["metadata"]["name"] = "up"
    doc["spec"].update(imagePullPolicy="Never", upgrade={"backupBeforeUpgrade": False},
                       monitoring={"prometheusRule": False, "serviceMonitor": False})
    doc["spec"]["backup"]["volume"]["deleteOnDelete"] = True
    d = Db(journey_namespace, "up")
    kube.apply(d.namespace, doc)
    yield d


def test_ready_and_records_written(kube: Kube, db: Db) -> None:
    kube.kubectl("wait", "-n", db.namespace, "--for=condition=Ready", f"omendb/{db.name}", "--timeout=300s",
                 timeout=320)
    assert _records(kube, db, "write") == f"records {RECORDS} readable {RECORDS}"
    sts = kube.get(db.namespace, "statefulset", db.name)
    assert sts["spec"]["updateStrategy"] == {"type": "OnDelete"}


def test_upgrade_to_the_next_version_keeps_every_record(kube: Kube, db: Db) -> None:
    uid = _pod(kube, db)["metadata"]["uid"]  # type: ignore[index]
    _patch(kube, db, {"version": "0.1.1"})

    def upgraded() -> bool:
        st = _status(kube, db)
        return (st.get("upgrade") or {}).get("phase") == "Succeeded" and st.get("currentVersion") == "0.1.1"

    kube.wait_until("upgrade to 0.1.1 succeeded", upgraded, 300, interval=2)
    kube.kubectl("wait", "-n", db.namespace, "--for=condition=Ready", f"omendb/{db.name}", "--timeout=120s",
                 timeout=140)
    pod = _pod(kube, db)
    assert pod and pod["metadata"]["uid"] != uid, "the pod was not replaced"
    assert pod["spec"]["containers"][0]["image"] == "omendb/omendb:0.1.1"
    assert pod["status"]["containerStatuses"][0]["image"].endswith("omendb/omendb:0.1.1")
    up = _status(kube, db)["upgrade"]
    assert (up["fromVersion"], up["toVersion"], up["kind"]) == ("0.1.0", "0.1.1", "Version")
    assert _records(kube, db) == f"records {RECORDS} readable {RECORDS}"
    assert {"UpgradeStarted", "ReplacingPod", "UpgradeSucceeded"} <= set(_reasons(kube, db))


def test_a_version_that_never_becomes_ready_is_rolled_back(kube: Kube, db: Db) -> None:
    # A tag that is not in the node's image store, with imagePullPolicy Never: ErrImageNeverPull forever.
    _patch(kube, db, {"image": "omendb/omendb:0.0.0-missing", "upgrade": {"timeout": "20s"}})

    def rolled_back() -> dict[str, Any] | None:
        st = _status(kube, db)
        return st if (st.get("upgrade") or {}).get("phase") == "RolledBack" else None

    status = kube.wait_until("the upgrade rolled back", rolled_back, 300, interval=2)
    cond = _condition(status, "UpgradeHealthy")
    assert (cond["status"], cond["reason"]) == ("False", "RolledBack"), cond
    assert status["upgrade"]["failedImage"] == "omendb/omendb:0.0.0-missing"
    kube.wait_until("the pod Ready on 0.1.1 again", lambda: _ready(_pod(kube, db)), 180, interval=2)
    assert _pod(kube, db)["spec"]["containers"][0]["image"] == "omendb/omendb:0.1.1"  # type: ignore[index]
    assert _status(kube, db)["currentVersion"] == "0.1.1"
    assert _records(kube, db) == f"records {RECORDS} readable {RECORDS}"
    reasons = _reasons(kube, db)
    assert "UpgradeRollingBack" in reasons and "UpgradeRolledBack" in reasons
    # Back to a working release: the failed image is forgotten and nothing restarts.
    uid = _pod(kube, db)["metadata"]["uid"]  # type: ignore[index]
    kube.kubectl("-n", db.namespace, "patch", "omendb", db.name, "--type=json",
                 "-p", json.dumps([{"op": "remove", "path": "/spec/image"}]))
    kube.wait_until("UpgradeHealthy again", lambda: _condition(_status(kube, db), "UpgradeHealthy").get(
        "status") == "True", 120, interval=2)
    assert _pod(kube, db)["metadata"]["uid"] == uid  # type: ignore[index]


def test_hibernate_and_wake_with_the_same_data(kube: Kube, db: Db) -> None:
    _patch(kube, db, {"hibernate": True})
    kube.wait_until("Hibernated", lambda: _status(kube, db).get("phase") == "Hibernated", 180, interval=2)
    kube.wait_until("no database pod", lambda: _pod(kube, db) is None, 120, interval=2)
    for claim in (f"data-{db.name}-0", f"wal-{db.name}-0", f"{db.name}-backups"):
        assert kube.get_or_none(db.namespace, "pvc", claim), f"{claim} was not kept"
    assert kube.get_or_none(db.namespace, "secret", f"{db.name}-users")
    cron = kube.get(db.namespace, "cronjob", f"{db.name}-backup-full")
    assert cron["spec"]["suspend"] is True
    _patch(kube, db, {"hibernate": False})
    kube.kubectl("wait", "-n", db.namespace, "--for=condition=Ready", f"omendb/{db.name}", "--timeout=240s",
                 timeout=260)
    assert kube.get(db.namespace, "cronjob", f"{db.name}-backup-full")["spec"]["suspend"] is False
    assert _records(kube, db) == f"records {RECORDS} readable {RECORDS}"


def test_upgrade_takes_a_backup_first(kube: Kube, db: Db) -> None:
    """With spec.upgrade.backupBeforeUpgrade (the default), an upgrade first creates the OmenDBBackup
    NAME-pre-upgrade-<hash>, waits for its phase Succeeded, then rolls the pods."""
    _patch(kube, db, {"upgrade": {"backupBeforeUpgrade": True, "timeout": "5m"}, "version": "0.1.0"})
    backup = kube.wait_until("the pre-upgrade OmenDBBackup", lambda: (_status(kube, db).get("upgrade") or {}).get(
        "backupName"), 60, interval=2)
    kube.wait_until(f"OmenDBBackup {backup} picked up by its controller", lambda: (kube.get(
        db.namespace, "omendbbackup", backup).get("status") or {}).get("phase"), 40, interval=2)
    kube.wait_until("downgrade to 0.1.0 after the backup", lambda: _status(kube, db).get("currentVersion") == "0.1.0"
                    and (_status(kube, db).get("upgrade") or {}).get("phase") == "Succeeded", 400, interval=3)
    assert kube.get(db.namespace, "omendbbackup", backup)["status"]["phase"] == "Succeeded"
    assert _records(kube, db) == f"records {RECORDS} readable {RECORDS}"
