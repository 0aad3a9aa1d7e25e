"""``omendb``: ``omendb serve --config FILE`` runs the server; ``omendb config check FILE`` validates a
configuration file (with the environment overrides applied) and prints the effective configuration."""

from __future__ import annotations

import argparse
import gc
import os
import sys
from collections.abc import Sequence
from typing import Any

from omendb.config import SECTIONS, Config, apply_env, load_config
from omendb.errors import ConfigError
from omendb.memory import explain


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    escaped = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def render_toml(config: Config) -> str:
    """The effective configuration as TOML (it loads back to the same configuration). Kept by hand rather
    than tomli-w, whose arrays span several lines: the output stays the one the operator's ConfigMap
    writer (omendb_operator.specs.configmap.render_toml) and the docs show (tests/operator/test_toml_golden.py)."""
    lines: list[str] = []
    for section, values in config.to_dict().items():
        lines.append(f"[{section}]")
        lines += [f"{key} = {_toml_value(value)}" for key, value in values.items()]
        lines.append("")
    return "\n".join(lines)


def _effective(path: str) -> Config:
    return apply_env(load_config(path))


def _serve(args: argparse.Namespace) -> int:
    config = _effective(args.config)
    if args.primary_pod_file:
        from omendb import start_role

        primary = start_role.read_primary_pod(args.primary_pod_file)
        config = start_role.resolve(config, primary, start_role.own_name(args.pod_name),
                                    args.primary_url_template or "")
    elif args.primary_url_template or args.pod_name:
        raise ConfigError("--primary-url-template and --pod-name only apply with --primary-pod-file")
    # Start-up allocates a few hundred thousand objects (fastapi, pydantic, numba) that live until exit: the
    # cyclic GC would walk them again and again while they load. lifecycle.serve freezes them and turns
    # the GC back on before it serves.
    gc.disable()
    from omendb.server.lifecycle import serve  # the server's dependencies load only when serving

    return serve(config)


def _check(args: argparse.Namespace) -> int:
    config = _effective(args.file)
    names = ("OMENDB_DATA_DIR", "OMENDB_HTTP_PORT", "OMENDB_PROMETHEUS_PORT", "OMENDB_AUTH_DISABLED",
             "OMENDB_LOG_LEVEL", "RUST_LOG")
    overridden = [name for name in names if name in os.environ]
    print(f"# {args.file}: valid ({len(SECTIONS)} sections)", file=sys.stderr)
    if overridden:
        print(f"# environment overrides applied: {', '.join(overridden)}", file=sys.stderr)
    for line in explain(config.memory_limit):
        print(f"# {line}", file=sys.stderr)
    sys.stdout.write(render_toml(config))
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="omendb", description="OmenDB database server")
    sub = p.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the HTTP API and metrics listeners")
    serve.add_argument("--config", required=True, metavar="FILE", help="omendb.toml")
    serve.add_argument("--primary-pod-file", metavar="FILE",
                       help="a file naming the primary's pod: this server starts as the primary when the name "
                            "is its own (--pod-name), else as a replica of --primary-url-template; overrides "
                            "[replication] role and primary_url (how the operator runs pods)")
    serve.add_argument("--primary-url-template", metavar="URL",
                       help="the primary's URL with {pod} for its pod name, e.g. "
                            "https://{pod}.omendb-headless.default.svc:3000")
    serve.add_argument("--pod-name", metavar="NAME", help="this server's pod name (default: $POD_NAME, else "
                                                         "the host name)")
    serve.set_defaults(func=_serve)
    config = sub.add_parser("config", help="configuration tools")
    config_sub = config.add_subparsers(dest="config_command", required=True)
    check = config_sub.add_parser("check", help="validate FILE and print the effective configuration")
    check.add_argument("file", metavar="FILE")
    check.set_defaults(func=_check)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except ConfigError as exc:
        print(f"omendb: configuration error: {exc.message}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
