"""The OmenDB spec, typed, with every default in one place.

The CRD (crds/omendb.io_omendbs.yaml) already rejects malformed specs at ``kubectl apply``; this module
turns the accepted mapping into dataclasses the builders read, and re-checks what only Python knows
(``spec.config`` against the engine's own schema, which the operator and engine share in one
distribution). A spec that fails here raises :class:`SpecError` whose message says what to change.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from kubernetes.utils.quantity import parse_quantity

from omendb.config import Config
from omendb.errors import ConfigError
from omendb_operator import labels as L
from omendb_operator.paths import (
    DATA_DIR,
    HTPASSWD_FILE,
    REPLICATION_CREDENTIALS_FILE,
    TLS_CA_FILE,
    TLS_CERT_FILE,
    TLS_KEY_FILE,
    WAL_DIR,
)

DEFAULT_VERSION = "0.1.0"
DEFAULT_IMAGE_REPOSITORY = "omendb/omendb"

# The guide's backup_schedule.sh: a full backup on Sunday, an incremental on every other day, then
# cleanup with RETENTION_DAYS=30. Times are in the cluster's (or spec.backup.timeZone's) zone.
DEFAULT_FULL_SCHEDULE = "0 1 * * 0"
DEFAULT_INCREMENTAL_SCHEDULE = "0 1 * * 1-6"
DEFAULT_CLEANUP_SCHEDULE = "0 4 * * *"
DEFAULT_RETENTION_DAYS = 30

# Small enough for a development cluster; production sets its own (the guide: 16 cores, 32 GiB).
DEFAULT_RESOURCES: dict[str, Any] = {"requests": {"cpu": "500m", "memory": "1Gi"},
                                     "limits": {"memory": "2Gi"}}

# The backup, restore and cleanup Jobs (spec.backup.resources): a small request, so they schedule next to
# the database, and a memory limit, so a ResourceQuota on limits admits them. backup_tool holds about the
# database's memory while it restores (docs/backup.md, "Limits"), so the limit is the database's own
# limits.memory; BACKUP_MEMORY_LIMIT only when the database has none.
BACKUP_REQUESTS: dict[str, str] = {"cpu": "100m", "memory": "256Mi"}
BACKUP_MEMORY_LIMIT = "1Gi"


def default_backup_resources(database_resources: dict[str, Any]) -> dict[str, Any]:
    """spec.backup.resources when the spec does not set it, from the database's spec.resources."""
    limit = ((database_resources or {}).get("limits") or {}).get("memory") or BACKUP_MEMORY_LIMIT
    return {"requests": dict(BACKUP_REQUESTS), "limits": {"memory": limit}}


# Config keys the operator sets from the rest of the spec (paths of mounted volumes, ports the
# Services and probes point at, TLS and auth switches). The CRD rejects them in spec.config too.
OPERATOR_OWNED_KEYS: dict[str, tuple[str, ...]] = {
    "database": ("data_dir",),
    "wal": ("dir",),
    "http": ("host", "port"),
    "security": ("auth_enabled", "tls_enabled", "tls_cert_file", "tls_key_file", "htpasswd_file"),
    "monitoring": ("prometheus_enabled", "prometheus_port"),
    # Per pod (which pod is the primary, whom the others follow, with which credentials): set from
    # status.primaryPod through `omendb serve --primary-pod-file` (docs/replication.md, "In Kubernetes").
    "replication": ("role", "primary_url", "credentials_file", "ca_file", "replica_id"),
    # The bucket of spec.backup.objectStore when archiveWal is on (specs/configmap.py).
    "wal_archive": ("url",),
}

DEFAULT_UPGRADE_TIMEOUT_SECONDS = 600
ENGINE_FENCE_AFTER_SECONDS = 15.0  # omendb.config.ReplicationSection.fence_after_seconds
DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")

SEMVER = re.compile(r"^v?\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$")


class SpecError(ValueError):
    """The OmenDB spec cannot be reconciled; the message names the field and the fix."""


@dataclass(frozen=True)
class VolumeSpec:
    size: str
    storage_class_name: str | None = None


