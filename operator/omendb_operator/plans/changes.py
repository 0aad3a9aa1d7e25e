"""Whether applying a child changes anything: the decision to write nothing when nothing changed.

controller/act.py applies (server-side apply, one field manager) only what this module cannot call unchanged.

Every desired manifest carries ``omendb.io/applied-hash``, a hash of what the builders produced. A child
is left alone when its live copy has the same hash *and* still contains every field we set (so a hand
edit is noticed and put back, and a field we stopped setting is removed by the next apply). When the
subset check fails only because the API server normalises a value (``1000m`` -> ``1``), a server-side
dry run shows the apply would change nothing, and nothing is written.
"""

from __future__ import annotations

import copy
import hashlib
import json
from enum import StrEnum
from typing import Any

from kubernetes.utils.quantity import parse_quantity

from omendb_operator import labels as L

APPLIED_HASH_ANNOTATION = f"{L.GROUP}/applied-hash"


class Outcome(StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"


def manifest_hash(manifest: dict[str, Any]) -> str:
    text = json.dumps(manifest, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def with_hash(manifest: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``manifest`` annotated with the hash of its own content."""
    out = copy.deepcopy(manifest)
    out["metadata"].setdefault("annotations", {})[APPLIED_HASH_ANNOTATION] = manifest_hash(manifest)
    return out


def _same_scalar(want: Any, have: Any) -> bool:
    if want == have and type(want) is type(have):
        return True
    if isinstance(want, str) and isinstance(have, str):
        # Quantities come back canonical ("1024Mi" -> "1Gi"); compare their values.
        try:
            return bool(parse_quantity(want) == parse_quantity(have))
        except ValueError:
            return False
    if isinstance(want, int | float) and isinstance(have, int | float) and not isinstance(want, bool) \
            and not isinstance(have, bool):
        return float(want) == float(have)
    return False


def is_subset(want: Any, have: Any) -> bool:
    """True when every field of ``want`` is in ``have`` with the same value (``have`` may hold more:
    defaults the API server filled in, fields other managers own)."""
    if isinstance(want, dict):
        return isinstance(have, dict) and all(k in have and is_subset(v, have[k]) for k, v in want.items())
    if isinstance(want, list):
        return isinstance(have, list) and len(want) == len(have) and all(
            is_subset(w, h) for w, h in zip(want, have, strict=True))
    return _same_scalar(want, have)


_VOLATILE_META = ("managedFields", "resourceVersion", "generation", "creationTimestamp", "uid", "selfLink")


def comparable(obj: dict[str, Any]) -> dict[str, Any]:
    """An object without the bookkeeping that changes on every write, to compare a dry run with live."""
    out = copy.deepcopy(obj)
    for key in _VOLATILE_META:
        out.get("metadata", {}).pop(key, None)
    out.pop("status", None)
    return out


def decide(desired: dict[str, Any], live: dict[str, Any] | None) -> Outcome | None:
    """CREATED, UNCHANGED, or None when only a (dry) apply can tell. ``desired`` carries its hash."""
    if live is None:
        return Outcome.CREATED
    want = desired["metadata"].get("annotations", {}).get(APPLIED_HASH_ANNOTATION)
    have = (live.get("metadata", {}).get("annotations") or {}).get(APPLIED_HASH_ANNOTATION)
    if want == have and is_subset(desired, live):
        return Outcome.UNCHANGED
    return None


def keep_immutable(desired: dict[str, Any], live: dict[str, Any] | None) -> dict[str, Any]:
    """Carry over fields the API server refuses to change (a StatefulSet's volumeClaimTemplates), so one
    refused field does not block every other change. Volume growth is done on the claims (issue 7)."""
    if live is None or desired["kind"] != "StatefulSet":
        return desired
    out = copy.deepcopy(desired)
    templates = live.get("spec", {}).get("volumeClaimTemplates")
    if templates is not None:
        out["spec"]["volumeClaimTemplates"] = [
            {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
             "metadata": {"name": t["metadata"]["name"]},
             "spec": {k: v for k, v in t.get("spec", {}).items() if k in ("accessModes", "resources",
                                                                           "storageClassName")}}
            for t in templates
        ]
    return out


def will_change(manifest: dict[str, Any], live: dict[str, Any] | None) -> bool:
    """Whether applying ``manifest`` writes (by its hash: what the builders produced changed)."""
    have = ((live or {}).get("metadata", {}).get("annotations") or {}).get(APPLIED_HASH_ANNOTATION)
    return live is None or have != manifest_hash(manifest)
