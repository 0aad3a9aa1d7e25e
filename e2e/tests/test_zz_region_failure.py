"""The region-failure journey (issue 17): cluster A backs its OmenDB up into a bucket (spec.backup.objectStore)
and its primary ships the WAL there continuously (archiveWal, on by default); cluster A is destroyed entirely
(`e2e.cluster down`: every process, etcd, the volumes); a fresh cluster B (`e2e.cluster up`) bootstraps the
OmenDB from the bucket (spec.bootstrap.fromBackup.objectStore): the backup continued by the archived WAL.
Every write acknowledged up to the last LSN the archive held before the disaster is there, with its value,
and nothing else. The measured RTO and RPO are printed (docs/operations/disaster-recovery.md records them).

The bucket is a SeaweedFS of this module's own (e2e.objectstore) on the host, outside the cluster, as another
region's object store would be. The file is named to run last: it replaces the session's cluster with a new
one (the session fixture still tears down whatever cluster is up at the end).
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from e2e import cluster, objectstore, operator_deploy
from e2e.kube import Kube
from e2e.layout import Layout

NAME = "db"
# Run inside the database pod: `put START COUNT VALUE` prints the write's LSN and when it was acknowledged;
# `dump` every record and the LSN.
CLIENT = """
import json, os, sys, time
from omendb.client import Client
c = Client("https://localhost:3000", username=os.environ["U"], password=os.environ["P"],
           ca_file="/etc/omendb/tls/ca.crt")
if sys.argv[1] == "put":
    start, n, v = int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    print(json.dumps({"lsn": c.put_many(list(range(start, start + n)), [v] * n), "acked_at": time.time()}))
else:
    keys, values = c.range(-2**63)
    print(json.dumps({"records": {str(int(k)): float(v) for k, v in zip(keys, values)}, "lsn": c.lsn()}))
"""


def _shipped_lsn(kube: Kube, ns: str) -> int:
    """The primary's omendb_wal_archive_shipped_lsn (its metrics port, plain HTTP inside the pod)."""
    out = kube.kubectl("-n", ns, "exec", f"{NAME}-0", "-c", "omendb", "--", "python3", "-c",
                       "import urllib.request; print(urllib.request.urlopen('http://localhost:9090/metrics')"
                       ".read().decode())", timeout=60).stdout
    return int(float(next(line.split()[1] for line in out.splitlines()
                          if line.startswith("omendb_wal_archive_shipped_lsn "))))


def _credentials(kube: Kube, ns: str) -> tuple[str, str]:
    data = kube.get(ns, "secret", f"{NAME}-users")["data"]
    return base64.b64decode(data["username"]).decode(), base64.b64decode(data["password"]).decode()