@dataclass(frozen=True)
class StorageSpec:
    data: VolumeSpec = field(default_factory=lambda: VolumeSpec("10Gi"))
    wal: VolumeSpec = field(default_factory=lambda: VolumeSpec("2Gi"))
    # Data volumes outlive the OmenDB unless this is set (DESIGN §3).
    delete_claims_on_delete: bool = False
    # The volumes of pods removed by a scale-down are kept (a later scale-up reuses them) unless this is set.
    delete_claims_on_scale_down: bool = False


@dataclass(frozen=True)
class AuthSpec:
    enabled: bool = True
    # A Secret with key ``users.htpasswd`` whose users are added to the generated admin user.
    htpasswd_secret_name: str | None = None
    admin_user: str = "admin"


CERT_MANAGER_GROUP = "cert-manager.io"
ISSUER_KINDS = ("Issuer", "ClusterIssuer")


@dataclass(frozen=True)
class IssuerRef:
    """spec.tls.issuerRef, spelled like cert-manager's own: the (Cluster)Issuer that signs NAME-tls."""

    name: str
    kind: str = "Issuer"
    group: str = CERT_MANAGER_GROUP


@dataclass(frozen=True)
class TLSSpec:
    enabled: bool = True
    # True: the operator makes a CA (NAME-ca) and a server certificate (NAME-tls) and renews it.
    # False: ``secret_name`` names a kubernetes.io/tls Secret the user keeps up to date, or
    # ``issuer_ref`` names a cert-manager issuer (then generate is always False).
    generate: bool = True
    secret_name: str | None = None
    duration_days: int = 90
    renew_before_days: int = 30
    # cert-manager issues NAME-tls from a Certificate the operator owns (specs/cert_manager.py).
    issuer_ref: IssuerRef | None = None

    @property
    def generated(self) -> bool:
        """The operator itself makes NAME-ca and NAME-tls."""
        return self.enabled and self.generate

    @property
    def cert_manager(self) -> bool:
        """cert-manager makes NAME-tls from the operator's Certificate."""
        return self.enabled and self.issuer_ref is not None

    def secret(self, name: str) -> str:
        """The kubernetes.io/tls Secret the pods serve: NAME-tls unless the user names their own."""
        return L.Names(name).tls if self.generate or self.issuer_ref is not None else str(self.secret_name)


@dataclass(frozen=True)
class BackupVolumeSpec:
    size: str = "20Gi"
    storage_class_name: str | None = None
    access_modes: tuple[str, ...] = ("ReadWriteOnce",)
    # Backups outlive the OmenDB unless this is set.
    delete_on_delete: bool = False


@dataclass(frozen=True)
class SecretKeyRef:
    name: str
    key: str


@dataclass(frozen=True)
class ObjectStoreSpec:
    """spec.backup.objectStore: backups go to an S3-compatible bucket
    instead of the NAME-backups volume. Credentials follow the AWS conventions, as a file: the Secret's key
    holds an AWS shared-credentials file (``[default]`` with aws_access_key_id and aws_secret_access_key)."""

    bucket: str
    path: str | None = None  # the prefix in the bucket; None: NAMESPACE/NAME (specs/backup_store.py)
    endpoint_url: str | None = None
    region: str | None = None
    credentials: SecretKeyRef | None = None  # None: the environment's own (an instance role)
    profile: str | None = None
    ca: SecretKeyRef | None = None  # a CA bundle the endpoint's certificate chains to
    # spec.backup.objectStore.archiveWal: the primary ships its WAL there continuously ([wal_archive]), so
    # a restore from the bucket reaches the last seconds before a disaster, not the last backup.
    archive_wal: bool = True


@dataclass(frozen=True)
class BackupSpec:
    enabled: bool = True
    full_schedule: str = DEFAULT_FULL_SCHEDULE
    incremental_schedule: str = DEFAULT_INCREMENTAL_SCHEDULE
    cleanup_schedule: str = DEFAULT_CLEANUP_SCHEDULE
    retention_days: int = DEFAULT_RETENTION_DAYS
    time_zone: str | None = None
    suspend: bool = False
    volume: BackupVolumeSpec = field(default_factory=BackupVolumeSpec)
    # parse_spec fills it from the database's resources (default_backup_resources) when the spec leaves it out.
    resources: dict[str, Any] = field(default_factory=lambda: default_backup_resources(DEFAULT_RESOURCES))
    successful_jobs_history_limit: int = 3
    failed_jobs_history_limit: int = 3
    active_deadline_seconds: int = 6 * 3600
    object_store: ObjectStoreSpec | None = None


