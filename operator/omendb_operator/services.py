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


def primary_selector(name: str, primary_pod: str | None = None) -> dict[str, str]:
    """Pods the primary Service selects. Pod 0 starts as primary (DESIGN §3); failover (issue 6) moves the
    primary by passing another pod name here, kept in status so a restart does not forget it."""
    return {**L.selector_labels(name), L.POD_NAME_LABEL: primary_pod or L.Names(name).pod(0)}


def build_services(owner: dict[str, Any], primary_pod: str | None = None) -> list[dict[str, Any]]:
    name = owner["metadata"]["name"]
    names = L.Names(name)
    primary = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": L.metadata(owner, names.primary_service, "primary"),
        "spec": {"type": "ClusterIP", "selector": primary_selector(name, primary_pod),
                 "ports": _ports(False)},
    }
    read = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": L.metadata(owner, names.read_service, "read"),
        # Every ready pod serves reads; replicas follow the primary once replication lands.
        "spec": {"type": "ClusterIP", "selector": L.selector_labels(name), "ports": _ports(False)},
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
