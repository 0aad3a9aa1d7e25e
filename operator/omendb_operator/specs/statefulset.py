"""The StatefulSet running ``omendb serve``: probes, volumes, the restricted security context, spreading."""

from __future__ import annotations

from typing import Any

from omendb_operator import labels as L
from omendb_operator.spec import OmenDBSpec
from omendb_operator.specs.backup_store import wal_archive_access
from omendb_operator.specs.configmap import (
    CONFIG_DIR,
    CONFIG_FILE,
    DATA_DIR,
    PRIMARY_POD_FILE,
    PRIMARY_POD_KEY,
    REPLICATION_CREDENTIALS_FILE,
    WAL_DIR,
)
from omendb_operator.specs.secrets import CREDENTIALS_KEY, HTPASSWD_KEY
from omendb_operator.specs.security import container_security_context, pod_security_context, writable_env

CONTAINER_NAME = "omendb"  # the guide's `kubectl set image ... omendb=omendb:$VERSION` names it
POD_MANAGEMENT_POLICY = "Parallel"
TERMINATION_GRACE_SECONDS = 60  # time for a final checkpoint on SIGTERM
IMAGE_ANNOTATION = f"{L.GROUP}/image"


def tls_secret_name(name: str, spec: OmenDBSpec) -> str:
    return spec.tls.secret(name)


def _config_volume(name: str, spec: OmenDBSpec, tls_ca: bool) -> dict[str, Any]:
    """One projected volume at /etc/omendb: omendb.toml, primary-pod, users.htpasswd, the replication
    credentials and tls/. Projected (not subPath) mounts are updated in place by the kubelet, so a renewed
    certificate or a changed user list reaches the engine, which reloads them, without restarting the pod;
    primary-pod is read at start (a pod restarted after a failover starts in its new role)."""
    names = L.Names(name)
    sources: list[dict[str, Any]] = [
        {"configMap": {"name": names.config, "items": [{"key": "omendb.toml", "path": "omendb.toml"},
                                                       {"key": PRIMARY_POD_KEY, "path": PRIMARY_POD_KEY}]}},
    ]
    if spec.auth.enabled:
        credentials = REPLICATION_CREDENTIALS_FILE.removeprefix(CONFIG_DIR + "/")
        sources.append({"secret": {"name": names.users,
                                   "items": [{"key": HTPASSWD_KEY, "path": "users.htpasswd"},
                                             {"key": CREDENTIALS_KEY, "path": credentials}]}})
    if spec.tls.enabled:
        items = [{"key": "tls.crt", "path": "tls/tls.crt"}, {"key": "tls.key", "path": "tls/tls.key"}]
        if spec.tls.generate or tls_ca:
            items.append({"key": "ca.crt", "path": "tls/ca.crt"})
        sources.append({"secret": {"name": tls_secret_name(name, spec), "items": items}})
    return {"name": "config", "projected": {"sources": sources, "defaultMode": 0o440}}


def primary_url_template(name: str, namespace: str, spec: OmenDBSpec) -> str:
    """The primary's API URL with {pod} for its pod name, through the headless Service (whose DNS names
    resolve before pods are ready) and covered by the generated certificate's wildcard names."""
    scheme = "https" if spec.tls.enabled else "http"
    return f"{scheme}://{{pod}}.{L.Names(name).headless_service}.{namespace}.svc:{L.API_PORT}"


def _probe(path: str, spec: OmenDBSpec, *, period: int, failures: int, timeout: int = 5) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "api", "scheme": "HTTPS" if spec.tls.enabled else "HTTP"},
        "periodSeconds": period,
        "timeoutSeconds": timeout,
        "failureThreshold": failures,
    }


def _affinity(name: str, spec: OmenDBSpec) -> dict[str, Any] | None:
    if spec.scheduling.affinity is not None:
        return spec.scheduling.affinity
    mode = spec.scheduling.pod_anti_affinity
    term = {"labelSelector": {"matchLabels": L.selector_labels(name)},
            "topologyKey": "kubernetes.io/hostname"}
    if mode == "required":
        return {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term]}}
    if mode == "preferred":
        return {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 100, "podAffinityTerm": term}]}}
    return None


def _topology_spread(name: str, spec: OmenDBSpec) -> list[dict[str, Any]]:
    if spec.scheduling.topology_spread_constraints is not None:
        return spec.scheduling.topology_spread_constraints
    # Soft by default (ScheduleAnyway): a one-node or one-zone cluster still runs every replica.
    return [
        {"maxSkew": 1, "topologyKey": key, "whenUnsatisfiable": "ScheduleAnyway",
         "labelSelector": {"matchLabels": L.selector_labels(name)}}
        for key in ("kubernetes.io/hostname", "topology.kubernetes.io/zone")
    ]


def _claim(name: str, size: str, storage_class: str | None) -> dict[str, Any]:
    spec: dict[str, Any] = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}}
    if storage_class:
        spec["storageClassName"] = storage_class
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name}, "spec": spec}


