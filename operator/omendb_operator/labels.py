"""Names and labels of an OmenDB's children (DESIGN §3, a contract: users' scripts select on them)."""

from __future__ import annotations

from typing import Any

GROUP = "omendb.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "OmenDB"
PLURAL = "omendbs"
FIELD_MANAGER = "omendb-operator"
MANAGED_BY = "omendb-operator"

# Annotations the operator writes on children it owns.
CONFIG_HASH_ANNOTATION = f"{GROUP}/config-hash"
ROLE_LABEL = f"{GROUP}/role"
COMPONENT_LABEL = "app.kubernetes.io/component"
POD_NAME_LABEL = "statefulset.kubernetes.io/pod-name"

API_PORT = 3000
METRICS_PORT = 9090


class Names:
    """Every child name of the OmenDB ``name``, in one place so no module spells one differently."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.primary_service = name
        self.read_service = f"{name}-ro"
        self.headless_service = f"{name}-headless"
        self.statefulset = name
        self.config = f"{name}-config"
        self.tls = f"{name}-tls"
        self.ca = f"{name}-ca"
        self.users = f"{name}-users"
        self.pdb = name
        self.primary_pdb = f"{name}-primary"
        self.network_policy = name
        self.service_account = name
        self.backup_full = f"{name}-backup-full"
        self.backup_incremental = f"{name}-backup-incremental"
        self.backup_cleanup = f"{name}-backup-cleanup"
        self.backup_volume = f"{name}-backups"
        self.backup_key = f"{name}-backup-key"
        self.prometheus_rule = name
        self.service_monitor = name

    def pod(self, ordinal: int) -> str:
        return f"{self.statefulset}-{ordinal}"


def selector_labels(name: str) -> dict[str, str]:
    """The labels that select one OmenDB's pods (immutable in the StatefulSet, so never extend them)."""
    return {
        "app": "omendb",
        "app.kubernetes.io/name": "omendb",
        "app.kubernetes.io/instance": name,
    }


def labels(name: str, component: str | None = None) -> dict[str, str]:
    """The labels on every child: the selector labels, who manages it and which part it is."""
    out = {**selector_labels(name), "app.kubernetes.io/managed-by": MANAGED_BY}
    if component:
        out[COMPONENT_LABEL] = component
    return out


def instance_selector(name: str) -> str:
    """Everything one OmenDB owns or runs: children, pods, Jobs and their pods, claims (some of which do not
    carry the ``app`` label)."""
    return f"app.kubernetes.io/instance={name}"


def selector_string(name: str) -> str:
    """The label selector as a string (status.selector, for the scale subresource and HPA)."""
    return ",".join(f"{k}={v}" for k, v in selector_labels(name).items())


def owner_reference(owner: dict[str, Any]) -> dict[str, Any]:
    """An owner reference to the OmenDB ``owner`` so Kubernetes garbage-collects the child with it.

    ``blockOwnerDeletion`` is left false: with it, deleting the OmenDB in foreground mode would wait on
    children, and we never want anything the operator adds to hold up a deletion."""
    meta = owner["metadata"]
    return {
        "apiVersion": owner.get("apiVersion", API_VERSION),
        "kind": owner.get("kind", KIND),
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": False,
    }


def metadata(owner: dict[str, Any], name: str, component: str | None = None, *, owned: bool = True,
             annotations: dict[str, str] | None = None) -> dict[str, Any]:
    """Standard metadata for a child named ``name`` of ``owner``."""
    meta: dict[str, Any] = {
        "name": name,
        "namespace": owner["metadata"]["namespace"],
        "labels": labels(owner["metadata"]["name"], component),
    }
    if annotations:
        meta["annotations"] = annotations
    if owned:
        meta["ownerReferences"] = [owner_reference(owner)]
    return meta
