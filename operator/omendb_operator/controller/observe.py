"""Observe: read the world of one OmenDB in one pass, for the planners (plans/world.py says what it holds).

The only reads of a reconcile: the OmenDB; one list per child kind under its instance label; its
OmenDBBackups and OmenDBRestores; the Secrets it uses, each read once by name; whether the monitoring
kinds exist; and what each running database pod's engine says about itself. A few reads happen only when
an operation needs them (the StorageClasses while a claim should grow, a bootstrap's source volume, the
upgrade's replaced pod's /health, the primary's stats while a restore verifies).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from typing import Any

import httpx
from kubernetes.dynamic.exceptions import ForbiddenError

from omendb_operator import labels as L
from omendb_operator.controller.engines import Engines, EnginesFactory
from omendb_operator.controller.kube import Kube
from omendb_operator.plans import restores
from omendb_operator.plans import topology as T
from omendb_operator.plans.backups import for_cluster
from omendb_operator.plans.volumes import claim_view
from omendb_operator.plans.world import CHILD_KINDS, World, pod_ready
from omendb_operator.spec import OmenDBSpec
from omendb_operator.specs import cert_manager, monitoring
from omendb_operator.specs.services import ROLE_LABEL
from omendb_operator.times import parse_time

log = logging.getLogger(__name__)

# GET /health of a pod (True 200, False otherwise, None unreachable); GET /v1/stats of the primary.
HealthCheck = Callable[[Any, dict[str, Any], str, OmenDBSpec], "bool | None"]
StatsFetch = Callable[[Any, str, str, OmenDBSpec], dict[str, Any]]


class Reader:
    """The reads of one observation: each Secret, StorageClass or other object read by name at most once."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube
        self._got: dict[tuple[str, str, str, str | None], dict[str, Any] | None] = {}

    def get(self, api_version: str, kind: str, name: str, namespace: str | None) -> dict[str, Any] | None:
        key = (api_version, kind, name, namespace)
        if key not in self._got:
            self._got[key] = self.kube.get(api_version, kind, name, namespace)
        return self._got[key]

    def list(self, api_version: str, kind: str, namespace: str | None = None,
             label_selector: str | None = None) -> list[dict[str, Any]]:
        items = self.kube.list(api_version, kind, namespace, label_selector)
        for item in items:  # list items come without their kind
            item.setdefault("apiVersion", api_version)
            item.setdefault("kind", kind)
        return items

    def has_kind(self, api_version: str, kind: str) -> bool:
        return self.kube.has_kind(api_version, kind)


def secret_names(world: World, spec: OmenDBSpec) -> list[str]:
    """The Secrets this OmenDB uses, by name: generated ones and the ones the spec names."""
    names = world.names
    out = [names.users, names.backup_key, names.tls]  # NAME-tls also when it must go (TLS no longer generated)
    if spec.tls.enabled and spec.tls.generate:
        out.append(names.ca)
    if spec.tls.enabled and not spec.tls.generate and spec.tls.secret_name:
        out.append(str(spec.tls.secret_name))  # with issuerRef, cert-manager writes NAME-tls (read above)
    if spec.auth.htpasswd_secret_name:
        out.append(spec.auth.htpasswd_secret_name)
    return out


def _running(pod: dict[str, Any]) -> bool:
    """Worth asking the engine: the pod has an IP and a running container."""
    st = pod.get("status") or {}
    statuses = st.get("container_statuses") or st.get("containerStatuses") or []
    return bool(st.get("pod_ip") or st.get("podIP")) and any((c.get("state") or {}).get("running")
                                                              for c in statuses)


def _not_ready_since(pod: dict[str, Any]) -> tuple[bool, dt.datetime | None]:
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            since = parse_time(cond.get("last_transition_time") or cond.get("lastTransitionTime"))
            return cond.get("status") == "True", (None if cond.get("status") == "True" else since)
    return False, None


