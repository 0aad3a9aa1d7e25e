"""``omendb config check`` and the configuration rules the server adds (run as the real console command)."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from omendb.cli import main
from omendb.config import Config, apply_env, load_config
from omendb.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
CLEAN_ENV = {k: v for k, v in os.environ.items() if not k.startswith("OMENDB_") and k != "RUST_LOG"}


def omendb(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "omendb.cli", *args], capture_output=True, text=True,
                          env={**CLEAN_ENV, **(env or {})}, timeout=60)


@pytest.mark.parametrize("name", ["development", "staging", "production"])
def test_shipped_configs_pass_the_check(name: str, capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("OMENDB_DATA_DIR", "OMENDB_HTTP_PORT", "OMENDB_PROMETHEUS_PORT", "OMENDB_AUTH_DISABLED",
                "OMENDB_LOG_LEVEL", "RUST_LOG"):
        monkeypatch.delenv(var, raising=False)
    assert main(["config", "check", str(REPO / "configs" / f"{name}.toml")]) == 0
    printed = Config.from_dict(tomllib.loads(capsys.readouterr().out))
    assert printed == load_config(REPO / "configs" / f"{name}.toml")


def test_production_config_is_the_guides() -> None:
    config = load_config(REPO / "configs" / "production.toml")
    assert (config.http.port, config.monitoring.prometheus_port) == (3000, 9090)
    assert config.security.auth_enabled and config.security.tls_enabled
    assert config.limits.max_insert_batch_size == 50000 and config.index.max_error == 50
    assert config.monitoring.log_format == "json"


def test_check_applies_and_reports_environment_overrides(tmp_path: Path) -> None:
    result = omendb("config", "check", str(REPO / "configs" / "production.toml"),
                    env={"OMENDB_DATA_DIR": str(tmp_path), "OMENDB_HTTP_PORT": "4000",
                         "OMENDB_AUTH_DISABLED": "1", "OMENDB_LOG_LEVEL": "debug"})
    assert result.returncode == 0, result.stderr
    effective = tomllib.loads(result.stdout)
    assert effective["database"]["data_dir"] == str(tmp_path)
    assert effective["http"]["port"] == 4000
    assert effective["security"]["auth_enabled"] is False
    assert effective["monitoring"]["log_level"] == "debug"
    assert "OMENDB_HTTP_PORT" in result.stderr


def check_in_process(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["config", "check", str(path)])
    return code, capsys.readouterr().err


@pytest.mark.parametrize("text, message", [
    ("[http]\nprot = 3000\n", "unknown key 'prot' in [http] (did you mean 'port'?)"),
    ("[monitoring]\nlog_format = \"xml\"\n", "log_format = 'xml' is not one of json, text"),
    ("[http]\nport = 9090\n", "prometheus_port = 9090 is the same as [http] port"),
    ("[security]\nadmin_users = \"admin\"\n", "admin_users must be a list of strings"),
    ("[http\n", "not valid TOML"),
])
def test_bad_files_are_refused_naming_the_key(tmp_path: Path, text: str, message: str,
                                              capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OMENDB_DATA_DIR", "OMENDB_HTTP_PORT", "OMENDB_PROMETHEUS_PORT", "OMENDB_AUTH_DISABLED"):
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "omendb.toml"
    path.write_text(text)
    code, err = check_in_process(path, capsys)
    assert code == 2 and message in err


def test_serve_refuses_a_bad_file_before_listening(tmp_path: Path) -> None:
    path = tmp_path / "omendb.toml"
    path.write_text("[index]\nmax_eror = 5\n")
    served = omendb("serve", "--config", str(path))
    assert served.returncode == 2
    assert "unknown key 'max_eror' in [index] (did you mean 'max_error'?)" in served.stderr


def test_metrics_port_override_and_clash_detection() -> None:
    assert apply_env(Config(), {"OMENDB_PROMETHEUS_PORT": "9191"}).monitoring.prometheus_port == 9191
    with pytest.raises(ConfigError, match="needs its own port"):
        apply_env(Config(), {"OMENDB_HTTP_PORT": "9090"})
    # Moving both at once is fine even if an intermediate state would clash.
    config = apply_env(Config(), {"OMENDB_HTTP_PORT": "9090", "OMENDB_PROMETHEUS_PORT": "3000"})
    assert (config.http.port, config.monitoring.prometheus_port) == (9090, 3000)


def test_missing_file_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = check_in_process(tmp_path / "nope.toml", capsys)
    assert code == 2 and "does not exist" in err