@dataclass(frozen=True)
class AlertThresholds:
    # The guide's alerts.yml values.
    query_latency_p95_seconds: float = 1.0
    memory_usage_ratio: float = 0.9
    wal_growth_bytes_per_hour: float = 1e9
    down_for: str = "30s"
    latency_for: str = "2m"
    memory_for: str = "5m"
    wal_growth_for: str = "15m"
    # A scheduled backup whose last run has not succeeded for this long fires OmenDBBackupFailing.
    backup_failing_for: str = "1h"


@dataclass(frozen=True)
class MonitoringSpec:
    prometheus_rule: bool = True
    service_monitor: bool = True
    scrape_interval: str = "30s"
    # Labels Prometheus selects rules and monitors by (e.g. release: kube-prometheus-stack).
    labels: dict[str, str] = field(default_factory=dict)
    alerts: AlertThresholds = field(default_factory=AlertThresholds)


@dataclass(frozen=True)
class SchedulingSpec:
    # "preferred" (default: spread pods over nodes when possible), "required" (never two on a node)
    # or "none". Ignored when ``affinity`` is given.
    pod_anti_affinity: str = "preferred"
    affinity: dict[str, Any] | None = None
    topology_spread_constraints: list[dict[str, Any]] | None = None
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: list[dict[str, Any]] = field(default_factory=list)
    priority_class_name: str | None = None


@dataclass(frozen=True)
class UpgradeSpec:
    # Take a full backup (an OmenDBBackup) before changing the version or image; a failed backup blocks
    # the upgrade unless this is false.
    backup_before_upgrade: bool = True
    # A replaced pod not Ready and healthy within this many seconds rolls the upgrade back.
    timeout_seconds: int = DEFAULT_UPGRADE_TIMEOUT_SECONDS


@dataclass(frozen=True)
class ReplicationSpec:
    # A write is acknowledged once this many replicas hold it (0: asynchronous). None: spec.config's
    # [replication] synchronous_replicas, else 0.
    synchronous_replicas: int | None = None


@dataclass(frozen=True)
class FailoverSpec:
    enabled: bool = True
    # How long the primary must be down (pod not ready and its engine not answering) before a replica
    # is promoted. Shorter fails over faster but also on a restart that would have recovered in place.
    delay_seconds: int = 30


@dataclass(frozen=True)
class NetworkPolicySpec:
    """spec.networkPolicy: an optional NetworkPolicy admitting only who needs the database's ports.

    ``clients``/``prometheus`` are NetworkPolicy peers (podSelector, namespaceSelector, ipBlock); None keeps
    the defaults (specs/networkpolicy.py): pods labelled ``omendb.io/client: NAME`` in the namespace for the
    API port, pods labelled ``app.kubernetes.io/name: prometheus`` in any namespace for the metrics port."""

    enabled: bool = False
    clients: list[dict[str, Any]] | None = None
    prometheus: list[dict[str, Any]] | None = None


@dataclass(frozen=True)
class BootstrapSpec:
    """spec.bootstrap.fromBackup: a new OmenDB starts from a backup of another OmenDB in its namespace
    (read from that OmenDB's backup volume SOURCE-backups), or from a bucket (``objectStore``: another
    cluster's or region's backups), optionally to a point in time."""

    source_cluster: str  # "" with object_store and no cluster.name
    backup_id: str = "latest"
    lsn: int | None = None
    time: str | None = None
    object_store: ObjectStoreSpec | None = None


@dataclass(frozen=True)
class OmenDBSpec:
    version: str = DEFAULT_VERSION
    image: str | None = None
    image_pull_policy: str = "IfNotPresent"
    image_pull_secrets: tuple[str, ...] = ()
    replicas: int = 1
    storage: StorageSpec = field(default_factory=StorageSpec)
    resources: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_RESOURCES))
    config: dict[str, dict[str, Any]] = field(default_factory=dict)
    auth: AuthSpec = field(default_factory=AuthSpec)
    tls: TLSSpec = field(default_factory=TLSSpec)
    backup: BackupSpec = field(default_factory=BackupSpec)
    monitoring: MonitoringSpec = field(default_factory=MonitoringSpec)
    scheduling: SchedulingSpec = field(default_factory=SchedulingSpec)
    upgrade: UpgradeSpec = field(default_factory=UpgradeSpec)
    # Scale to zero, keeping volumes, backups and Secrets; scheduled backups are suspended.
    hibernate: bool = False
    replication: ReplicationSpec = field(default_factory=ReplicationSpec)
    failover: FailoverSpec = field(default_factory=FailoverSpec)
    bootstrap: BootstrapSpec | None = None
    network_policy: NetworkPolicySpec = field(default_factory=NetworkPolicySpec)

    @property
    def container_image(self) -> str:
        return self.image or f"{DEFAULT_IMAGE_REPOSITORY}:{self.version.removeprefix('v')}"

    @property
    def database_name(self) -> str:
        return str(self.config.get("database", {}).get("name", "omendb"))


