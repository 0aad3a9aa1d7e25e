"""The optional NetworkPolicy (spec.networkPolicy.enabled): who may open a connection to the database pods.

Ingress only, on the two ports the pods serve:
- the API port (L.API_PORT) from the Services' clients (spec.networkPolicy.clients; by default pods labelled
  ``omendb.io/client: NAME`` in the OmenDB's namespace), from the OmenDB's own pods and Jobs (replicas stream
  the WAL from the primary; backup Jobs read its snapshot endpoint) and from the operator (health, stats,
  promotion);
- the metrics port (L.METRICS_PORT) from Prometheus (spec.networkPolicy.prometheus; by default pods labelled
  ``app.kubernetes.io/name: prometheus`` in any namespace) and the operator.

Egress is left open: replicas reach the primary, Jobs reach the API server's DNS name and, with object
storage, their bucket; an egress list the operator cannot know would break them. Kubelet probes come from
the node, which the usual network plugins admit whatever the policy says (docs/operator.md).
"""

from __future__ import annotations

from typing import Any

from omendb_operator import labels as L
from omendb_operator.spec import OmenDBSpec

API = "networking.k8s.io/v1"
KIND = "NetworkPolicy"
CLIENT_LABEL = f"{L.GROUP}/client"
OPERATOR_NAME_LABEL = "app.kubernetes.io/name"
OPERATOR_NAME = "omendb-operator"
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"  # set by the API server on every namespace


def default_clients(name: str) -> list[dict[str, Any]]:
    return [{"podSelector": {"matchLabels": {CLIENT_LABEL: name}}}]


def default_prometheus() -> list[dict[str, Any]]:
    return [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}}]


def operator_peer(operator_namespace: str | None) -> dict[str, Any]:
    """The operator's pods. Out of the cluster (a developer's shell) its namespace is unknown: then any
    namespace, still only pods carrying the operator's name label."""
    namespaces: dict[str, Any] = ({"matchLabels": {NAMESPACE_NAME_LABEL: operator_namespace}}
                                  if operator_namespace else {})
    return {"namespaceSelector": namespaces, "podSelector": {"matchLabels": {OPERATOR_NAME_LABEL: OPERATOR_NAME}}}


def own_pods_peer(name: str) -> dict[str, Any]:
    """The database pods and the backup, restore and bootstrap Jobs' pods of this OmenDB (Jobs do not carry
    the ``app`` selector label, so select on what both carry)."""
    return {"podSelector": {"matchLabels": {"app.kubernetes.io/instance": name,
                                            "app.kubernetes.io/managed-by": L.MANAGED_BY}}}


def _port(number: int) -> list[dict[str, Any]]:
    return [{"protocol": "TCP", "port": number}]


def build_network_policy(owner: dict[str, Any], spec: OmenDBSpec, operator_namespace: str | None) -> dict[str, Any]:
    name = owner["metadata"]["name"]
    np = spec.network_policy
    clients = default_clients(name) if np.clients is None else np.clients
    prometheus = default_prometheus() if np.prometheus is None else np.prometheus
    operator = operator_peer(operator_namespace)
    return {
        "apiVersion": API,
        "kind": KIND,
        "metadata": L.metadata(owner, L.Names(name).network_policy, "database"),
        "spec": {
            "podSelector": {"matchLabels": L.selector_labels(name)},
            "policyTypes": ["Ingress"],
            "ingress": [
                {"from": [*clients, own_pods_peer(name), operator], "ports": _port(L.API_PORT)},
                {"from": [*prometheus, operator], "ports": _port(L.METRICS_PORT)},
            ],
        },
    }