def _client(kube: Kube, ns: str, *args: str) -> Any:
    user, password = _credentials(kube, ns)
    out = kube.kubectl("-n", ns, "exec", f"{NAME}-0", "-c", "omendb", "--", "env", f"U={user}", f"P={password}",
                       "python3", "-c", CLIENT, *args, timeout=120).stdout
    return json.loads(out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def bucket(e2e_cluster: Layout, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[objectstore.Store,
                                                                                               dict[str, str]]]:
    store = objectstore.Store(Path(tmp_path_factory.mktemp("region-bucket")) / "state")
    objectstore.up(store, pods=True)
    try:
        yield store, dict(line.removeprefix("export ").split("=", 1) for line in objectstore.env_lines(store))
    finally:
        objectstore.down(store)


def _store_secrets(kube: Kube, ns: str, env: dict[str, str]) -> None:
    ini = (f"[default]\naws_access_key_id = {env['AWS_ACCESS_KEY_ID']}\n"
           f"aws_secret_access_key = {env['AWS_SECRET_ACCESS_KEY']}\n")
    kube.apply(ns, {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s3-credentials"},
                    "stringData": {"credentials": ini}},
               {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s3-ca"},
                "stringData": {"ca.crt": Path(env["AWS_CA_BUNDLE"]).read_text()}})


def _object_store(env: dict[str, str], path: str) -> dict[str, Any]:
    return {"bucket": env["OMENDB_TEST_BUCKET"], "path": path, "endpointURL": env["OMENDB_TEST_POD_ENDPOINT_URL"],
            "region": env["AWS_REGION"], "credentials": {"name": "s3-credentials"}, "ca": {"name": "s3-ca"}}


def _omendb(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "omendb.io/v1alpha1", "kind": "OmenDB", "metadata": {"name": NAME},
            "spec": {"version": "0.1.0", "replicas": 1,
                     "storage": {"data": {"size": "256Mi"}, "wal": {"size": "256Mi"}},
                     "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
                     "monitoring": {"prometheusRule": False, "serviceMonitor": False}, **spec}}


def _namespace(kube: Kube, name: str) -> None:
    kube.kubectl("create", "namespace", name)
    kube.wait_until("default ServiceAccount", lambda: kube.get_or_none(name, "serviceaccount", "default"), 60)


def _wait_ready(kube: Kube, ns: str) -> None:
    kube.kubectl("wait", "-n", ns, "--for=condition=Ready", f"omendb/{NAME}", "--timeout=420s", timeout=440)


@pytest.mark.timeout(1800)  # two clusters, one after the other
def test_a_fresh_cluster_restores_the_bucket_s_backup_after_the_first_cluster_is_destroyed(
        kube: Kube, e2e_cluster: Layout, operator: str, bucket: tuple[objectstore.Store, dict[str, str]]) -> None:
    store, env = bucket
    ns = f"region-{uuid.uuid4().hex[:5]}"
    prefix = f"{ns}/{NAME}"

    # ---- cluster A: an OmenDB backing up into the bucket ------------------------------------------------------
    _namespace(kube, ns)
    _store_secrets(kube, ns, env)
    kube.apply(ns, _omendb(backup={"objectStore": _object_store(env, prefix)},
                           config={"wal_archive": {"interval_seconds": 1}}))
    _wait_ready(kube, ns)
    _client(kube, ns, "put", "0", "1000", "1.0")
    _client(kube, ns, "put", "1000", "50", "2.0")
    kube.apply(ns, {"apiVersion": "omendb.io/v1alpha1", "kind": "OmenDBBackup", "metadata": {"name": "base"},
                    "spec": {"cluster": {"name": NAME}, "type": "full"}})

    def backup_finished() -> dict[str, Any] | None:
        status = kube.get(ns, "omendbbackup", "base").get("status") or {}
        return status if status.get("phase") in ("Succeeded", "Failed") else None

    backup = kube.wait_until("the base backup", backup_finished, 300, interval=2)
    assert backup["phase"] == "Succeeded", backup
    backed_up_at = time.time()
    # Writes after the backup: only the archived WAL holds them.
    after = [_client(kube, ns, "put", str(3000 + 10 * i), "10", str(4.0 + i)) for i in range(3)]
    kube.wait_until("the archive to hold the writes after the backup",
                    lambda: _shipped_lsn(kube, ns) >= after[-1]["lsn"], 120, interval=1)
    kube.wait_until("ContinuousArchiving True", lambda: any(
        c["type"] == "ContinuousArchiving" and c["status"] == "True"
        for c in (kube.get(ns, "omendb", NAME).get("status") or {}).get("conditions", [])), 180, interval=2)
    # One more, right before the disaster: in the archive or not, depending on the shipping timer.
    after.append(_client(kube, ns, "put", "3030", "10", "7.0"))
    archived = _shipped_lsn(kube, ns)
    key = kube.get(ns, "secret", f"{NAME}-backup-key")["data"]  # the runbook: keep a copy of the backup key

    # ---- the region is lost: the whole cluster, its etcd and its volumes -----------------------------------
    destroyed_at = time.time()
    problems = cluster.down(e2e_cluster)
    assert problems == [], problems
    cluster.up(e2e_cluster)
    objectstore.up(store, pods=True)  # the bucket outlived the cluster; serve the new cluster's pods
    operator_deploy.install(kube)
    cluster_b_at = time.time()

    # ---- cluster B: the same OmenDB, bootstrapped from the bucket ------------------------------------------
    _namespace(kube, ns)
    _store_secrets(kube, ns, env)
    kube.apply(ns, {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": f"{NAME}-backup-key"}, "data": key})
    kube.apply(ns, _omendb(
        bootstrap={"fromBackup": {"objectStore": _object_store(env, prefix)}},
        # Cluster B backs up under a prefix of its own: it never writes into cluster A's history.
        backup={"objectStore": _object_store(env, f"{prefix}-region-b")}))
    try:
        _wait_ready(kube, ns)
    except BaseException:
        print(f"\n===== dump of namespace {ns} (cluster B) =====\n{kube.dump(ns)}")
        raise
    ready_at = time.time()
    restored = _client(kube, ns, "dump")
    bootstrap = kube.get(ns, "omendb", NAME)["status"]["bootstrap"]
    assert bootstrap["phase"] == "Succeeded", bootstrap

    records = restored["records"]
    assert restored["lsn"] >= archived, (restored["lsn"], archived)
    expected = {str(k): 1.0 for k in range(1000)} | {str(k): 2.0 for k in range(1000, 1050)}
    for i, write in enumerate(after):  # every write up to the restored LSN, which is at least the archived one
        if write["lsn"] <= restored["lsn"]:
            expected |= {str(k): 4.0 + i if i < 3 else 7.0 for k in range(3000 + 10 * i, 3010 + 10 * i)}
    assert records == expected, sorted(set(records) ^ set(expected))[:10]  # the backup and the archive; nothing else
    assert bootstrap["recordCount"] == len(expected) and bootstrap["backupId"].endswith("-full"), bootstrap
    lost = ", ".join(f"{destroyed_at - w['acked_at']:.1f}s" for w in after if w["lsn"] > restored["lsn"])
    print(f"\nregion failure: cluster rebuilt in {cluster_b_at - destroyed_at:.0f}s; OmenDB restored and Ready "
          f"{ready_at - cluster_b_at:.0f}s after it was applied (RTO from the disaster "
          f"{ready_at - destroyed_at:.0f}s); RPO: writes lost acknowledged {lost or 'none'} before the disaster "
          f"(the backup was {destroyed_at - backed_up_at:.1f}s old; the archive held LSN {archived}); "
          f"{len(records)} records at LSN {restored['lsn']}")