def _get(raw: dict[str, Any] | None, key: str, default: Any) -> Any:
    if not raw:
        return default
    value = raw.get(key)
    return default if value is None else value


def _volume(raw: dict[str, Any] | None, default_size: str) -> VolumeSpec:
    return VolumeSpec(size=str(_get(raw, "size", default_size)),
                      storage_class_name=_get(raw, "storageClassName", None))


def parse_duration(value: str, field_name: str) -> int:
    """Seconds in a Go-style duration such as ``10m``, ``90s`` or ``1h30m``."""
    m = DURATION.match(str(value).strip())
    if not m or not any(m.groups()):
        raise SpecError(f"{field_name} {value!r} is not a duration: use e.g. 10m, 90s or 1h30m")
    hours, minutes, seconds = (int(g or 0) for g in m.groups())
    total = hours * 3600 + minutes * 60 + seconds
    if total < 1:
        raise SpecError(f"{field_name} must be at least 1s, got {value!r}")
    return total


def _issuer_ref(raw: dict[str, Any] | None) -> IssuerRef | None:
    if not raw:
        return None
    ref = IssuerRef(name=str(_get(raw, "name", "")), kind=str(_get(raw, "kind", "Issuer")),
                    group=str(_get(raw, "group", CERT_MANAGER_GROUP)))
    if not ref.name:
        raise SpecError("spec.tls.issuerRef.name is required: the cert-manager Issuer (in this namespace) or "
                        "ClusterIssuer that signs the server certificate")
    if ref.kind not in ISSUER_KINDS:
        raise SpecError(f"spec.tls.issuerRef.kind {ref.kind!r} must be Issuer or ClusterIssuer")
    if ref.group != CERT_MANAGER_GROUP:
        # An external issuer (another group) would need its own RBAC and CRDs; not supported yet.
        raise SpecError(f"spec.tls.issuerRef.group {ref.group!r} is not supported: use {CERT_MANAGER_GROUP} "
                        "(cert-manager's own Issuer or ClusterIssuer), or leave it unset")
    return ref


def _tls(raw: dict[str, Any]) -> TLSSpec:
    issuer_ref = _issuer_ref(raw.get("issuerRef"))
    if issuer_ref is not None and raw.get("secretName"):
        raise SpecError("spec.tls.issuerRef and spec.tls.secretName are both set: with issuerRef cert-manager "
                        "writes the certificate into NAME-tls; remove secretName to use cert-manager, or "
                        "remove issuerRef to serve your own Secret")
    if issuer_ref is not None and raw.get("generate") is True:
        raise SpecError("spec.tls.generate is true and spec.tls.issuerRef is set: with issuerRef cert-manager "
                        "issues the certificate, not the operator; remove generate (or set it to false)")
    return TLSSpec(
        enabled=bool(_get(raw, "enabled", True)),
        # issuerRef implies the operator does not generate (generate defaults to true otherwise).
        generate=issuer_ref is None and bool(_get(raw, "generate", True)),
        secret_name=_get(raw, "secretName", None),
        duration_days=int(_get(raw, "durationDays", 90)),
        renew_before_days=int(_get(raw, "renewBeforeDays", 30)),
        issuer_ref=issuer_ref,
    )


