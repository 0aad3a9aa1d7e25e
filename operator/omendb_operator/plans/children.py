"""Everything one OmenDB should own, as manifests: the pure ``spec -> list of manifests`` step.

The reconcile shell reads what only the cluster knows (existing generated Secrets, the user's htpasswd
Secret, whether the monitoring CRDs exist) and passes it in; nothing here talks to the API.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from omendb_operator.spec import OmenDBSpec
from omendb_operator.specs import (
    backup_key,
    cert_manager,
    certificates,
    configmap,
    cronjobs,
    monitoring,
    networkpolicy,
    pdb,
    secrets,
    serviceaccount,
    services,
    statefulset,
)


@dataclass(frozen=True)
class Observed:
    """What the reconcile shell read from the cluster before building."""

    users_secret: dict[str, str] = field(default_factory=dict)
    backup_key_secret: dict[str, str] = field(default_factory=dict)  # NAME-backup-key's data, if it exists
    user_htpasswd: str | None = None
    ca_secret: dict[str, str] = field(default_factory=dict)
    tls_secret: dict[str, str] = field(default_factory=dict)
    monitoring_api: bool = False
    cert_manager_api: bool = False  # cert-manager's Certificate kind exists
    primary_pod: str | None = None
    # Set while an operation (restore, hibernation: issue 7; a scale-down waiting on a switchover) must hold
    # the pod count.
    replicas_override: int | None = None
    # The user's TLS Secret (spec.tls.secretName), or the one cert-manager writes, has ca.crt: mounted for
    # replicas to verify the primary.
    user_tls_ca: bool = False
    # Set while a restore is in progress (restores.py): the backup CronJobs are suspended.
    suspend_backups: bool = False
    # The operator's own namespace (None when it runs outside the cluster): the NetworkPolicy admits it.
    operator_namespace: str | None = None


@dataclass
class Desired:
    manifests: list[dict[str, Any]]
    # Significant changes, reported as events: (reason, message).
    actions: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    cert_not_after: dt.datetime | None = None
    skipped_monitoring: bool = False  # PrometheusRule/ServiceMonitor wanted, CRDs absent


def build_children(owner: dict[str, Any], spec: OmenDBSpec, observed: Observed, now: dt.datetime,
                   cluster_domain: str = "cluster.local") -> Desired:
    name, namespace = owner["metadata"]["name"], owner["metadata"]["namespace"]
    out: list[dict[str, Any]] = []
    actions: list[tuple[str, str]] = []
    warnings: list[str] = []

    tls_ca = spec.tls.generate or observed.user_tls_ca
    cm = configmap.build_configmap(owner, spec, observed.primary_pod, tls_ca)
    out.append(cm)

    users = secrets.build_users_secret(owner, spec, observed.users_secret, observed.user_htpasswd)
    out.append(users.manifest)
    if users.generated:
        actions.append(("CredentialsGenerated",
                        f"generated credentials for user {spec.auth.admin_user!r} in Secret {name}-users"))
    warnings += users.warnings

    # Always, not only with backups enabled: restore Jobs mount it too, and a key never changes once made.
    key = backup_key.build_backup_key_secret(owner, spec, observed.backup_key_secret)
    out.append(key.manifest)
    if key.generated:
        actions.append(("BackupKeyGenerated",
                        f"generated the backup key in Secret {name}-backup-key: backups are signed with it; "
                        "keep a copy, backups cannot be authenticated without it"))

    cert_not_after = None
    if spec.tls.enabled and spec.tls.generate:
        plan = certificates.plan_certificates(
            name, namespace, observed.ca_secret, observed.tls_secret, now,
            duration=dt.timedelta(days=spec.tls.duration_days),
            renew_before=dt.timedelta(days=spec.tls.renew_before_days), cluster_domain=cluster_domain)
        out.append(certificates.build_ca_secret(owner, plan.ca_data))
        out.append(certificates.build_tls_secret(owner, plan.tls_data))
        actions += [("CertificateIssued", a) for a in plan.actions]
        cert_not_after = plan.not_after
    if spec.tls.cert_manager and observed.cert_manager_api:
        out.append(cert_manager.build_certificate(owner, spec, cluster_domain))

    out += services.build_services(owner, spec.replicas)
    out.append(serviceaccount.build_service_account(owner))
    out.append(statefulset.build_statefulset(owner, spec, configmap.config_hash(cm["data"]["omendb.toml"]),
                                             observed.replicas_override, tls_ca))
    out += pdb.build_pdbs(owner, spec.replicas)
    if spec.network_policy.enabled:
        out.append(networkpolicy.build_network_policy(owner, spec, observed.operator_namespace))
    if spec.backup.enabled:
        if spec.backup.object_store is None:
            out.append(cronjobs.build_backup_volume(owner, spec))
        out += cronjobs.build_cronjobs(owner, spec, observed.suspend_backups)

    skipped = False
    wants_monitoring = spec.monitoring.prometheus_rule or spec.monitoring.service_monitor
    if wants_monitoring and not observed.monitoring_api:
        skipped = True
    elif observed.monitoring_api:
        if spec.monitoring.prometheus_rule:
            out.append(monitoring.build_prometheus_rule(owner, spec))
        if spec.monitoring.service_monitor:
            out.append(monitoring.build_service_monitor(owner, spec))
    return Desired(manifests=out, actions=actions, warnings=warnings, cert_not_after=cert_not_after,
                   skipped_monitoring=skipped)


def stale_children(spec: OmenDBSpec, observed: Observed) -> list[tuple[str, str, str]]:
    """(apiVersion, kind, name suffix) of children a spec change made unwanted, to delete: the primary's
    budget below two pods, backups switched off, monitoring switched off, the NetworkPolicy switched off,
    TLS no longer generated or no longer from cert-manager. The backup volume is never in this list."""
    stale: list[tuple[str, str, str]] = []
    if spec.replicas < 2:  # one pod: no switchover target, so no budget that holds the primary
        stale.append(("policy/v1", "PodDisruptionBudget", "-primary"))
    if not spec.backup.enabled:
        suffixes = ("-backup-full", "-backup-incremental", "-backup-cleanup")
        stale += [("batch/v1", "CronJob", s) for s in suffixes]
    if observed.monitoring_api and not spec.monitoring.prometheus_rule:
        stale.append((monitoring.MONITORING_API, "PrometheusRule", ""))
    if observed.monitoring_api and not spec.monitoring.service_monitor:
        stale.append((monitoring.MONITORING_API, "ServiceMonitor", ""))
    if observed.cert_manager_api and not spec.tls.cert_manager:
        stale.append((cert_manager.CERT_MANAGER_API, cert_manager.CERTIFICATE_KIND, ""))
    if not spec.network_policy.enabled:
        stale.append((networkpolicy.API, networkpolicy.KIND, ""))
    if not (spec.tls.generated or spec.tls.cert_manager):
        stale += [("v1", "Secret", "-tls")]  # NAME-ca is kept: clients may still trust it
    return stale