def build_statefulset(owner: dict[str, Any], spec: OmenDBSpec, config_hash: str,
                      replicas: int | None = None, tls_ca: bool = True) -> dict[str, Any]:
    """The database StatefulSet. ``replicas`` overrides spec.replicas for operations that must hold the
    count (restore scales to zero, issue 7; a scale-down waiting for a switchover); ``config_hash`` in the
    pod template rolls the pods when omendb.toml changes, because the engine reads it only at start.
    ``tls_ca``: the user's TLS Secret has ca.crt (mounted for replicas to verify the primary)."""
    name = owner["metadata"]["name"]
    namespace = owner["metadata"]["namespace"]
    names = L.Names(name)
    pod_labels = L.labels(name, "database")
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": spec.container_image,
        "imagePullPolicy": spec.image_pull_policy,
        # Every pod shares omendb.toml; its role comes from primary-pod at start (docs/replication.md).
        "command": ["omendb", "serve", "--config", CONFIG_FILE, "--primary-pod-file", PRIMARY_POD_FILE,
                    "--primary-url-template", primary_url_template(name, namespace, spec)],
        "ports": [{"name": "api", "containerPort": L.API_PORT, "protocol": "TCP"},
                  {"name": "metrics", "containerPort": L.METRICS_PORT, "protocol": "TCP"}],
        "env": [
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            *writable_env(),
        ],
        "resources": spec.resources,
        # A restarted pod's clients wait for these (e2e/tests/test_restart.py measures it). /health answers
        # as soon as the server listens, /ready once the database is open (it opens in the background): the
        # startup probe every second, for up to 10 min of WAL replay; the kubelet then probes readiness at
        # once and every 2 s, so the pod is Ready at most 2 s after its database opened (it was 5 s). Still
        # 16 s of failed /ready before a pod leaves the Services, as with 3 x 5 s before.
        "startupProbe": _probe("/health", spec, period=1, failures=600),
        "livenessProbe": _probe("/health", spec, period=10, failures=3),
        "readinessProbe": _probe("/ready", spec, period=2, failures=8),
        "securityContext": container_security_context(),
        "volumeMounts": [
            {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
            {"name": "data", "mountPath": DATA_DIR},
            {"name": "wal", "mountPath": WAL_DIR},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    pod_spec: dict[str, Any] = {
        # Its own account (specs/serviceaccount.py), with no token: the engine never talks to the
        # Kubernetes API.
        "serviceAccountName": L.Names(name).service_account,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": pod_security_context(),
        "terminationGracePeriodSeconds": TERMINATION_GRACE_SECONDS,
        "containers": [container],
        "volumes": [_config_volume(name, spec, tls_ca), {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}}],
        "topologySpreadConstraints": _topology_spread(name, spec),
    }
    affinity = _affinity(name, spec)
    if affinity:
        pod_spec["affinity"] = affinity
    archive = wal_archive_access(spec, name)  # [wal_archive]: the bucket's settings and the signing key
    container["env"] += archive.env
    container["volumeMounts"] += archive.mounts
    pod_spec["volumes"] += archive.volumes
    if spec.scheduling.node_selector:
        pod_spec["nodeSelector"] = spec.scheduling.node_selector
    if spec.scheduling.tolerations:
        pod_spec["tolerations"] = spec.scheduling.tolerations
    if spec.scheduling.priority_class_name:
        pod_spec["priorityClassName"] = spec.scheduling.priority_class_name
    if spec.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": s} for s in spec.image_pull_secrets]
    keep = "Delete" if spec.storage.delete_claims_on_delete else "Retain"
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        # The image the operator chose (upgrade.py reads it back: a hand edit of the template is put back,
        # never mistaken for the version the pods run). On the StatefulSet, not the pod template.
        "metadata": L.metadata(owner, names.statefulset, "database",
                               annotations={IMAGE_ANNOTATION: spec.container_image}),
        "spec": {
            "replicas": spec.replicas if replicas is None else replicas,
            "serviceName": names.headless_service,
            "selector": {"matchLabels": L.selector_labels(name)},
            # All pods start at once: after a full restart the primary may be any pod, and with OrderedReady
            # pod 0 (then a replica waiting for its primary) would hold back the very pod it waits for.
            "podManagementPolicy": POD_MANAGEMENT_POLICY,
            # The operator replaces pods itself, one at a time, replicas first and the primary last after
            # a switchover, with a backup first and a rollback on timeout (rollout.py, upgrade.py).
            "updateStrategy": {"type": "OnDelete"},
            # Data volumes outlive the OmenDB (and scale-downs) unless the spec says otherwise.
            "persistentVolumeClaimRetentionPolicy": {
                "whenDeleted": keep, "whenScaled": "Delete" if spec.storage.delete_claims_on_scale_down else "Retain"},
            "template": {
                "metadata": {"labels": pod_labels,
                             "annotations": {L.CONFIG_HASH_ANNOTATION: config_hash}},
                "spec": pod_spec,
            },
            "volumeClaimTemplates": [
                _claim("data", spec.storage.data.size, spec.storage.data.storage_class_name),
                _claim("wal", spec.storage.wal.size, spec.storage.wal.storage_class_name),
            ],
        },
    }


def claim_template_drift(desired: dict[str, Any], live: dict[str, Any] | None) -> list[str]:
    """Warnings for claim templates the spec changed but the API server will not (they are immutable):
    existing volumes keep their size and class until volumes.py expands them."""
    if not live:
        return []
    templates = live.get("spec", {}).get("volumeClaimTemplates", [])
    have = {t["metadata"]["name"]: t.get("spec", {}) for t in templates}
    out = []
    for template in desired["spec"]["volumeClaimTemplates"]:
        name, want = template["metadata"]["name"], template["spec"]
        old = have.get(name, {})
        old_size = old.get("resources", {}).get("requests", {}).get("storage")
        new_size = want["resources"]["requests"]["storage"]
        if old_size and old_size != new_size:
            out.append(f"spec.storage.{name}.size is {new_size} but the {name} volumes were made with "
                       f"{old_size}; see status.storage for their expansion")
        if want.get("storageClassName") and want.get("storageClassName") != old.get("storageClassName"):
            out.append(f"spec.storage.{name}.storageClassName cannot change for existing volumes")
    return out