def parse_spec(raw: dict[str, Any] | None) -> OmenDBSpec:
    """Turn ``OmenDB.spec`` (a mapping, camelCase) into an :class:`OmenDBSpec`, with defaults.

    Raises :class:`SpecError` with a message naming the field when the spec cannot be used."""
    raw = dict(raw or {})
    storage_raw = raw.get("storage") or {}
    auth_raw = raw.get("auth") or {}
    tls_raw = raw.get("tls") or {}
    backup_raw = raw.get("backup") or {}
    volume_raw = backup_raw.get("volume") or {}
    monitoring_raw = raw.get("monitoring") or {}
    alerts_raw = monitoring_raw.get("alerts") or {}
    sched_raw = raw.get("scheduling") or {}
    upgrade_raw = raw.get("upgrade") or {}
    replication_raw = raw.get("replication") or {}
    failover_raw = raw.get("failover") or {}

    alert_defaults = AlertThresholds()
    resources = dict(_get(raw, "resources", DEFAULT_RESOURCES))
    spec = OmenDBSpec(
        version=str(_get(raw, "version", DEFAULT_VERSION)),
        image=_get(raw, "image", None),
        image_pull_policy=_get(raw, "imagePullPolicy", "IfNotPresent"),
        image_pull_secrets=tuple(_get(raw, "imagePullSecrets", [])),
        replicas=int(_get(raw, "replicas", 1)),
        storage=StorageSpec(
            data=_volume(storage_raw.get("data"), "10Gi"),
            wal=_volume(storage_raw.get("wal"), "2Gi"),
            delete_claims_on_delete=bool(_get(storage_raw, "deleteClaimsOnDelete", False)),
            delete_claims_on_scale_down=bool(_get(storage_raw, "deleteClaimsOnScaleDown", False)),
        ),
        resources=resources,
        config={k: dict(v or {}) for k, v in (_get(raw, "config", {}) or {}).items()},
        auth=AuthSpec(
            enabled=bool(_get(auth_raw, "enabled", True)),
            htpasswd_secret_name=_get(auth_raw, "htpasswdSecretName", None),
            admin_user=str(_get(auth_raw, "adminUser", "admin")),
        ),
        tls=_tls(tls_raw),
        backup=BackupSpec(
            enabled=bool(_get(backup_raw, "enabled", True)),
            full_schedule=str(_get(backup_raw, "fullSchedule", DEFAULT_FULL_SCHEDULE)),
            incremental_schedule=str(_get(backup_raw, "incrementalSchedule", DEFAULT_INCREMENTAL_SCHEDULE)),
            cleanup_schedule=str(_get(backup_raw, "cleanupSchedule", DEFAULT_CLEANUP_SCHEDULE)),
            retention_days=int(_get(backup_raw, "retentionDays", DEFAULT_RETENTION_DAYS)),
            time_zone=_get(backup_raw, "timeZone", None),
            suspend=bool(_get(backup_raw, "suspend", False)),
            volume=BackupVolumeSpec(
                size=str(_get(volume_raw, "size", "20Gi")),
                storage_class_name=_get(volume_raw, "storageClassName", None),
                access_modes=tuple(_get(volume_raw, "accessModes", ["ReadWriteOnce"])),
                delete_on_delete=bool(_get(volume_raw, "deleteOnDelete", False)),
            ),
            resources=dict(_get(backup_raw, "resources", None) or default_backup_resources(resources)),
            successful_jobs_history_limit=int(_get(backup_raw, "successfulJobsHistoryLimit", 3)),
            failed_jobs_history_limit=int(_get(backup_raw, "failedJobsHistoryLimit", 3)),
            active_deadline_seconds=int(_get(backup_raw, "activeDeadlineSeconds", 6 * 3600)),
            object_store=parse_object_store(backup_raw.get("objectStore"), "spec.backup.objectStore"),
        ),
        monitoring=MonitoringSpec(
            prometheus_rule=bool(_get(monitoring_raw, "prometheusRule", True)),
            service_monitor=bool(_get(monitoring_raw, "serviceMonitor", True)),
            scrape_interval=str(_get(monitoring_raw, "scrapeInterval", "30s")),
            labels=dict(_get(monitoring_raw, "labels", {})),
            alerts=AlertThresholds(
                query_latency_p95_seconds=float(_get(alerts_raw, "queryLatencyP95Seconds",
                                                     alert_defaults.query_latency_p95_seconds)),
                memory_usage_ratio=float(_get(alerts_raw, "memoryUsageRatio",
                                              alert_defaults.memory_usage_ratio)),
                wal_growth_bytes_per_hour=float(_get(alerts_raw, "walGrowthBytesPerHour",
                                                     alert_defaults.wal_growth_bytes_per_hour)),
                down_for=str(_get(alerts_raw, "downFor", alert_defaults.down_for)),
                latency_for=str(_get(alerts_raw, "latencyFor", alert_defaults.latency_for)),
                memory_for=str(_get(alerts_raw, "memoryFor", alert_defaults.memory_for)),
                wal_growth_for=str(_get(alerts_raw, "walGrowthFor", alert_defaults.wal_growth_for)),
                backup_failing_for=str(_get(alerts_raw, "backupFailingFor",
                                            alert_defaults.backup_failing_for)),
            ),
        ),
        scheduling=SchedulingSpec(
            pod_anti_affinity=str(_get(sched_raw, "podAntiAffinity", "preferred")),
            affinity=_get(sched_raw, "affinity", None),
            topology_spread_constraints=_get(sched_raw, "topologySpreadConstraints", None),
            node_selector=dict(_get(sched_raw, "nodeSelector", {})),
            tolerations=list(_get(sched_raw, "tolerations", [])),
            priority_class_name=_get(sched_raw, "priorityClassName", None),
        ),
        upgrade=UpgradeSpec(
            backup_before_upgrade=bool(_get(upgrade_raw, "backupBeforeUpgrade", True)),
            timeout_seconds=parse_duration(_get(upgrade_raw, "timeout", "10m"), "spec.upgrade.timeout"),
        ),
        hibernate=bool(_get(raw, "hibernate", False)),
        replication=ReplicationSpec(
            synchronous_replicas=(None if replication_raw.get("synchronousReplicas") is None
                                  else int(replication_raw["synchronousReplicas"])),
        ),
        failover=FailoverSpec(
            enabled=bool(_get(failover_raw, "enabled", True)),
            delay_seconds=int(_get(failover_raw, "delaySeconds", 30)),
        ),
        bootstrap=_bootstrap(raw.get("bootstrap")),
        network_policy=_network_policy(raw.get("networkPolicy") or {}),
    )
    validate(spec)
    return spec


