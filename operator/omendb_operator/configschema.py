"""The OpenAPI schema of ``spec.config``, derived from the engine's own configuration schema.

crds/omendb.io_omendbs.yaml is the source of truth the API server enforces; a test checks that its
``spec.config`` part equals what this module derives from ``omendb.config.SECTIONS``, so the engine and
the CRD cannot drift apart. After changing engine/omendb/config.py, rewrite that part of the CRD with
``python -m omendb_operator.configschema --write crds/omendb.io_omendbs.yaml`` (or print the fragment
without ``--write``).
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

import yaml

from omendb.config import SECTIONS
from omendb_operator.spec import OPERATOR_OWNED_KEYS

STRING_MAX = 4096


def _field_schema(f: dataclasses.Field) -> dict[str, Any]:
    kind = str(f.type)
    meta = f.metadata
    out: dict[str, Any]
    if kind.startswith("tuple"):
        out = {"type": "array", "items": {"type": "string", "maxLength": 253}, "maxItems": 64}
    elif kind == "bool":
        out = {"type": "boolean"}
    elif kind == "int":
        out = {"type": "integer", "format": "int64"}
    elif kind == "float":
        out = {"type": "number"}
    else:
        out = {"type": "string", "maxLength": STRING_MAX}
    if meta.get("min") is not None:
        out["minimum"] = meta["min"]
    if meta.get("max") is not None:
        out["maximum"] = meta["max"]
    if meta.get("choices"):
        out["enum"] = list(meta["choices"])
    out["description"] = meta.get("doc", "")
    return out


def config_schema() -> dict[str, Any]:
    sections: dict[str, Any] = {}
    for name, cls in SECTIONS.items():
        props = {f.name: _field_schema(f) for f in dataclasses.fields(cls)}
        section: dict[str, Any] = {"type": "object", "description": f"The [{name}] section of omendb.toml.",
                                   "properties": props}
        owned = OPERATOR_OWNED_KEYS.get(name, ())
        if owned:
            section["x-kubernetes-validations"] = [
                {"rule": f"!has(self.{key})",
                 "message": f"config.{name}.{key} is set by the operator; remove it (see docs/operator.md, "
                            "'Keys the operator sets')"}
                for key in owned
            ]
        sections[name] = section
    return {
        "type": "object",
        "description": "omendb.toml, section by section (the operations guide's keys). Unknown sections "
                       "and keys are rejected; the operator sets paths, ports and the TLS/auth switches.",
        "properties": sections,
    }


class _Dumper(yaml.SafeDumper):
    """The layout crds/ is written in: keys in schema order, 120 columns."""


def render_crd(text: str) -> str:
    """The CRD file ``text`` with its spec.config schema replaced by :func:`config_schema` (the comment
    header and the layout of everything else kept)."""
    header, sep, body = text.partition("---\n")
    if not sep:
        header, body = "", text
    crd = yaml.safe_load(body)
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    spec["properties"]["config"] = config_schema()
    return header + "---\n" + yaml.dump(crd, Dumper=_Dumper, sort_keys=False, width=120)


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "--write":
        with open(argv[1]) as f:
            text = f.read()
        with open(argv[1], "w") as f:
            f.write(render_crd(text))
        return 0
    yaml.dump(config_schema(), sys.stdout, Dumper=_Dumper, sort_keys=False, width=120)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
