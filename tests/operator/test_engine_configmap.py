from __future__ import annotations

import tomllib

from omendb.config import Config
from omendb_operator.spec import parse_spec
from omendb_operator.specs.configmap import (
    HTPASSWD_FILE,
    TLS_CERT_FILE,
    TLS_KEY_FILE,
    build_configmap,
    config_hash,
    memory_limit_mb,
    render_config_dict,
    render_toml,
)


def test_rendered_toml_loads_in_the_engine_with_operator_keys(owner):
    spec = parse_spec(
        {
            "config": {
                "database": {"name": "omendb_production", "expected_size": 100000000},
                "index": {"max_error": 50, "retrain_threshold": 1000000},
                "security": {"admin_users": ["ops"]},
                "monitoring": {"log_format": "json", "log_level": "info"},
            }
        }
    )
    cm = build_configmap(owner, spec)
    assert cm["metadata"]["name"] == "prod-config"
    text = cm["data"]["omendb.toml"]
    config = Config.from_dict(tomllib.loads(text))
    assert config.database.name == "omendb_production"
    assert config.database.data_dir == "/var/lib/omendb/data"
    assert config.wal.dir == "/var/lib/omendb/wal"
    assert (config.http.host, config.http.port) == ("0.0.0.0", 3000)
    assert (config.monitoring.prometheus_enabled, config.monitoring.prometheus_port) == (True, 9090)
    assert config.security.tls_enabled and config.security.auth_enabled
    assert (config.security.tls_cert_file, config.security.tls_key_file) == (TLS_CERT_FILE, TLS_KEY_FILE)
    assert config.security.htpasswd_file == HTPASSWD_FILE
    # The generated admin user must be an admin (backup Jobs call admin endpoints); the user's stay.
    assert config.security.admin_users == ("ops", "admin")
    assert cm["metadata"]["annotations"]["omendb.io/config-hash"] == config_hash(text)


def test_strings_with_quotes_and_backslashes_round_trip():
    config = {"database": {"name": 'we"ird\\name\n'}, "security": {"admin_users": ["a", 'b"c']}}
    assert tomllib.loads(render_toml(config)) == config


def test_rendering_is_deterministic_so_an_unchanged_spec_rolls_nothing(owner):
    a = build_configmap(owner, parse_spec({"config": {"index": {"max_error": 5}, "wal": {"enabled": True}}}))
    b = build_configmap(owner, parse_spec({"config": {"wal": {"enabled": True}, "index": {"max_error": 5}}}))
    assert a == b
    c = build_configmap(owner, parse_spec({"config": {"index": {"max_error": 6}}}))
    assert c["metadata"]["annotations"] != a["metadata"]["annotations"]


def test_memory_follows_the_container_limit_unless_set():
    # The guide's memory tuning: 75% of the memory available.
    spec = parse_spec({"resources": {"limits": {"memory": "8Gi"}}})
    assert memory_limit_mb(spec) == 6144
    rendered = render_config_dict(spec)
    assert rendered["database"]["max_memory_mb"] == 6144
    assert rendered["limits"]["memory_limit_mb"] == 6144
    explicit = parse_spec(
        {"resources": {"limits": {"memory": "8Gi"}}, "config": {"database": {"max_memory_mb": 4096}}}
    )
    assert render_config_dict(explicit)["database"]["max_memory_mb"] == 4096
    assert memory_limit_mb(parse_spec({"resources": {"requests": {"cpu": "1"}}})) is None
