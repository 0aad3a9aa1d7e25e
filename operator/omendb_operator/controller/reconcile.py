"""One reconcile of one OmenDB: read what the builders need, build, apply, update status, report events.

This is the I/O shell around the pure builders (children.py, status.py); kopf handlers and the resync
loop only enqueue keys, and a worker calls :meth:`Reconciler.reconcile`.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic.exceptions import DynamicApiError, ResourceNotFoundError

from omendb_operator import labels as L
from omendb_operator import metrics
from omendb_operator.controller import apply as applier
from omendb_operator.controller import failover
from omendb_operator.controller.day2 import Day2, HealthCheck
from omendb_operator.controller.health import PodHealth
from omendb_operator.controller.kube import Kube
from omendb_operator.controller.operations import Operations
from omendb_operator.plans import upgrade
from omendb_operator.plans.children import Observed, build_children, stale_children
from omendb_operator.plans.podcount import decide_pod_count
from omendb_operator.plans.status import Observation, build_status, status_changed, status_patch
from omendb_operator.spec import OmenDBSpec, SpecError, parse_spec
from omendb_operator.specs import certificates, monitoring
from omendb_operator.specs.secrets import HTPASSWD_KEY, decode_secret_data
from omendb_operator.specs.statefulset import claim_template_drift

log = logging.getLogger(__name__)


def _api_message(exc: Exception) -> str:
    """The API server's own message (it says which field is wrong), else the exception text."""
    body = getattr(exc, "body", None)
    if isinstance(body, bytes):
        body = body.decode(errors="replace")
    if isinstance(body, str):
        try:
            return str(json.loads(body).get("message", body))
        except (ValueError, AttributeError):
            return body
    return str(exc)


EnginesFactory = Callable[[Kube, str, str, OmenDBSpec], failover.Engines]


def users_source_error(secret: str, namespace: str, ref: dict[str, Any] | None,
                       configmap: dict[str, Any] | None) -> str:
    """Why spec.auth.htpasswdSecretName cannot be used, with the command that fixes it.

    The guide keeps its htpasswd file in a ConfigMap (`kubectl create configmap omendb-users
    --from-file=...`). That is refused: password hashes are credentials, and ConfigMaps are readable by
    every role that may read configuration (and are printed by `kubectl describe`); the message says how
    to move the same file into a Secret."""
    create = f"`kubectl create secret generic {secret} --from-file={HTPASSWD_KEY}=PATH`"
    if ref is None and configmap is not None:
        keys = sorted((configmap.get("data") or {}).keys())
        source = keys[0] if len(keys) == 1 else HTPASSWD_KEY
        jsonpath = "{.data." + source.replace(".", "\\.") + "}"  # kubectl jsonpath escapes dots in keys
        return (f"spec.auth.htpasswdSecretName names {secret}, which is a ConfigMap, not a Secret (the guide's "
                f"`kubectl create configmap`): users are read from Secrets only, because password hashes are "
                f"credentials and ConfigMaps are readable more widely. Move the file into a Secret: "
                f"`kubectl get configmap {secret} -n {namespace} -o jsonpath='{jsonpath}' > {HTPASSWD_KEY}`, "
                f"`kubectl create secret generic {secret} -n {namespace} --from-file={HTPASSWD_KEY}={HTPASSWD_KEY}`, "
                f"then `kubectl delete configmap {secret} -n {namespace}`")
    problem = "does not exist" if ref is None else f"has no key {HTPASSWD_KEY}"
    return f"Secret {secret} (spec.auth.htpasswdSecretName) {problem}; create it with {create}"


