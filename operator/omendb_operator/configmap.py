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


def render_config_dict(spec: OmenDBSpec) -> dict[str, dict[str, Any]]:
    """spec.config with the operator-owned keys filled in (the paths of the volumes it mounts, the ports
    its Services and probes use, and the auth/TLS switches from spec.auth and spec.tls)."""
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
    """Render sections of scalar keys as TOML, sections and keys sorted so equal configs are equal text."""
    lines = ["# Rendered by omendb-operator from the OmenDB spec; edit the OmenDB, not this file."]
    for section in sorted(config):
        lines.append("")
        lines.append(f"[{section}]")
        for key in sorted(config[section]):
            lines.append(f"{key} = {_toml_value(config[section][key])}")
    return "\n".join(lines) + "\n"


def config_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def build_configmap(owner: dict[str, Any], spec: OmenDBSpec) -> dict[str, Any]:
    names = L.Names(owner["metadata"]["name"])
    text = render_toml(render_config_dict(spec))
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": L.metadata(owner, names.config, "config",
                               annotations={L.CONFIG_HASH_ANNOTATION: config_hash(text)}),
        "data": {"omendb.toml": text},
    }
