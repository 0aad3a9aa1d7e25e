"""The ``omendb.toml`` configuration: every section and key of the operations guide, typed and validated.

A key is either honoured or refused at load time with a message naming it; an unknown key is an error
that suggests the nearest valid name. Nothing is silently ignored. ``load_config`` reads a file,
``Config.from_dict`` a parsed mapping; ``apply_env`` layers the guide's environment variables on top.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omendb.errors import ConfigError
from omendb.files import default_wal_dir
from omendb.memory import MemoryLimit, effective_limit, own_cgroup_limit


def _key(default: Any, doc: str, *, minimum: float | None = None, maximum: float | None = None,
         choices: tuple[str, ...] | None = None) -> Any:
    """A configuration key: its default, what it does, and the values it accepts."""
    meta = {"doc": doc, "min": minimum, "max": maximum, "choices": choices}
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class DatabaseSection:
    name: str = _key("omendb", "Name of the database; backups are filed under it.")
    data_dir: str = _key("/var/lib/omendb/data", "Directory holding checkpoints and the manifest.")
    max_memory_mb: int = _key(8192, "Memory the database may hold; a write that would exceed it fails.",
                              minimum=1)
    expected_size: int = _key(0, "Expected number of records; used to warn early when the memory "
                                 "limit cannot hold them (0 = no estimate).", minimum=0)


@dataclass(frozen=True)
class StorageSection:
    enable_compression: bool = _key(True, "Compress checkpoint files with zstandard.")
    batch_size: int = _key(100000, "Records per block in checkpoint files: the unit of compression "
                                   "and checksumming.", minimum=1024, maximum=10_000_000)
    sync_interval_ms: int = _key(5000, "With [wal] sync_on_write = false, how often the WAL is fsynced "
                                       "in the background (the window of writes a crash may lose).",
                                 minimum=1)


@dataclass(frozen=True)
class IndexSection:
    model_type: str = _key("recursive", "Learned index: 'recursive' (root model routes to leaf models) "
                                        "or 'linear' (one-stage baseline).", choices=("recursive", "linear"))
    max_error: int = _key(50, "Hard bound on every leaf's prediction error, in slots; a lookup searches "
                              "at most 2*max_error+1 slots.", minimum=1, maximum=1_000_000)
    retrain_threshold: int = _key(1000000, "Records in the delta that trigger a background merge and "
                                           "retrain.", minimum=1)


@dataclass(frozen=True)
class WalSection:
    enabled: bool = _key(True, "Write-ahead logging. When false, writes since the last checkpoint are "
                               "lost on a crash.")
    dir: str = _key("", "WAL directory (its own volume in production); empty means <data_dir>/../wal when the "
                        "data directory is named 'data' (the guide's /var/lib/omendb/{data,wal}), else "
                        "<data_dir>-wal, so two databases never share one; a database keeps the WAL "
                        "location its MANIFEST records.")
    sync_on_write: bool = _key(True, "fsync the WAL before acknowledging each write (group commit).")
    max_file_size_mb: int = _key(100, "Rotate a WAL segment when it reaches this size.", minimum=1)
    rotation_interval_hours: float = _key(24, "Rotate a WAL segment after this long even if small.",
                                          minimum=0.001)
    accept_gap: bool = _key(False, "Start even though the WAL does not continue the checkpoint (a missing "
                                   "segment or WAL directory): the writes after the gap are lost, an ERROR is "
                                   "logged and the database continues on a new term. Set it for one start "
                                   "only, after deciding that restoring a backup is not an option.")
    max_retained_mb: int = _key(4096, "WAL kept for backups beyond the last checkpoint; past it, segments "
                                      "are released, a warning is logged and the next backup must be full.",
                                minimum=1)


@dataclass(frozen=True)
class HttpSection:
    host: str = _key("0.0.0.0", "Address the API listens on.")
    port: int = _key(3000, "API port.", minimum=1, maximum=65535)
    request_timeout_ms: int = _key(30000, "A request running longer is answered 503.", minimum=1)
    max_concurrent_requests: int = _key(1000, "Requests handled at once; excess ones get 503 with "
                                              "Retry-After.", minimum=1)
    max_body_mb: int = _key(64, "Largest request body accepted (413 beyond).", minimum=1)
    first_request_timeout_ms: int = _key(10000, "A new connection is closed unless its TLS handshake (with "
                                                "TLS) and then the first byte of its first request each "
                                                "come within this long.", minimum=1)
    header_timeout_ms: int = _key(10000, "A request head (request line and headers) must be complete this "
                                         "long after its first byte; otherwise 408 and the connection is "
                                         "closed.", minimum=1)
    body_timeout_ms: int = _key(30000, "A request body must be complete this long after its head; otherwise "
                                       "408 and the connection is closed.", minimum=1)
    idle_timeout_ms: int = _key(5000, "A keep-alive connection idle this long between requests is closed.",
                                minimum=1)
    shutdown_grace_seconds: float = _key(25, "On SIGTERM, how long in-flight requests may run before they "
                                             "are cancelled; keep it below the pod's "
                                             "terminationGracePeriodSeconds.", minimum=0, maximum=3600)


@dataclass(frozen=True)
class SecuritySection:
    auth_enabled: bool = _key(True, "Require HTTP Basic or a session token on the API.")
    session_timeout_seconds: int = _key(3600, "Lifetime of a token from POST /auth/login.", minimum=1)
    tls_enabled: bool = _key(False, "Serve the API over HTTPS.")
    tls_cert_file: str = _key("/etc/omendb/tls/tls.crt",
                              "Server certificate (PEM); reloaded when it changes.")
    tls_key_file: str = _key("/etc/omendb/tls/tls.key", "Server private key (PEM).")
    plain_http_probes: bool = _key(True, "With TLS on, also answer plain-HTTP /health and /ready on the API "
                                         "port (the guide's health_check.sh); other plain requests get 400.")
    htpasswd_file: str = _key("/etc/omendb/users.htpasswd", "Users, as `htpasswd` writes them (bcrypt or "
                                                            "apr1 entries); reloaded when it changes.")
    admin_users: tuple[str, ...] = _key(("admin",), "Users allowed to call /admin endpoints.")
    credential_cache_seconds: int = _key(60, "How long a verified HTTP Basic password is trusted without "
                                             "bcrypt (kept as an HMAC, dropped when the htpasswd file "
                                             "reloads; 0 = verify every request).", minimum=0, maximum=3600)
    login_failures_per_user: int = _key(10, "Wrong passwords for one user name within "
                                            "login_failure_window_seconds before its logins get 429 "
                                            "(0 = no per-user limit).", minimum=0)
    login_failures_per_address: int = _key(30, "Wrong passwords from one client address within "
                                               "login_failure_window_seconds before its logins get 429 "
                                               "(0 = no per-address limit).", minimum=0)
    login_failure_window_seconds: int = _key(60, "Window in which wrong passwords are counted; a throttled "
                                                 "user or address may try again when it ends.", minimum=1,
                                             maximum=86400)


@dataclass(frozen=True)
class MonitoringSection:
    prometheus_enabled: bool = _key(True, "Serve /metrics on prometheus_port.")
    prometheus_port: int = _key(9090, "Metrics port.", minimum=1, maximum=65535)
    health_check_interval_ms: int = _key(10000, "How often the server checks its own WAL and disk for "
                                                "/health.", minimum=100)
    log_level: str = _key("info", "Log level of OmenDB's own lines; debug and trace add recovery, merge, "
                                  "checkpoint, WAL and replication steps; off writes nothing.",
                          choices=("trace", "debug", "info", "warn", "warning", "error", "off"))
    log_format: str = _key("json", "Log line format.", choices=("json", "text"))


@dataclass(frozen=True)
class PerformanceSection:
    worker_threads: int = _key(8, "Threads serving blocking database calls.", minimum=1, maximum=1024)
    io_threads: int = _key(4, "Threads for background merges and checkpoints.", minimum=1, maximum=64)
    enable_simd: bool = _key(True, "Use the compiled (numba) lookup kernels; false uses plain numpy.")
    prefetch_size: int = _key(2000, "Records returned per range-scan page when the client sets no limit.",
                              minimum=1, maximum=1_000_000)


@dataclass(frozen=True)
class LimitsSection:
    max_connections: int = _key(1000, "Open client connections accepted at once.", minimum=1)
    max_query_duration_ms: int = _key(30000, "A scan running longer stops with an error.", minimum=1)
    max_insert_batch_size: int = _key(50000, "Records per insert request (413 beyond).", minimum=1)
    memory_limit_mb: int = _key(8192, "Hard memory limit; the lowest of this, max_memory_mb and the "
                                      "container's cgroup limit applies.",
                                minimum=1)


@dataclass(frozen=True)
class ReplicationSection:
    role: str = _key("primary", "'primary' accepts writes; 'replica' follows primary_url and refuses client "
                                "writes (POST /admin/promote makes it the primary).",
                     choices=("primary", "replica"))
    primary_url: str = _key("", "A replica's primary, e.g. https://omendb-0.omendb-headless:3000.")
    credentials_file: str = _key("", "A replica's credentials for its primary: one line 'user:password' (an "
                                     "admin user); empty uses OMENDB_USER / OMENDB_PASSWORD.")
    ca_file: str = _key("", "CA certificate that signed the primary's TLS certificate (empty: system CAs).")
    replica_id: str = _key("", "How this replica names itself to the primary (empty: the host name).")
    synchronous_replicas: int = _key(0, "On a primary: a write is acknowledged only once this many replicas "
                                        "hold it durably (0 = asynchronous replication).",
                                     minimum=0, maximum=16)
    synchronous_timeout_ms: int = _key(5000, "How long a synchronous write waits for replicas; then it fails "
                                             "with 'replication_timeout' (it stays durable on the primary).",
                                       minimum=1)
    max_lag_seconds: float = _key(30.0, "A replica further behind its primary than this is not ready.",
                                  minimum=0.0)
    fence_after_seconds: float = _key(15.0, "On a primary that replicas poll: refuse writes (503 'isolated') "
                                            "once neither a replica has polled it nor fence_probe_address answered "
                                            "for this long (cut off by a partition: another pod may be promoted; "
                                            "keep it under the failover delay); writes resume as soon as either is "
                                            "back. 0: never.", minimum=0.0)
    fence_probe_address: str = _key("", "host:port that a primary still reaching it is not cut off from (the "
                                         "Kubernetes API); empty: KUBERNETES_SERVICE_HOST:KUBERNETES_SERVICE_PORT, "
                                         "and no fencing outside Kubernetes.")
    poll_wait_ms: int = _key(2000, "How long a replica's request for new WAL waits on the primary before "
                                   "returning empty (long poll).", minimum=10, maximum=25000)


@dataclass(frozen=True)
class WalArchiveSection:
    url: str = _key("", "Continuous WAL archiving: where the primary ships its WAL (s3://bucket/prefix, or a "
                        "directory), the same location as its backups so `backup_tool restore` replays it after "
                        "the newest backup. Empty: off. Credentials follow the AWS conventions, as for backups.")
    interval_seconds: float = _key(5.0, "How often the primary ships the WAL written since the last upload: "
                                        "losing the whole cluster costs at most about this much of writes.",
                                   minimum=0.1, maximum=3600)
    max_piece_mb: int = _key(64, "Largest archived piece; a longer backlog goes up in several.", minimum=1,
                             maximum=4096)


SECTIONS: dict[str, type] = {
    "database": DatabaseSection,
    "storage": StorageSection,
    "index": IndexSection,
    "wal": WalSection,
    "http": HttpSection,
    "security": SecuritySection,
    "monitoring": MonitoringSection,
    "performance": PerformanceSection,
    "limits": LimitsSection,
    "replication": ReplicationSection,
    "wal_archive": WalArchiveSection,
}


@dataclass(frozen=True)
class Config:
    database: DatabaseSection = field(default_factory=DatabaseSection)
    storage: StorageSection = field(default_factory=StorageSection)
    index: IndexSection = field(default_factory=IndexSection)
    wal: WalSection = field(default_factory=WalSection)
    http: HttpSection = field(default_factory=HttpSection)
    security: SecuritySection = field(default_factory=SecuritySection)
    monitoring: MonitoringSection = field(default_factory=MonitoringSection)
    performance: PerformanceSection = field(default_factory=PerformanceSection)
    limits: LimitsSection = field(default_factory=LimitsSection)
    replication: ReplicationSection = field(default_factory=ReplicationSection)
    wal_archive: WalArchiveSection = field(default_factory=WalArchiveSection)

    # Derived values used by the engine.
    @property
    def wal_dir(self) -> Path:
        """The configured WAL directory, or the default for the data directory (see default_wal_dir). An
        existing database uses the location its MANIFEST records when [wal] dir is empty."""
        if self.wal.dir:
            return Path(self.wal.dir)
        return default_wal_dir(Path(self.database.data_dir))

    @property
    def memory_limit(self) -> MemoryLimit:
        """The lowest of max_memory_mb, memory_limit_mb and the container's cgroup limit, and which won."""
        return effective_limit(self.database.max_memory_mb, self.limits.memory_limit_mb, own_cgroup_limit())

    @property
    def memory_limit_bytes(self) -> int:
        return self.memory_limit.bytes

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "configuration") -> Config:
        sections: dict[str, Any] = {}
        for name, values in raw.items():
            if name not in SECTIONS:
                raise ConfigError(f"{source}: unknown section [{name}]{_suggest(name, SECTIONS)}")
            if not isinstance(values, dict):
                raise ConfigError(f"{source}: [{name}] must be a table of keys")
            sections[name] = _build_section(name, SECTIONS[name], values, source)
        config = cls(**sections)
        config.check_consistency(source)
        return config

    def check_consistency(self, source: str = "configuration") -> None:
        """Rules that involve more than one key."""
        if self.monitoring.prometheus_enabled and self.monitoring.prometheus_port == self.http.port:
            raise ConfigError(f"{source}: [monitoring] prometheus_port = {self.monitoring.prometheus_port} "
                              "is the same as [http] port; the metrics listener needs its own port")
        if self.replication.role == "replica" and not self.replication.primary_url:
            raise ConfigError(f"{source}: [replication] role = \"replica\" needs primary_url (the primary's "
                              "API URL, e.g. https://omendb-0.omendb-headless:3000)")
        if self.wal_archive.url and not self.wal.enabled:
            raise ConfigError(f"{source}: [wal_archive] url is set but [wal] enabled = false: there is no WAL to "
                              "archive; enable the WAL or clear [wal_archive] url")
        if self.replication.primary_url and not self.replication.primary_url.startswith(("http://", "https://")):
            raise ConfigError(f"{source}: [replication] primary_url = {self.replication.primary_url!r} must "
                              "start with http:// or https://")

    def replace(self, section: str, **changes: Any) -> Config:
        """A copy with some keys of one section changed (validated like a file)."""
        merged = {**dataclasses.asdict(getattr(self, section)), **changes}
        # Cross-key rules are checked by the caller once all changes are in (see apply_env).
        return dataclasses.replace(self, **{section: _build_section(section, SECTIONS[section], merged,
                                                                    "override")})

    def to_dict(self) -> dict[str, dict[str, Any]]:
        out = {}
        for name in SECTIONS:
            section = dataclasses.asdict(getattr(self, name))
            out[name] = {k: list(v) if isinstance(v, tuple) else v for k, v in section.items()}
        return out


