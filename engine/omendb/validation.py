"""Input checks shared by the embedded database and the HTTP client, so both refuse bad keys and values with
the same messages. Nothing here imports numba: the client stays light."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from omendb.errors import InvalidInput

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def as_keys(keys: Any, what: str = "keys") -> np.ndarray:
    if isinstance(keys, np.ndarray):
        if keys.dtype.kind == "i" or keys.dtype.kind == "u":
            if keys.dtype.kind == "u" and keys.size and int(keys.max()) > INT64_MAX:
                raise InvalidInput(f"{what} must fit in int64 (max {INT64_MAX}); got {int(keys.max())}")
            return np.ascontiguousarray(keys, dtype=np.int64).reshape(-1)
        raise InvalidInput(f"{what} must be an integer array (int64); got dtype {keys.dtype}. Convert with "
                           f"numpy.asarray(keys, dtype=numpy.int64) if the values are whole numbers")
    if isinstance(keys, (str, bytes)) or not isinstance(keys, Iterable):
        raise InvalidInput(f"{what} must be a sequence or array of int64 integers; got {type(keys).__name__}")
    out = []
    for i, k in enumerate(keys):
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
            raise InvalidInput(f"{what}[{i}] = {k!r} is not an integer; keys are int64")
        if not INT64_MIN <= int(k) <= INT64_MAX:
            raise InvalidInput(f"{what}[{i}] = {k} is outside int64 [{INT64_MIN}, {INT64_MAX}]")
        out.append(int(k))
    return np.array(out, dtype=np.int64)


def as_values(values: Any, count: int) -> np.ndarray:
    if isinstance(values, np.ndarray):
        if values.dtype.kind not in "fiu":
            raise InvalidInput(f"values must be a float64 array; got dtype {values.dtype}")
        arr = np.ascontiguousarray(values, dtype=np.float64).reshape(-1)
    else:
        if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
            raise InvalidInput(f"values must be a sequence or array of numbers; got {type(values).__name__}")
        items = list(values)
        for i, v in enumerate(items):
            if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
                raise InvalidInput(f"values[{i}] = {v!r} is not a number")
        arr = np.array(items, dtype=np.float64)
    if len(arr) != count:
        raise InvalidInput(f"got {count} keys but {len(arr)} values; pass one value per key")
    if not np.isfinite(arr).all():
        bad = int(np.nonzero(~np.isfinite(arr))[0][0])
        raise InvalidInput(f"values[{bad}] = {arr[bad]!r}: NaN and infinite values are not stored (the JSON API "
                           f"cannot represent them); store a finite sentinel or delete the key instead")
    return arr


def as_key(key: Any) -> int:
    if isinstance(key, bool) or not isinstance(key, (int, np.integer)):
        raise InvalidInput(f"key {key!r} is not an integer; keys are int64")
    key = int(key)
    if not INT64_MIN <= key <= INT64_MAX:
        raise InvalidInput(f"key {key} is outside int64 [{INT64_MIN}, {INT64_MAX}]")
    return key