def _peers(raw: dict[str, Any], key: str) -> list[dict[str, Any]] | None:
    peers = raw.get(key)
    if peers is None:
        return None
    if not isinstance(peers, list) or not all(isinstance(p, dict) and p for p in peers):
        raise SpecError(f"spec.networkPolicy.{key} must be a list of NetworkPolicy peers (each with podSelector, "
                        "namespaceSelector or ipBlock); leave it out for the default")
    return [dict(p) for p in peers]


def _network_policy(raw: dict[str, Any]) -> NetworkPolicySpec:
    return NetworkPolicySpec(enabled=bool(_get(raw, "enabled", False)), clients=_peers(raw, "clients"),
                             prometheus=_peers(raw, "prometheus"))


def _key_ref(raw: dict[str, Any] | None, where: str, default_key: str) -> SecretKeyRef | None:
    if not raw:
        return None
    name = str(raw.get("name") or "")
    if not name:
        raise SpecError(f"{where}.name is required: the Secret (in this namespace) holding it")
    return SecretKeyRef(name, str(raw.get("key") or default_key))


S3_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def parse_object_store(raw: dict[str, Any] | None, where: str) -> ObjectStoreSpec | None:
    """An objectStore block (spec.backup.objectStore, or a restore's or bootstrap's source)."""
    if not raw:
        return None
    bucket = str(raw.get("bucket") or "")
    if not S3_BUCKET.match(bucket):
        raise SpecError(f"{where}.bucket {bucket!r} is not an S3 bucket name (3-63 lower-case letters, digits, "
                        "dots and dashes)")
    path = None if raw.get("path") is None else str(raw["path"]).strip("/")
    endpoint = raw.get("endpointURL")
    if endpoint is not None and not str(endpoint).startswith(("https://", "http://")):
        raise SpecError(f"{where}.endpointURL {endpoint!r} must start with https:// (or http://)")
    return ObjectStoreSpec(
        bucket=bucket, path=path, endpoint_url=endpoint, region=raw.get("region"),
        credentials=_key_ref(raw.get("credentials"), f"{where}.credentials", "credentials"),
        profile=(raw.get("credentials") or {}).get("profile"),
        ca=_key_ref(raw.get("ca"), f"{where}.ca", "ca.crt"),
        archive_wal=bool(raw.get("archiveWal", True)),
    )


