"""The thin client every reconcile goes through: get, server-side apply, delete, status, events.

Built on the maintained ``kubernetes`` dynamic client (discovery, auth, kubeconfig or in-cluster
config). Every write is counted in the operator's metrics by kind and verb, so a no-op resync can be
seen to make no writes.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from typing import Any

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import ConflictError, NotFoundError, ResourceNotFoundError

from omendb_operator import labels as L
from omendb_operator.controller import metrics

log = logging.getLogger(__name__)

# How long "this API group does not exist" is believed before discovery is asked again (a CRD such
# as PrometheusRule may be installed while the operator runs).
DISCOVERY_RETRY_SECONDS = 120.0
KIND_CACHE_SECONDS = 60.0


def load_api_client() -> k8s.ApiClient:
    """In-cluster credentials when running in a pod, else the kubeconfig ($KUBECONFIG or ~/.kube/config)."""
    try:
        k8s_config.load_incluster_config()
    except k8s_config.ConfigException:
        try:
            k8s_config.load_kube_config()
        except (k8s_config.ConfigException, OSError) as exc:
            raise SystemExit(
                "omendb-operator cannot find Kubernetes credentials: it is not running in a pod with a "
                f"service account, and the kubeconfig could not be loaded ({exc}). Set KUBECONFIG to a "
                "kubeconfig file, or run the operator in the cluster.") from None
    return k8s.ApiClient()


class Kube:
    def __init__(self, api_client: k8s.ApiClient | None = None) -> None:
        self.api_client = api_client or load_api_client()
        self.dynamic = DynamicClient(self.api_client)
        self._refreshed: dict[tuple[str, str], float] = {}
        self._kinds: dict[str, tuple[float, frozenset[str]]] = {}
        self._lock = threading.Lock()

    def resource(self, api_version: str, kind: str) -> Any:
        key = (api_version, kind)
        with self._lock:
            try:
                return self.dynamic.resources.get(api_version=api_version, kind=kind)
            except ResourceNotFoundError:
                # Perhaps a CRD installed since discovery was cached: refresh, at most once in a while.
                last = self._refreshed.get(key)
                if last is not None and time.monotonic() - last < DISCOVERY_RETRY_SECONDS:
                    raise
                self._refreshed[key] = time.monotonic()
                self.dynamic.resources.invalidate_cache()
                return self.dynamic.resources.get(api_version=api_version, kind=kind)

    def has_kind(self, api_version: str, kind: str) -> bool:
        """Whether the API server serves ``kind`` now (asked directly, remembered for a minute: the
        dynamic client's discovery cache would not notice a CRD being removed)."""
        now = time.monotonic()
        with self._lock:
            cached = self._kinds.get(api_version)
        if cached is None or now - cached[0] > KIND_CACHE_SECONDS:
            path = f"/apis/{api_version}" if "/" in api_version else f"/api/{api_version}"
            try:
                metrics.API_READS.labels(kind=api_version, verb="discovery").inc()
                listing = self.dynamic.request("get", path).to_dict()
                kinds = frozenset(r.get("kind", "") for r in listing.get("resources", []))
            except NotFoundError:
                kinds = frozenset()
            cached = (now, kinds)
            with self._lock:
                self._kinds[api_version] = cached
        return kind in cached[1]

    def get(self, api_version: str, kind: str, name: str, namespace: str | None) -> dict[str, Any] | None:
        metrics.API_READS.labels(kind=kind, verb="get").inc()
        try:
            obj = self.resource(api_version, kind).get(name=name, namespace=namespace)
        except NotFoundError:
            return None
        return dict(obj.to_dict())

    def list(self, api_version: str, kind: str, namespace: str | None = None,
             label_selector: str | None = None) -> list[dict[str, Any]]:
        res = self.resource(api_version, kind)
        metrics.API_READS.labels(kind=kind, verb="list").inc()
        result = res.get(namespace=namespace, label_selector=label_selector)
        return [dict(item) for item in result.to_dict().get("items", [])]

    def apply(self, manifest: dict[str, Any], *, dry_run: bool = False) -> dict[str, Any]:
        meta = manifest["metadata"]
        res = self.resource(manifest["apiVersion"], manifest["kind"])
        kwargs: dict[str, Any] = {"field_manager": L.FIELD_MANAGER, "force_conflicts": True}
        if dry_run:
            kwargs["dry_run"] = "All"
        obj = res.server_side_apply(body=manifest, name=meta["name"], namespace=meta.get("namespace"),
                                    **kwargs)
        if not dry_run:
            metrics.API_WRITES.labels(kind=manifest["kind"], verb="apply").inc()
            log.info("applied %s %s/%s", manifest["kind"], meta.get("namespace"), meta["name"])
        return dict(obj.to_dict())

    def create(self, manifest: dict[str, Any]) -> bool:
        """Create ``manifest``; False when it exists already (made by an earlier reconcile: left as it is)."""
        meta = manifest["metadata"]
        try:
            self.resource(manifest["apiVersion"], manifest["kind"]).create(body=manifest,
                                                                           namespace=meta.get("namespace"))
        except ConflictError:
            return False
        metrics.API_WRITES.labels(kind=manifest["kind"], verb="create").inc()
        log.info("created %s %s/%s", manifest["kind"], meta.get("namespace"), meta["name"])
        return True

    def delete(self, api_version: str, kind: str, name: str, namespace: str | None, *, uid: str | None = None,
               orphan: bool = False, grace_seconds: int | None = None) -> bool:
        """Delete; ``uid``: only that incarnation (a precondition), ``orphan``: keep its dependents,
        ``grace_seconds``: the pod's grace period (0: at once). False when it is gone already (or was
        replaced: the uid precondition failed)."""
        body: dict[str, Any] = {}
        if uid:
            body["preconditions"] = {"uid": uid}
        if orphan:
            body["propagationPolicy"] = "Orphan"
        if grace_seconds is not None:
            body["gracePeriodSeconds"] = grace_seconds
        try:
            self.resource(api_version, kind).delete(name=name, namespace=namespace, body=body or None)
        except NotFoundError:
            return False
        except ConflictError:
            return False  # the uid precondition: a newer object of that name is not ours to delete
        metrics.API_WRITES.labels(kind=kind, verb="delete").inc()
        return True

    def patch(self, api_version: str, kind: str, name: str, namespace: str | None,
              body: dict[str, Any]) -> dict[str, Any]:
        """A JSON merge patch (e.g. a pod's role label, an annotation the operator consumed)."""
        obj = self.resource(api_version, kind).patch(body=body, name=name, namespace=namespace,
                                                     content_type="application/merge-patch+json")
        metrics.API_WRITES.labels(kind=kind, verb="patch").inc()
        return dict(obj.to_dict())

    def patch_status(self, api_version: str, kind: str, name: str, namespace: str,
                     status: dict[str, Any]) -> None:
        res = self.resource(api_version, kind)
        res.status.patch(body={"status": status}, name=name, namespace=namespace,
                         content_type="application/merge-patch+json")
        metrics.API_WRITES.labels(kind=kind, verb="status").inc()

    def event(self, involved: dict[str, Any], type_: str, reason: str, message: str) -> None:
        """Record a core/v1 Event on ``involved`` (never raises: an event is not worth a failed reconcile)."""
        meta = involved["metadata"]
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {"apiVersion": involved.get("apiVersion", L.API_VERSION),
                               "kind": involved.get("kind", L.KIND), "name": meta["name"],
                               "namespace": meta["namespace"], "uid": meta.get("uid")},
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": L.MANAGED_BY},
            "reportingComponent": L.MANAGED_BY,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            self.resource("v1", "Event").create(body=body, namespace=meta["namespace"])
            metrics.API_WRITES.labels(kind="Event", verb="create").inc()
        except Exception as exc:  # noqa: BLE001 - events are best effort by design
            log.warning("could not record event %s on %s: %s", reason, meta["name"], exc)
