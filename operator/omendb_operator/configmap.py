"""NAME-config: the engine's omendb.toml, rendered from spec.config plus the keys the operator owns."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from kubernetes.utils.quantity import parse_quantity

from omendb_operator import labels as L
from omendb_operator.spec import OmenDBSpec

CONFIG_DIR = "/etc/omendb"
CONFIG_FILE = f"{CONFIG_DIR}/omendb.toml"
HTPASSWD_FILE = f"{CONFIG_DIR}/users.htpasswd"
TLS_DIR = f"{CONFIG_DIR}/tls"
TLS_CERT_FILE = f"{TLS_DIR}/tls.crt"
TLS_KEY_FILE = f"{TLS_DIR}/tls.key"
TLS_CA_FILE = f"{TLS_DIR}/ca.crt"
# Which pod is the primary: a key of NAME-config, read by `omendb serve --primary-pod-file` at start. It is
# not part of the config hash, so a failover rewrites it without restarting any pod.
PRIMARY_POD_KEY = "primary-pod"
PRIMARY_POD_FILE = f"{CONFIG_DIR}/{PRIMARY_POD_KEY}"
# "user:password" of the generated admin user, for replicas to stream from the primary.
REPLICATION_CREDENTIALS_FILE = f"{CONFIG_DIR}/replication/credentials"
DATA_DIR = "/var/lib/omendb/data"
WAL_DIR = "/var/lib/omendb/wal"

# The guide's memory tuning: give the database 75% of the memory the container may use.
MEMORY_SHARE_NUM, MEMORY_SHARE_DEN = 3, 4


def memory_limit_mb(spec: OmenDBSpec) -> int | None:
    """75% of the container's memory limit in MiB, or None when no limit is set."""
    limit = (spec.resources.get("limits") or {}).get("memory")
    if not limit:
        return None
    return max(1, int(parse_quantity(str(limit)) * MEMORY_SHARE_NUM / MEMORY_SHARE_DEN) // (1024 * 1024))


def render_config_dict(spec: OmenDBSpec, tls_ca: bool = True) -> dict[str, dict[str, Any]]:
    """spec.config with the operator-owned keys filled in (the paths of the volumes it mounts, the ports
    its Services and probes use, the auth/TLS switches from spec.auth and spec.tls, and the replication
    keys every pod shares). ``tls_ca``: a CA certificate is mounted at TLS_CA_FILE (always with generated
    certificates; with the user's Secret when it has ca.crt), else replicas trust the system CAs."""
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
    monitoring = out.setdefault("monitoring", {})
    monitoring["prometheus_enabled"] = True
    monitoring["prometheus_port"] = L.METRICS_PORT
    return out


def _toml_value(value: Any) -> str:
    # The engine's schema only has booleans, integers, floats, strings and lists of strings; JSON's
    # string escapes are valid TOML basic strings, so json.dumps renders strings exactly.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot render {value!r} as a TOML value")


def render_toml(config: dict[str, dict[str, Any]]) -> str:
    """Render sections of scalar keys as TOML, sections and keys sorted so equal configs are equal text.

    Not tomli-w: it writes every non-empty array on several lines (`admin_users = [\n    "admin",\n]`, no
    option to keep it inline) and non-ASCII characters unescaped, so every database's config hash (the
    bytes below, tests/operator/test_toml_golden.py) would change and an operator upgrade would restart
    them all."""
    lines = ["# Rendered by omendb-operator from the OmenDB spec; edit the OmenDB, not this file."]
    for section in sorted(config):
        lines.append("")
        lines.append(f"[{section}]")
        for key in sorted(config[section]):
            lines.append(f"{key} = {_toml_value(config[section][key])}")
    return "\n".join(lines) + "\n"


def config_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def build_configmap(owner: dict[str, Any], spec: OmenDBSpec, primary_pod: str | None = None,
                    tls_ca: bool = True) -> dict[str, Any]:
    names = L.Names(owner["metadata"]["name"])
    text = render_toml(render_config_dict(spec, tls_ca))
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": L.metadata(owner, names.config, "config",
                               annotations={L.CONFIG_HASH_ANNOTATION: config_hash(text)}),
        "data": {"omendb.toml": text, PRIMARY_POD_KEY: (primary_pod or names.pod(0)) + "\n"},
    }
