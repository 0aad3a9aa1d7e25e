"""Dynamic provisioning of PersistentVolumes into local directories, for the one-node cluster.

`python -m e2e.provisioner STATE_DIR` runs beside the cluster (started by `e2e.cluster up`). For
every pending PersistentVolumeClaim of the default StorageClass it creates a directory under
STATE_DIR/volumes and a hostPath PersistentVolume pre-bound to the claim; when such a volume is
released (its claim deleted) it removes the directory and the volume. Data therefore survives pod
deletion and restarts, and lives as long as the claim — as with a cloud disk.

Kubernetes' built-in hostpath provisioner is not used: it writes under /tmp/hostpath_pv with mode
0750 owned by root, which the project's non-root images (uid 10001) cannot write.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from e2e import layout as L
from e2e.layout import Layout

PROVISIONED_BY = "pv.kubernetes.io/provisioned-by"
Obj = dict[str, Any]


def pv_for_claim(pvc: Obj, path: Path) -> Obj:
    """The PersistentVolume that satisfies `pvc` from directory `path` (pure)."""
    meta, spec = pvc["metadata"], pvc["spec"]
    request = spec.get("resources", {}).get("requests", {}).get("storage", "1Gi")
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": f"pvc-{meta['uid']}", "annotations": {PROVISIONED_BY: L.PROVISIONER_NAME}},
        "spec": {
            "capacity": {"storage": request},
            "accessModes": spec.get("accessModes") or ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Delete",
            "storageClassName": spec.get("storageClassName"),
            "volumeMode": spec.get("volumeMode") or "Filesystem",
            "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": meta["namespace"],
                         "name": meta["name"], "uid": meta["uid"]},
            "hostPath": {"path": str(path), "type": "Directory"},
        },
    }


def wants_volume(pvc: Obj, class_names: set[str]) -> bool:
    spec = pvc["spec"]
    return (
        pvc.get("status", {}).get("phase") == "Pending"
        and not spec.get("volumeName")
        and spec.get("storageClassName") in class_names
        and (spec.get("volumeMode") or "Filesystem") == "Filesystem"
    )


def _items(api: httpx.Client, path: str) -> list[Obj]:
    r = api.get(path)
    r.raise_for_status()
    items: list[Obj] = r.json()["items"]
    return items


def reconcile(api: httpx.Client, volumes: Path) -> None:
    class_names = {sc["metadata"]["name"] for sc in _items(api, "/apis/storage.k8s.io/v1/storageclasses")
                   if sc.get("provisioner") == L.PROVISIONER_NAME}
    pvs = _items(api, "/api/v1/persistentvolumes")
    existing = {pv["metadata"]["name"] for pv in pvs}
    for pvc in _items(api, "/api/v1/persistentvolumeclaims"):
        if not wants_volume(pvc, class_names):
            continue
        meta = pvc["metadata"]
        name = f"pvc-{meta['uid']}"
        if name in existing:
            continue
        path = volumes / name
        path.mkdir(parents=True, exist_ok=True)
        # Any pod user may write: images run as non-root users the provisioner cannot know.
        path.chmod(0o777)
        r = api.post("/api/v1/persistentvolumes", json=pv_for_claim(pvc, path))
        if r.status_code not in (201, 409):
            r.raise_for_status()
        print(f"provisioned {name} for {meta['namespace']}/{meta['name']}", flush=True)
    for pv in pvs:
        ann = pv["metadata"].get("annotations") or {}
        spec = pv["spec"]
        if ann.get(PROVISIONED_BY) != L.PROVISIONER_NAME:
            continue
        if pv.get("status", {}).get("phase") not in ("Released", "Failed"):
            continue
        if spec.get("persistentVolumeReclaimPolicy") != "Delete":
            continue
        path = Path(spec["hostPath"]["path"])
        if path.parent == volumes:
            shutil.rmtree(path, ignore_errors=True)
        r = api.delete(f"/api/v1/persistentvolumes/{pv['metadata']['name']}")
        if r.status_code not in (200, 202, 404):
            r.raise_for_status()
        print(f"deleted {pv['metadata']['name']} (claim gone)", flush=True)


def main(argv: list[str]) -> int:
    from e2e.cluster import admin_client

    lay = Layout(Path(argv[0]))
    print(f"local-directory provisioner {L.PROVISIONER_NAME}: volumes under {lay.volumes}", flush=True)
    with admin_client(lay, timeout=10) as api:
        while True:
            try:
                reconcile(api, lay.volumes)
            except Exception as exc:  # noqa: BLE001 - keep serving; the API server may be restarting
                print(f"reconcile failed: {exc}", flush=True)
            time.sleep(1)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