def _suggest(name: str, valid: Any) -> str:
    close = difflib.get_close_matches(name, list(valid), n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else f" (valid: {', '.join(sorted(valid))})"


def _build_section(name: str, cls: type, values: dict[str, Any], source: str) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        if key not in fields:
            raise ConfigError(f"{source}: unknown key '{key}' in [{name}]{_suggest(key, fields)}")
        kwargs[key] = _check_value(f"[{name}] {key}", fields[key], value, source)
    return cls(**kwargs)


def _check_value(label: str, f: dataclasses.Field, value: Any, source: str) -> Any:
    expected = f.type if isinstance(f.type, type) else {"str": str, "int": int, "bool": bool,
                                                         "float": float}.get(str(f.type))
    meta = f.metadata
    if str(f.type).startswith("tuple"):
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{source}: {label} must be a list of strings, got {value!r}")
        return tuple(value)
    if expected is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{source}: {label} must be true or false, got {value!r}")
    elif expected is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{source}: {label} must be an integer, got {value!r}")
    elif expected is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{source}: {label} must be a number, got {value!r}")
        value = float(value)
    elif expected is str and not isinstance(value, str):
        raise ConfigError(f"{source}: {label} must be a string, got {value!r}")
    if meta.get("min") is not None and value < meta["min"]:
        raise ConfigError(f"{source}: {label} = {value!r} is below the minimum {meta['min']}")
    if meta.get("max") is not None and value > meta["max"]:
        raise ConfigError(f"{source}: {label} = {value!r} is above the maximum {meta['max']}")
    if meta.get("choices") and value not in meta["choices"]:
        raise ConfigError(f"{source}: {label} = {value!r} is not one of {', '.join(meta['choices'])}")
    return value


def load_config(path: str | Path) -> Config:
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"configuration file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return Config.from_dict(raw, source=str(path))


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


_RUST_LEVELS = ("off", "error", "warn", "info", "debug", "trace")


def rust_log_level(value: str) -> str | None:
    """The level RUST_LOG gives OmenDB, read as env_logger reads it: comma-separated directives, each
    ``level`` (the default for every target) or ``target=level``; an ``omendb`` (or ``omendb::...``)
    directive wins over the default, other targets (``hyper=warn``) are not ours. An optional ``/regex``
    suffix is a message filter, ignored here. None: RUST_LOG says nothing about OmenDB."""
    spec = value.split("/", 1)[0]
    default: str | None = None
    ours: str | None = None
    for directive in (d.strip() for d in spec.split(",")):
        if not directive:
            continue
        target, _, level = directive.rpartition("=")
        level = level.strip().lower()
        if not target and level not in _RUST_LEVELS:
            # env_logger reads a bare word that is not a level as a target at the most verbose level.
            target, level = level, "trace"
        if level not in _RUST_LEVELS:
            raise ConfigError(f"RUST_LOG={value!r}: {level!r} in {directive!r} is not a level (one of "
                              f"{', '.join(_RUST_LEVELS)}); e.g. RUST_LOG=info or RUST_LOG=omendb=debug")
        target = target.strip()
        if not target:
            default = level
        elif target == "omendb" or target.startswith(("omendb::", "omendb.")):
            ours = level
    return ours or default


def apply_env(config: Config, environ: dict[str, str] | None = None) -> Config:
    """Layer the guide's environment variables over a configuration (environment wins)."""
    env = os.environ if environ is None else environ
    if "OMENDB_DATA_DIR" in env:
        config = config.replace("database", data_dir=env["OMENDB_DATA_DIR"])
    if "OMENDB_HTTP_PORT" in env:
        try:
            port = int(env["OMENDB_HTTP_PORT"])
        except ValueError:
            raise ConfigError(f"OMENDB_HTTP_PORT must be a port number, got {env['OMENDB_HTTP_PORT']!r}") \
                from None
        config = config.replace("http", port=port)
    if "OMENDB_PROMETHEUS_PORT" in env:
        # Not in the guide's table: lets tests and side-by-side instances move the metrics port too.
        try:
            port = int(env["OMENDB_PROMETHEUS_PORT"])
        except ValueError:
            raise ConfigError("OMENDB_PROMETHEUS_PORT must be a port number, got "
                              f"{env['OMENDB_PROMETHEUS_PORT']!r}") from None
        config = config.replace("monitoring", prometheus_port=port)
    if "OMENDB_AUTH_DISABLED" in env:
        flag = env["OMENDB_AUTH_DISABLED"].strip().lower()
        if flag not in _TRUE | _FALSE:
            raise ConfigError(f"OMENDB_AUTH_DISABLED must be true or false, got {flag!r}")
        config = config.replace("security", auth_enabled=flag not in _TRUE)
    if env.get("OMENDB_LOG_LEVEL"):  # wins over RUST_LOG
        config = config.replace("monitoring", log_level=env["OMENDB_LOG_LEVEL"].strip().lower())
    elif env.get("RUST_LOG"):
        level = rust_log_level(env["RUST_LOG"])
        if level is not None:
            config = config.replace("monitoring", log_level=level)
    config.check_consistency("configuration after environment overrides")
    return config