def _bootstrap(raw: dict[str, Any] | None) -> BootstrapSpec | None:
    source = (raw or {}).get("fromBackup")
    if not source:
        return None
    cluster = str((source.get("cluster") or {}).get("name") or "")
    store = parse_object_store(source.get("objectStore"), "spec.bootstrap.fromBackup.objectStore")
    if not cluster and store is None:
        raise SpecError("spec.bootstrap.fromBackup needs cluster.name (the OmenDB in this namespace whose backup "
                        "volume NAME-backups holds the backup) or objectStore (the bucket holding it)")
    pit = source.get("pointInTime") or {}
    if pit.get("lsn") is not None and pit.get("time"):
        raise SpecError("spec.bootstrap.fromBackup.pointInTime takes time or lsn, not both")
    return BootstrapSpec(source_cluster=cluster, backup_id=str(source.get("backupId") or "latest"),
                         lsn=None if pit.get("lsn") is None else int(pit["lsn"]), time=pit.get("time"),
                         object_store=store)


def validate(spec: OmenDBSpec) -> None:
    """Checks the API server cannot make (or that must hold even if the CRD was edited)."""
    if spec.replicas < 1:
        raise SpecError(f"spec.replicas is {spec.replicas}; it must be at least 1")
    if not spec.image and not SEMVER.match(spec.version):
        raise SpecError(f"spec.version {spec.version!r} is not a version like 0.1.0; "
                        "set spec.version to a release or spec.image to a full image reference")
    if spec.tls.enabled and not spec.tls.generate and not spec.tls.secret_name and not spec.tls.issuer_ref:
        raise SpecError("spec.tls.secretName is required when spec.tls.enabled is true and spec.tls.generate "
                        "is false: name a kubernetes.io/tls Secret, set spec.tls.issuerRef to a cert-manager issuer, "
                        "or set spec.tls.generate: true")
    if spec.tls.renew_before_days >= spec.tls.duration_days:
        raise SpecError(f"spec.tls.renewBeforeDays ({spec.tls.renew_before_days}) must be less than "
                        f"spec.tls.durationDays ({spec.tls.duration_days})")
    if spec.scheduling.pod_anti_affinity not in ("preferred", "required", "none"):
        raise SpecError(f"spec.scheduling.podAntiAffinity {spec.scheduling.pod_anti_affinity!r} must be "
                        "one of preferred, required, none")
    for section, keys in OPERATOR_OWNED_KEYS.items():
        for key in keys:
            if key in spec.config.get(section, {}):
                raise SpecError(f"spec.config.{section}.{key} is set by the operator; remove it "
                                f"(see docs/operator.md, 'Keys the operator sets')")
    _validate_replication(spec)
    engine_config(spec)


def _validate_replication(spec: OmenDBSpec) -> None:
    in_config = spec.config.get("replication", {}).get("synchronous_replicas")
    wanted = spec.replication.synchronous_replicas
    if wanted is not None and in_config is not None and in_config != wanted:
        raise SpecError(f"spec.replication.synchronousReplicas ({wanted}) and "
                        f"spec.config.replication.synchronous_replicas ({in_config}) disagree; set only "
                        "spec.replication.synchronousReplicas")
    effective = wanted if wanted is not None else in_config
    if isinstance(effective, int) and not isinstance(effective, bool) and effective >= spec.replicas \
            and effective > 0:
        raise SpecError(f"spec.replication.synchronousReplicas is {effective} but spec.replicas is "
                        f"{spec.replicas}: only {spec.replicas - 1} replica(s) can acknowledge a write, so "
                        f"every write would time out; set spec.replicas to at least {effective + 1} or lower "
                        "synchronousReplicas")
    if spec.failover.delay_seconds < 1:
        raise SpecError(f"spec.failover.delaySeconds is {spec.failover.delay_seconds}; it must be at least 1")


def engine_config(spec: OmenDBSpec) -> Config:
    """The engine configuration the pods run with: spec.config plus the keys the operator owns.

    Validated by the engine's own loader, so a bad value is refused here with the engine's message."""
    try:
        # A stand-in URL when the WAL is archived: the engine checks the keys that go with it (the WAL on).
        archived = spec.backup.object_store is not None and spec.backup.object_store.archive_wal
        return Config.from_dict(render_config_dict(spec, wal_archive_url="s3://bucket/check" if archived else ""),
                                source="spec.config")
    except ConfigError as exc:
        raise SpecError(str(exc)) from None