class Reconciler:
    def __init__(self, kube: Kube, cluster_domain: str = "cluster.local",
                 clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
                 health: HealthCheck | None = None,
                 engines: EnginesFactory = failover.cluster_engines,
                 requeue: Callable[[str, str, float], None] | None = None) -> None:
        self.kube = kube
        self.cluster_domain = cluster_domain
        self.clock = clock
        # How the failover step reaches the engines (pod DNS names in the cluster; loopback in tests).
        self.engines = engines
        self.day2 = Day2(kube, health or PodHealth(kube), engines=engines)
        self.operations = Operations(kube)  # backups, restores, bootstrap (operations.py)
        self.requeue = requeue  # reconcile this OmenDB again after a delay (an operation in progress)

    def reconcile(self, namespace: str, name: str) -> str:
        started = time.monotonic()
        try:
            body = self.kube.get(L.API_VERSION, L.KIND, name, namespace)
            if body is None:
                self.operations.orphans(namespace, name, self.clock())  # backups/restores naming it fail
                result = "gone"
            elif body["metadata"].get("deletionTimestamp"):
                # Children go with the OmenDB by garbage collection; nothing to do, and no finalizer.
                result = "deleting"
            else:
                result = self._reconcile(body)
            metrics.RECONCILES.labels(result=result).inc()
            return result
        except Exception as exc:
            metrics.RECONCILES.labels(result="error").inc()
            metrics.RECONCILE_ERRORS.labels(error=type(exc).__name__).inc()
            raise
        finally:
            metrics.RECONCILE_DURATION.observe(time.monotonic() - started)

    def _owner(self, body: dict[str, Any]) -> dict[str, Any]:
        meta = body["metadata"]
        return {"apiVersion": L.API_VERSION, "kind": L.KIND,
                "metadata": {"name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"],
                             "generation": meta.get("generation", 0)}}

    def _secret(self, name: str, namespace: str) -> dict[str, Any] | None:
        return self.kube.get("v1", "Secret", name, namespace)

    def _reconcile(self, body: dict[str, Any]) -> str:
        owner = self._owner(body)
        name, namespace = owner["metadata"]["name"], owner["metadata"]["namespace"]
        names = L.Names(name)
        now = self.clock()
        previous = body.get("status") or {}
        try:
            spec = parse_spec(body.get("spec"))
        except SpecError as exc:
            new = build_status(owner, None, Observation(spec_error=str(exc)), previous, now)
            if status_changed(previous, new):
                self.kube.patch_status(L.API_VERSION, L.KIND, name, namespace, status_patch(previous, new))
                self.kube.event(owner, "Warning", "InvalidSpec", str(exc))
            return "invalid"

        # Backups, restores and bootstrap first: they decide the pod count and CronJob suspension below.
        ops = self.operations.step(owner, spec, previous, now)
        obs = Observation(last_backup=ops.last_backup, backup_failure=ops.backup_failure,
                          restore=ops.restore_marker, bootstrap=ops.bootstrap)
        if ops.requeue_after is not None and self.requeue is not None:
            self.requeue(namespace, name, ops.requeue_after)
        user_htpasswd = None
        skip: set[tuple[str, str]] = set()
        users_live = self._secret(names.users, namespace)
        if spec.auth.htpasswd_secret_name:
            ref = self._secret(spec.auth.htpasswd_secret_name, namespace)
            data = decode_secret_data(ref)
            if HTPASSWD_KEY not in data:
                obs.apply_errors.append(users_source_error(
                    spec.auth.htpasswd_secret_name, namespace, ref,
                    self.kube.get("v1", "ConfigMap", spec.auth.htpasswd_secret_name, namespace)
                    if ref is None else None))
                if users_live is not None:
                    skip.add(("Secret", names.users))  # keep today's users rather than drop them
            else:
                user_htpasswd = data[HTPASSWD_KEY]
        # Day-2 operations (upgrade, hibernation, volume expansion) decide the image, the pod count and
        # whether the StatefulSet may be applied now (day2.py).
        live_sts = self.kube.get("apps/v1", "StatefulSet", names.statefulset, namespace)
        before = self.day2.before_build(owner, spec, previous, live_sts, now)
        if before.skip_statefulset:
            skip.add(("StatefulSet", names.statefulset))
        generated_tls = spec.tls.enabled and spec.tls.generate
        # No failover while the pods are held at zero on purpose (restore, bootstrap, hibernation).
        repl = self._replication(body, owner, spec, previous, live_sts,
                                 paused=0 in (ops.replicas_override, before.replicas_override))
        pods = decide_pod_count(spec.replicas, int(((live_sts or {}).get("spec") or {}).get("replicas") or 0),
                                restore_hold=ops.replicas_override, hibernation_hold=before.replicas_override,
                                switchover_hold=repl.replicas_hold, backup_jobs=before.active_backup_jobs)
        wants_monitoring = spec.monitoring.prometheus_rule or spec.monitoring.service_monitor
        observed = Observed(
            users_secret=decode_secret_data(users_live),
            backup_key_secret=decode_secret_data(self._secret(names.backup_key, namespace)),
            user_htpasswd=user_htpasswd,
            ca_secret=decode_secret_data(self._secret(names.ca, namespace)) if generated_tls else {},
            tls_secret=decode_secret_data(self._secret(names.tls, namespace)) if generated_tls else {},
            monitoring_api=(self.kube.has_kind(monitoring.MONITORING_API, "PrometheusRule")
                            and self.kube.has_kind(monitoring.MONITORING_API, "ServiceMonitor")),
            primary_pod=repl.primary_pod,
            replicas_override=pods.override,
            suspend_backups=ops.suspend_backups,
            user_tls_ca=bool(spec.tls.enabled and not spec.tls.generate and decode_secret_data(
                self._secret(str(spec.tls.secret_name), namespace)).get("ca.crt")),
        )
        desired = build_children(owner, before.spec, observed, now, self.cluster_domain)
        obs.warnings += desired.warnings
        obs.monitoring_missing = desired.skipped_monitoring and wants_monitoring
        obs.tls_not_after = desired.cert_not_after
        if spec.tls.enabled and not spec.tls.generate:
            self._check_user_tls(spec, name, namespace, now, obs)

        sts_manifest = next(m for m in desired.manifests if m["kind"] == "StatefulSet")
        obs.warnings += claim_template_drift(sts_manifest, live_sts)

        changed: list[str] = []
        for manifest in desired.manifests:
            kind, child = manifest["kind"], manifest["metadata"]["name"]
            if (kind, child) in skip:
                continue
            try:
                outcome = applier.apply(self.kube, manifest)
            except (ApiException, DynamicApiError, ResourceNotFoundError) as exc:
                message = f"{kind} {child}: {_api_message(exc)}"
                obs.apply_errors.append(message)
                self.kube.event(owner, "Warning", "ApplyFailed", message)
                continue
            if outcome is not applier.Outcome.UNCHANGED:
                changed.append(f"{kind} {child} {outcome.value}")
        for api_version, kind, suffix in stale_children(spec, observed):
            child = f"{name}{suffix}"
            live = self.kube.get(api_version, kind, child, namespace) if self.kube.has_kind(
                api_version, kind) else None
            live_labels = (live or {}).get("metadata", {}).get("labels") or {}
            managed_by = live_labels.get("app.kubernetes.io/managed-by")
            if live and managed_by == L.MANAGED_BY:
                self.kube.delete(api_version, kind, child, namespace)
                changed.append(f"{kind} {child} deleted")

        if changed:
            self.kube.event(owner, "Normal", "Reconciled", "; ".join(changed)[:1000])
        for reason, message in desired.actions:
            self.kube.event(owner, "Normal", reason, message)
        if obs.monitoring_missing and changed:
            self.kube.event(owner, "Warning", "MonitoringCRDsMissing",
                            "PrometheusRule/ServiceMonitor CRDs are not installed; alerts and scraping "
                            "are not configured")
        for warning in desired.warnings:
            if changed:
                self.kube.event(owner, "Warning", "SpecWarning", warning)

        after = self.day2.after_apply(owner, spec, previous, before, now)
        for type_, reason, message in [*before.events, *after.events]:
            self.kube.event(owner, type_, reason, message)
        if after.requeue is not None and self.requeue is not None:
            # A pod's /health, an OmenDBBackup's phase and a claim's capacity are not watched.
            self.requeue(namespace, name, after.requeue)
        obs.upgrade, obs.storage = after.upgrade_state, before.volumes.status
        obs.upgrade_condition = upgrade.upgrade_condition(after.upgrade_state) if after.upgrade_state else None
        obs.storage_condition = before.volumes.condition
        obs.operation_waiting, obs.hibernation = after.waiting or pods.waiting, after.hibernation
        obs.warnings += before.volumes.warnings
        if before.upgrade.version != (spec.image or spec.version):
            obs.running_version = before.upgrade.version
        obs.statefulset = self.kube.get("apps/v1", "StatefulSet", names.statefulset, namespace)
        if spec.backup.enabled:
            obs.cronjobs = {
                "full": self.kube.get("batch/v1", "CronJob", names.backup_full, namespace),
                "incremental": self.kube.get("batch/v1", "CronJob", names.backup_incremental, namespace),
            }
        obs.replication = after.replication or repl.status  # an upgrade's switchover moved the primary
        new = build_status(owner, spec, obs, previous, now)
        if status_changed(previous, new):
            self.kube.patch_status(L.API_VERSION, L.KIND, name, namespace, status_patch(previous, new))
            old_phase = previous.get("phase")
            if old_phase != new["phase"]:
                kind = "Warning" if new["phase"] in ("Degraded", "Failed") else "Normal"
                self.kube.event(owner, kind, f"Phase{new['phase']}",
                                f"phase {old_phase or '(none)'} -> {new['phase']}")
        return "changed" if changed else "unchanged"

    def _replication(self, body: dict[str, Any], owner: dict[str, Any], spec: OmenDBSpec,
                     previous: dict[str, Any], live_sts: dict[str, Any] | None, *,
                     paused: bool = False) -> failover.Result:
        """Failover, switchover (annotation omendb.io/switchover-to) and role labels: failover.py."""
        meta = body["metadata"]
        name, namespace = meta["name"], meta["namespace"]
        requested = (meta.get("annotations") or {}).get(failover.SWITCHOVER_ANNOTATION)
        live = int(((live_sts or {}).get("spec") or {}).get("replicas") or 0)
        result = failover.run(self.kube, owner, spec, previous, self.engines(self.kube, name, namespace, spec),
                              self.clock, switchover_to=None if requested is None else requested.strip(),
                              live_replicas=live, paused=paused)
        if requested is not None and result.switchover_finished:
            # The request is consumed (done or refused, said in an event); metadata only, never spec.
            self.kube.patch(L.API_VERSION, L.KIND, name, namespace,
                            {"metadata": {"annotations": {failover.SWITCHOVER_ANNOTATION: None}}})
            refused = result.switchover_finished.startswith("refused")
            self.kube.event(owner, "Warning" if refused else "Normal",
                            "SwitchoverRefused" if refused else "SwitchoverDone",
                            f"{failover.SWITCHOVER_ANNOTATION}={requested}: {result.switchover_finished}")
        if result.requeue_after is not None and self.requeue is not None:
            self.requeue(namespace, name, result.requeue_after)
        return result

    def _check_user_tls(self, spec: OmenDBSpec, spec_name: str, namespace: str, now: dt.datetime,
                        obs: Observation) -> None:
        secret = self._secret(str(spec.tls.secret_name), namespace)
        data = decode_secret_data(secret)
        cert = certificates.load_cert(data.get("tls.crt"))
        if secret is None:
            obs.tls_error = f"Secret {spec.tls.secret_name} (spec.tls.secretName) does not exist"
        elif cert is None or not data.get("tls.key"):
            obs.tls_error = f"Secret {spec.tls.secret_name} has no readable tls.crt and tls.key"
        elif cert.not_valid_after_utc <= now:
            obs.tls_error = f"the certificate in {spec.tls.secret_name} expired at {cert.not_valid_after_utc}"
        else:
            obs.tls_not_after = cert.not_valid_after_utc
            problems, warnings = certificates.review_user_tls_secret(
                str(spec.tls.secret_name), data, spec_name, namespace, self.cluster_domain)
            obs.tls_problems += problems
            obs.tls_warnings += warnings
