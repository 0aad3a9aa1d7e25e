"""The OpenAPI schema of ``spec.config``, derived from the engine's own configuration schema.

crds/omendb.io_omendbs.yaml is the source of truth the API server enforces; a test checks that its
``spec.config`` part equals what this module derives from ``omendb.config.SECTIONS``, so the engine and
the CRD cannot drift apart. After changing engine/omendb/config.py, print the new fragment with
``python -m omendb_operator.configschema`` and paste it into the CRD.
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


if __name__ == "__main__":
    yaml.safe_dump(config_schema(), sys.stdout, sort_keys=False, width=120)