# The guide's memory tuning: give the database 75% of the memory the container may use.
MEMORY_SHARE_NUM, MEMORY_SHARE_DEN = 3, 4


def memory_limit_mb(spec: OmenDBSpec) -> int | None:
    """75% of the container's memory limit in MiB, or None when no limit is set."""
    limit = (spec.resources.get("limits") or {}).get("memory")
    if not limit:
        return None
    return max(1, int(parse_quantity(str(limit)) * MEMORY_SHARE_NUM / MEMORY_SHARE_DEN) // (1024 * 1024))


def fence_after_seconds(spec: OmenDBSpec, *, effective: bool = True) -> float:
    """The engines' [replication] fence_after_seconds: half the failover delay, at least 5 s (0: off);
    ``effective``: a value the user set in spec.config wins, as it does in omendb.toml."""
    user = (spec.config.get("replication") or {}).get("fence_after_seconds")
    if effective and isinstance(user, int | float):
        return float(user)
    return max(5.0, spec.failover.delay_seconds / 2) if spec.failover.enabled else 0.0


def render_config_dict(spec: OmenDBSpec, tls_ca: bool = True, wal_archive_url: str = "") -> dict[str, dict[str, Any]]:
    """spec.config with the operator-owned keys filled in (the paths of the volumes it mounts, the ports
    its Services and probes use, the auth/TLS switches from spec.auth and spec.tls, and the replication
    keys every pod shares). ``tls_ca``: a CA certificate is mounted at TLS_CA_FILE (always with generated
    certificates; with the user's Secret when it has ca.crt), else replicas trust the system CAs.
    ``wal_archive_url``: where the primary ships its WAL (specs/backup_store.wal_archive_url), or ""."""
    out: dict[str, dict[str, Any]] = {name: dict(values) for name, values in spec.config.items()}
    database = out.setdefault("database", {})
    database["data_dir"] = DATA_DIR
    derived = memory_limit_mb(spec)
    if derived is not None:
        # Only when the user left them unset: an explicit value is theirs to keep.
        database.setdefault("max_memory_mb", derived)
        out.setdefault("limits", {}).setdefault("memory_limit_mb", derived)
    out.setdefault("wal", {})["dir"] = WAL_DIR
    http = out.setdefault("http", {})
    http["host"] = "0.0.0.0"
    http["port"] = L.API_PORT
    security = out.setdefault("security", {})
    security["auth_enabled"] = spec.auth.enabled
    security["tls_enabled"] = spec.tls.enabled
    security["tls_cert_file"] = TLS_CERT_FILE
    security["tls_key_file"] = TLS_KEY_FILE
    security["htpasswd_file"] = HTPASSWD_FILE
    admins = list(security.get("admin_users", ["admin"]))
    if spec.auth.admin_user not in admins:
        # The generated user runs the backup Jobs, which call admin endpoints.
        admins.append(spec.auth.admin_user)
    security["admin_users"] = admins
    # The per-pod keys (role, primary_url, replica_id) come from --primary-pod-file at start.
    replication = out.setdefault("replication", {})
    replication["credentials_file"] = REPLICATION_CREDENTIALS_FILE if spec.auth.enabled else ""
    replication["ca_file"] = TLS_CA_FILE if spec.tls.enabled and (spec.tls.generate or tls_ca) else ""
    if spec.replication.synchronous_replicas is not None:
        replication["synchronous_replicas"] = spec.replication.synchronous_replicas
    fence = fence_after_seconds(spec, effective=False)
    if fence != ENGINE_FENCE_AFTER_SECONDS:
        # Self-fencing (the engine's server/fencing.py): a primary cut off from its replicas and the API
        # stops writing before the earliest failover (its pod NotReady, ~40 s, plus the failover delay). Only
        # written when it differs from the engine's default (half the default delay), so the omendb.toml of
        # an OmenDB with the default delay, and the pods, stay as they were; every pod count gets the same
        # value, so scaling never changes it (a single pod never fences: no replica polls it).
        replication.setdefault("fence_after_seconds", fence)
    monitoring = out.setdefault("monitoring", {})
    monitoring["prometheus_enabled"] = True
    monitoring["prometheus_port"] = L.METRICS_PORT
    if wal_archive_url:
        out.setdefault("wal_archive", {})["url"] = wal_archive_url
    return out
