"""NAME: the database pods' own ServiceAccount. The engine never talks to the Kubernetes API, so it gets no
token (automountServiceAccountToken: false here and in the pod template), and no RoleBinding names it; it
exists so that policies (Pod Security admission exemptions, image pull secrets, network or mesh identities)
can tell one database's pods from every other workload of the namespace's `default` account."""

from __future__ import annotations

from typing import Any

from omendb_operator import labels as L


def build_service_account(owner: dict[str, Any]) -> dict[str, Any]:
    name = owner["metadata"]["name"]
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": L.metadata(owner, L.Names(name).service_account, "database"),
        "automountServiceAccountToken": False,
    }
