"""Sorted runs: the immutable building block of the delta and of the base.

A run holds sorted unique int64 keys with their float64 values, the LSN of the write that made each
record, and a `live` flag (False marks a delete, a tombstone). Combining runs keeps the newest entry per
key. All functions here are pure.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RECORD_BYTES = 24  # key + value + LSN, the guide's capacity formula
RUN_RECORD_BYTES = RECORD_BYTES + 1  # plus the live flag


@dataclass(frozen=True)
class Run:
    keys: np.ndarray  # int64, sorted, unique
    values: np.ndarray  # float64
    lsns: np.ndarray  # int64
    live: np.ndarray  # bool; False = deleted

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def nbytes(self) -> int:
        return len(self.keys) * RUN_RECORD_BYTES


EMPTY_RUN = Run(np.zeros(0, np.int64), np.zeros(0, np.float64), np.zeros(0, np.int64), np.zeros(0, bool))


def run_from_batch(keys: np.ndarray, values: np.ndarray | None, lsn: int) -> Run:
    """A run from one write batch (values None = deletes); a key repeated in a batch keeps its last value."""
    if len(keys) == 0:
        return EMPTY_RUN
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    last = np.ones(len(sorted_keys), dtype=bool)
    last[:-1] = sorted_keys[1:] != sorted_keys[:-1]
    picked = order[last]
    vals = values[picked] if values is not None else np.zeros(len(picked))
    return Run(keys[picked], np.ascontiguousarray(vals, dtype=np.float64),
               np.full(len(picked), lsn, dtype=np.int64), np.full(len(picked), values is not None))


def combine(runs_oldest_first: list[Run]) -> Run:
    """One run holding the newest entry per key of all runs (later runs win)."""
    runs = [r for r in runs_oldest_first if len(r)]
    if not runs:
        return EMPTY_RUN
    if len(runs) == 1:
        return runs[0]
    return latest_per_key(np.concatenate([r.keys for r in runs]), np.concatenate([r.values for r in runs]),
                          np.concatenate([r.lsns for r in runs]), np.concatenate([r.live for r in runs]))


def latest_per_key(keys: np.ndarray, values: np.ndarray, lsns: np.ndarray, live: np.ndarray) -> Run:
    """A run from entries in write order (unsorted, keys may repeat): the last entry per key wins."""
    order = np.argsort(keys, kind="stable")  # stable: among equal keys, later entries come last
    sorted_keys = keys[order]
    last = np.ones(len(sorted_keys), dtype=bool)
    last[:-1] = sorted_keys[1:] != sorted_keys[:-1]
    pick = order[last]
    return Run(sorted_keys[last], values[pick], lsns[pick], live[pick])


def apply_to_base(base_keys: np.ndarray, base_values: np.ndarray, base_lsns: np.ndarray, delta: Run
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Base arrays with a combined delta applied: overwritten and deleted keys replaced, new keys inserted.
    O(len(base) + len(delta) log len(base))."""
    if len(delta) == 0:
        return base_keys, base_values, base_lsns
    base = _Arrays(base_keys, base_values, base_lsns)
    pos = np.searchsorted(base.keys, delta.keys)
    clipped = np.minimum(pos, max(len(base) - 1, 0))
    exists = (pos < len(base)) & (base.keys[clipped] == delta.keys) if len(base) else np.zeros(len(pos), bool)
    keep = np.ones(len(base), dtype=bool)
    keep[pos[exists]] = False
    kept_keys = base.keys[keep]
    add = delta.live
    add_keys = delta.keys[add]
    at = np.searchsorted(kept_keys, add_keys)
    keys = np.insert(kept_keys, at, add_keys)
    values = np.insert(base.values[keep], at, delta.values[add])
    lsns = np.insert(base.lsns[keep], at, delta.lsns[add])
    return keys, values, lsns


@dataclass(frozen=True)
class _Arrays:
    keys: np.ndarray
    values: np.ndarray
    lsns: np.ndarray

    def __len__(self) -> int:
        return len(self.keys)


def slice_range(run: Run, start: int, end: int | None) -> Run:
    lo = int(np.searchsorted(run.keys, start, side="left"))
    hi = len(run) if end is None else int(np.searchsorted(run.keys, end, side="left"))
    return Run(run.keys[lo:hi], run.values[lo:hi], run.lsns[lo:hi], run.live[lo:hi])
