"""The world as one reconcile of one OmenDB saw it: what controller/observe.py read, in one pass.

Plain data, so every planner is a pure function of it. Children are listed once per kind under the
OmenDB's instance label; Secrets are read by name (the operator may not list Secrets), each at most once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from omendb_operator import labels as L
from omendb_operator.plans import topology as T
from omendb_operator.spec import OmenDBSpec, SpecError, parse_spec
from omendb_operator.specs.secrets import decode_secret_data
from omendb_operator.specs.statefulset import CONTAINER_NAME, IMAGE_ANNOTATION

# (apiVersion, kind) of everything listed under the OmenDB's instance label.
CHILD_KINDS = (("apps/v1", "StatefulSet"), ("v1", "Service"), ("v1", "ConfigMap"), ("batch/v1", "CronJob"),
               ("policy/v1", "PodDisruptionBudget"), ("batch/v1", "Job"), ("v1", "Pod"),
               ("v1", "PersistentVolumeClaim"), ("v1", "ServiceAccount"), ("networking.k8s.io/v1", "NetworkPolicy"))


@dataclass
class World:
    namespace: str
    name: str
    omendb: dict[str, Any] | None  # None: it does not exist (its OmenDBBackups/OmenDBRestores fail)
    children: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)  # kind -> name -> object
    secrets: dict[str, dict[str, Any] | None] = field(default_factory=dict)  # name -> Secret (None: absent)
    configmaps: dict[str, dict[str, Any] | None] = field(default_factory=dict)  # read by name (not ours)
    claims: dict[str, dict[str, Any] | None] = field(default_factory=dict)  # other OmenDBs' claims, by name
    backups: list[dict[str, Any]] = field(default_factory=list)  # OmenDBBackups naming this OmenDB, oldest first
    restores: list[dict[str, Any]] = field(default_factory=list)  # OmenDBRestores naming it, oldest first
    monitoring_api: bool = False  # the PrometheusRule and ServiceMonitor kinds exist
    cert_manager_api: bool = False  # cert-manager's Certificate kind exists (read only with spec.tls.issuerRef)
    expandable: dict[str, bool] = field(default_factory=dict)  # StorageClass -> allowVolumeExpansion
    # Each database pod with its engine's answer to GET /v1/stats (failover and the pods' status rows).
    pods: dict[str, T.PodView] = field(default_factory=dict)
    peer_urls: dict[str, str] = field(default_factory=dict)  # pod -> the URL other pods reach it at
    nodes: dict[str, dict[str, Any] | None] = field(default_factory=dict)  # the pods' Nodes (None: gone)
    node_error: str = ""  # the Nodes could not be read (RBAC): drains are not seen
    # The pod an upgrade replaced last (status.upgrade.pod): True/False its /health answer, None unreachable.
    watched_health: bool | None = None
    # The primary's GET /v1/stats while a restore verifies the restored data: (answer, error).
    restore_stats: tuple[dict[str, Any] | None, str | None] = (None, None)
    operator_namespace: str | None = None  # where the operator runs (None: outside the cluster)

    # ---- lookups -------------------------------------------------------------------------------------
    @property
    def names(self) -> L.Names:
        return L.Names(self.name)

    @property
    def status(self) -> dict[str, Any]:
        return dict(((self.omendb or {}).get("status")) or {})

    def parsed_spec(self) -> tuple[OmenDBSpec | None, str | None]:
        try:
            return parse_spec((self.omendb or {}).get("spec")), None
        except SpecError as exc:
            return None, str(exc)

    def cordoned(self, node: str | None) -> bool:
        """The Node is marked unschedulable (`kubectl cordon`, the first step of `kubectl drain`), or gone."""
        if not node or node not in self.nodes:
            return False
        obj = self.nodes[node]
        return obj is None or bool((obj.get("spec") or {}).get("unschedulable"))

    def items(self, kind: str) -> list[dict[str, Any]]:
        return [self.children.get(kind, {})[n] for n in sorted(self.children.get(kind, {}))]

    def child(self, kind: str, name: str) -> dict[str, Any] | None:
        return self.children.get(kind, {}).get(name)

    def secret_data(self, name: str | None) -> dict[str, str]:
        return decode_secret_data(self.secrets.get(name)) if name else {}

    @property
    def statefulset(self) -> dict[str, Any] | None:
        return self.child("StatefulSet", self.names.statefulset)

    @property
    def running_image(self) -> str | None:
        """The image the operator last put in the StatefulSet (its annotation; the template's for a
        StatefulSet made before the annotation existed); None before there is one."""
        sts = self.statefulset
        if not sts:
            return None
        annotated = (sts["metadata"].get("annotations") or {}).get(IMAGE_ANNOTATION)
        if annotated:
            return str(annotated)
        for c in sts.get("spec", {}).get("template", {}).get("spec", {}).get("containers") or []:
            if c.get("name") == CONTAINER_NAME:
                return str(c.get("image"))
        return None

    @property
    def live_replicas(self) -> int:
        """spec.replicas of the live StatefulSet (0 when there is none)."""
        return int(((self.statefulset or {}).get("spec") or {}).get("replicas") or 0)

    def component(self, kind: str, *components: str) -> list[dict[str, Any]]:
        return [o for o in self.items(kind) if component_of(o) in components]

    def database_pods(self) -> list[dict[str, Any]]:
        return self.component("Pod", "database")

    def pods_by_job(self) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {}
        for pod in self.items("Pod"):
            labels = pod["metadata"].get("labels") or {}
            job = labels.get("batch.kubernetes.io/job-name") or labels.get("job-name")
            if job:
                out.setdefault(job, []).append(pod)
        return out

    def claim_ordinals(self) -> tuple[int, ...]:
        """Pod ordinals whose data claim exists, and always 0."""
        ordinals = {0}
        for claim in self.children.get("PersistentVolumeClaim", {}):
            m = re.fullmatch(rf"data-{re.escape(self.name)}-(\d+)", claim)
            if m:
                ordinals.add(int(m.group(1)))
        return tuple(sorted(ordinals))


def component_of(obj: dict[str, Any]) -> str:
    return str((obj["metadata"].get("labels") or {}).get(L.COMPONENT_LABEL, ""))


def pod_ready(pod: dict[str, Any]) -> bool:
    """The pod's Ready condition is True."""
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])