def engine_views(pods: list[dict[str, Any]], engines: Engines) -> dict[str, T.PodView]:
    """Every database pod with its readiness and its engine's answer (asked only of pods with an IP and a
    running container: a pod that is starting or gone would only cost a connect timeout)."""
    out = {}
    for pod in pods:
        meta = pod["metadata"]
        pod_name = str(meta["name"])
        ready, since = _not_ready_since(pod)
        deleting = bool(meta.get("deletion_timestamp") or meta.get("deletionTimestamp"))
        engine, error = None, ""
        if not deleting and _running(pod):
            try:
                engine = engines.stats(pod_name)
            except (httpx.HTTPError, ValueError, KeyError) as exc:
                error = f"{type(exc).__name__}: {exc}"
        spec = pod.get("spec") or {}
        out[pod_name] = T.PodView(name=pod_name, ready=ready, deleting=deleting, not_ready_since=since,
                                  role_label=(meta.get("labels") or {}).get(ROLE_LABEL), engine=engine,
                                  engine_error=error, node=spec.get("node_name") or spec.get("nodeName"))
    return out


class Observer:
    def __init__(self, kube: Kube, engines: EnginesFactory, health: HealthCheck, stats: StatsFetch,
                 operator_namespace: str | None = None) -> None:
        self.kube, self.engines_for, self.health, self.stats = kube, engines, health, stats
        self.operator_namespace = operator_namespace

    def observe(self, namespace: str, name: str) -> tuple[World, Engines | None]:
        """The world of OmenDB ``namespace/name``, and how to reach its engines (None without a valid spec)."""
        reader = Reader(self.kube)
        omendb = self.kube.get(L.API_VERSION, L.KIND, name, namespace)
        world = World(namespace=namespace, name=name, omendb=omendb, operator_namespace=self.operator_namespace)
        world.backups = for_cluster(reader.list(L.API_VERSION, "OmenDBBackup", namespace), name)
        world.restores = for_cluster(reader.list(L.API_VERSION, restores.KIND, namespace), name)
        if omendb is None or omendb["metadata"].get("deletionTimestamp"):
            return world, None
        spec, error = world.parsed_spec()
        if spec is None:
            return world, None
        selector = L.instance_selector(name)
        for api_version, kind in CHILD_KINDS:
            world.children[kind] = {o["metadata"]["name"]: o for o in reader.list(api_version, kind, namespace,
                                                                                   selector)}
        world.monitoring_api = (reader.has_kind(monitoring.MONITORING_API, "PrometheusRule")
                                and reader.has_kind(monitoring.MONITORING_API, "ServiceMonitor"))
        if world.monitoring_api:
            for kind in ("PrometheusRule", "ServiceMonitor"):
                world.children[kind] = {o["metadata"]["name"]: o for o in reader.list(
                    monitoring.MONITORING_API, kind, namespace, selector)}
        # Like the monitoring kinds: listed whenever cert-manager is installed, so that a Certificate left by
        # a spec that no longer sets issuerRef is found and deleted.
        world.cert_manager_api = reader.has_kind(cert_manager.CERT_MANAGER_API, cert_manager.CERTIFICATE_KIND)
        if world.cert_manager_api:
            world.children[cert_manager.CERTIFICATE_KIND] = {o["metadata"]["name"]: o for o in reader.list(
                cert_manager.CERT_MANAGER_API, cert_manager.CERTIFICATE_KIND, namespace, selector)}
        for secret in secret_names(world, spec):
            world.secrets[secret] = reader.get("v1", "Secret", secret, namespace)
        htpasswd = spec.auth.htpasswd_secret_name
        if htpasswd and world.secrets.get(htpasswd) is None:
            # The guide keeps its users in a ConfigMap: read it to say how to move it into a Secret.
            world.configmaps[htpasswd] = reader.get("v1", "ConfigMap", htpasswd, namespace)
        if spec.bootstrap is not None and spec.bootstrap.object_store is None:
            volume = L.Names(spec.bootstrap.source_cluster).backup_volume
            world.claims[volume] = world.child("PersistentVolumeClaim", volume) or reader.get(
                "v1", "PersistentVolumeClaim", volume, namespace)
        restoring = any((r.get("status") or {}).get("phase") not in restores.FINISHED for r in world.restores)
        if restoring and spec.backup.object_store is None and \
                world.names.backup_volume not in world.children["PersistentVolumeClaim"]:
            world.claims[world.names.backup_volume] = reader.get("v1", "PersistentVolumeClaim",
                                                                 world.names.backup_volume, namespace)
        self._storage_classes(world, reader, spec)

        engines = self.engines_for(reader, name, namespace, spec)
        world.pods = engine_views(world.database_pods(), engines)
        world.peer_urls = {p: engines.peer_url_for(p) for p in {*world.pods, str(
            world.status.get("primaryPod") or world.names.pod(0))}}
        self._nodes(world, reader, spec)
        self._watched_health(world, reader, spec)
        self._restore_stats(world, reader, spec)
        return world, engines

    def _nodes(self, world: World, reader: Reader, spec: OmenDBSpec) -> None:
        """The primary's Node (one read): when it is cordoned, a switchover starts before a drain evicts the
        primary, and only then are the other pods' Nodes read, to pick a replica on a Node not cordoned.
        Only with a replica to switch to; without the right to read Nodes, drains are not seen. And the Node
        of each Terminating pod: one stuck on a lost node is removed (plans/lost_pods.py)."""
        terminating = sorted({p.node for p in world.pods.values() if p.deleting and p.node})
        if spec.replicas < 2 and not terminating:
            return
        primary = world.pods.get(str(world.status.get("primaryPod") or world.names.pod(0)))
        wanted = terminating + ([primary.node] if spec.replicas >= 2 and primary is not None and primary.node
                                else [])
        while wanted:
            node = wanted.pop()
            try:
                world.nodes[node] = reader.get("v1", "Node", node, None)
            except ForbiddenError:
                world.node_error = (f"cannot read Node {node} (RBAC: nodes get/list/watch): a drain of the "
                                    "primary's node waits for a manual switchover")
                return
            if primary is not None and node == primary.node and world.cordoned(node):
                wanted += sorted({p.node for p in world.pods.values() if p.node and p.node not in world.nodes})

    def _storage_classes(self, world: World, reader: Reader, spec: OmenDBSpec) -> None:
        """allowVolumeExpansion of the classes of claims that should grow (only then is it needed)."""
        from kubernetes.utils.quantity import parse_quantity

        want = {"data": spec.storage.data.size, "wal": spec.storage.wal.size}
        for pvc in world.items("PersistentVolumeClaim"):
            view = claim_view(pvc)
            if view is None or view.volume not in want or not view.storage_class:
                continue
            if parse_quantity(view.requested) < parse_quantity(want[view.volume]) and \
                    view.storage_class not in world.expandable:
                sc = reader.get("storage.k8s.io/v1", "StorageClass", view.storage_class, None)
                world.expandable[view.storage_class] = bool(sc and sc.get("allowVolumeExpansion"))

    def _watched_health(self, world: World, reader: Reader, spec: OmenDBSpec) -> None:
        """/health of the pod an upgrade replaced last, once it is Ready again."""
        pod_name = (world.status.get("upgrade") or {}).get("pod")
        pod = world.child("Pod", pod_name) if pod_name else None
        if pod is not None and world.statefulset is not None and pod_ready(pod) and \
                not pod["metadata"].get("deletionTimestamp"):
            world.watched_health = self.health(reader, pod, world.name, spec)

    def _restore_stats(self, world: World, reader: Reader, spec: OmenDBSpec) -> None:
        """The primary's stats while a restore verifies what it restored."""
        if any((r.get("status") or {}).get("step") == restores.VERIFY and
               (r.get("status") or {}).get("phase") not in restores.FINISHED for r in world.restores):
            try:
                world.restore_stats = (self.stats(reader, world.name, world.namespace, spec), None)
            except Exception as exc:  # noqa: BLE001 - reported in the status, retried until a timeout
                world.restore_stats = (None, f"{type(exc).__name__}: {exc}")

