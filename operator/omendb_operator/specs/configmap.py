"""NAME-config: the engine's omendb.toml, rendered from spec.config plus the keys the operator owns."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from omendb_operator import labels as L
from omendb_operator.paths import (  # noqa: F401 - where the builders of the pods' volumes find them
    CONFIG_DIR,
    CONFIG_FILE,
    DATA_DIR,
    HTPASSWD_FILE,
    PRIMARY_POD_FILE,
    PRIMARY_POD_KEY,
    REPLICATION_CREDENTIALS_FILE,
    TLS_CA_FILE,
    TLS_CERT_FILE,
    TLS_DIR,
    TLS_KEY_FILE,
    WAL_DIR,
)
from omendb_operator.spec import OmenDBSpec, memory_limit_mb, render_config_dict  # noqa: F401
from omendb_operator.specs.backup_store import wal_archive_url


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
    archive = wal_archive_url(spec, owner["metadata"]["namespace"], owner["metadata"]["name"])
    text = render_toml(render_config_dict(spec, tls_ca, archive))
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": L.metadata(owner, names.config, "config",
                               annotations={L.CONFIG_HASH_ANNOTATION: config_hash(text)}),
        "data": {"omendb.toml": text, PRIMARY_POD_KEY: (primary_pod or names.pod(0)) + "\n"},
    }
