import pytest

from omendb.config import Config, apply_env, load_config
from omendb.errors import ConfigError


def test_defaults_match_the_guide():
    config = Config()
    assert config.http.port == 3000
    assert config.monitoring.prometheus_port == 9090
    assert config.index.model_type == "recursive"
    assert config.limits.max_insert_batch_size == 50000


def test_unknown_key_suggests_the_nearest_name(tmp_path):
    path = tmp_path / "omendb.toml"
    path.write_text("[index]\nmax_eror = 5\n")
    with pytest.raises(ConfigError, match="unknown key 'max_eror' in \\[index\\].*did you mean 'max_error'"):
        load_config(path)


def test_unknown_section_is_refused():
    with pytest.raises(ConfigError, match="unknown section \\[indx\\].*did you mean 'index'"):
        Config.from_dict({"indx": {}})


@pytest.mark.parametrize("raw, message", [
    ({"index": {"model_type": "btree"}}, "not one of recursive, linear"),
    ({"index": {"max_error": 0}}, "below the minimum"),
    ({"http": {"port": "3000"}}, "must be an integer"),
    ({"wal": {"enabled": "yes"}}, "must be true or false"),
])
def test_bad_values_name_the_key(raw, message):
    with pytest.raises(ConfigError, match=message):
        Config.from_dict(raw)


def test_environment_overrides_the_file():
    config = apply_env(Config(), {"OMENDB_DATA_DIR": "/d", "OMENDB_HTTP_PORT": "4000",
                                  "OMENDB_AUTH_DISABLED": "true", "RUST_LOG": "omendb=debug"})
    assert config.database.data_dir == "/d"
    assert config.http.port == 4000
    assert config.security.auth_enabled is False
    assert config.monitoring.log_level == "debug"


def test_bad_environment_value_is_refused():
    with pytest.raises(ConfigError, match="OMENDB_HTTP_PORT"):
        apply_env(Config(), {"OMENDB_HTTP_PORT": "http"})
