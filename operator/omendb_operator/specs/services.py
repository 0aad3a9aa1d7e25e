"""Services: NAME (the primary, for writes), NAME-ro (reads) and NAME-headless (pod DNS, metrics)."""

from __future__ import annotations

from typing import Any

from omendb_operator import labels as L

METRICS_SERVICE_LABEL = f"{L.GROUP}/metrics"


def _ports(metrics: bool) -> list[dict[str, Any]]:
    ports = [{"name": "api", "port": L.API_PORT, "targetPort": "api", "protocol": "TCP"}]
    if metrics:
        ports.append({"name": "metrics", "port": L.METRICS_PORT, "targetPort": "metrics", "protocol": "TCP"})
    return ports


ROLE_LABEL = "role"  # set on each pod by the operator (failover.py): primary or replica


def primary_selector(name: str) -> dict[str, str]:
    """Pods the primary Service selects: the one labelled role=primary. The operator labels exactly one pod
    (status.primaryPod) and moves the label on failover, so the selector itself never changes."""
    return {**L.selector_labels(name), ROLE_LABEL: "primary"}


def read_selector(name: str, replicas: int) -> dict[str, str]:
    """Pods the read Service selects: the replicas; with one pod, that pod (the primary serves reads)."""
    if replicas > 1:
        return {**L.selector_labels(name), ROLE_LABEL: "replica"}
    return L.selector_labels(name)


def build_services(owner: dict[str, Any], replicas: int = 1) -> list[dict[str, Any]]:
    name = owner["metadata"]["name"]
    names = L.Names(name)
    primary = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": L.metadata(owner, names.primary_service, "primary"),
        "spec": {"type": "ClusterIP", "selector": primary_selector(name),
                 "ports": _ports(False)},
    }
    read = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": L.metadata(owner, names.read_service, "read"),
        # Ready replicas serve reads (a lagging one is not ready: [replication] max_lag_seconds).
        "spec": {"type": "ClusterIP", "selector": read_selector(name, replicas), "ports": _ports(False)},
    }
    headless_meta = L.metadata(owner, names.headless_service, "headless")
    headless_meta["labels"][METRICS_SERVICE_LABEL] = "true"
    headless = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": headless_meta,
        "spec": {
            "clusterIP": "None",
            "selector": L.selector_labels(name),
            # Pod DNS names must resolve before pods are ready: replicas find the primary that way.
            "publishNotReadyAddresses": True,
            "ports": _ports(True),
        },
    }
    return [primary, read, headless]
