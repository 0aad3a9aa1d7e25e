"""Sorted runs: the immutable building block of the delta and of the base.

A run holds sorted unique int64 keys with their float64 values, the LSN of the write that made each
record, and a `live` flag (False marks a delete, a tombstone). Combining runs keeps the newest entry per
key. All functions here are pure.

The two merge loops are compiled (numba, in ``omendb.runs_kernels``) and imported at the first merge, not
with this module: the backup tool uses only the numpy parts (replay, apply_to_base, merged_count, the
digest's pieces), and importing numba costs 0.4-0.8 s of its start.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from omendb.wal import Frame

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


@cache
def _kernels() -> ModuleType:
    """omendb.runs_kernels, imported once, at the first merge (see the module docstring)."""
    from omendb import runs_kernels
    return runs_kernels


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
    # Linear merges into preallocated arrays, newest (smallest) first: a delta's runs shrink geometrically
    # towards the newest, so this copies about twice the delta in all and never sorts.
    acc = runs[-1]
    for run in reversed(runs[:-1]):
        acc = merge_two(run, acc)
    return acc


def latest_per_key(keys: np.ndarray, values: np.ndarray, lsns: np.ndarray, live: np.ndarray) -> Run:
    """A run from entries in write order (unsorted, keys may repeat): the last entry per key wins."""
    order = np.argsort(keys, kind="stable")  # stable: among equal keys, later entries come last
    sorted_keys = keys[order]
    last = np.ones(len(sorted_keys), dtype=bool)
    last[:-1] = sorted_keys[1:] != sorted_keys[:-1]
    pick = order[last]
    return Run(sorted_keys[last], values[pick], lsns[pick], live[pick])


def replay(frames: Iterable[Frame], seen: Callable[[Frame], None]) -> Run | None:
    """WAL replay, the one the engine's recovery and a backup's restore both use: the writes of `frames` (in
    LSN order) as one run holding the newest write of each key, deletes as tombstones; None when there are
    no frames. `seen` is called with each frame in order, so the caller follows LSN, term and commit time."""
    keys_l, values_l, lsns_l, live_l = [], [], [], []
    for frame in frames:
        n = len(frame.keys)
        keys_l.append(frame.keys)
        values_l.append(frame.values if frame.values is not None else np.zeros(n))
        lsns_l.append(np.full(n, frame.lsn, dtype=np.int64))
        live_l.append(np.full(n, frame.values is not None))
        seen(frame)
    if not keys_l:
        return None
    return latest_per_key(np.concatenate(keys_l), np.concatenate(values_l), np.concatenate(lsns_l),
                          np.concatenate(live_l))


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


def merge_two(older: Run, newer: Run) -> Run:
    """Two sorted runs as one (newer entries win), by a linear merge into preallocated arrays."""
    n = len(older) + len(newer)
    out = Run(np.empty(n, np.int64), np.empty(n, np.float64), np.empty(n, np.int64), np.empty(n, bool))
    m = _kernels().merge_runs(older.keys, older.values, older.lsns, older.live, newer.keys, newer.values,
                              newer.lsns, newer.live, out.keys, out.values, out.lsns, out.live)
    if m == n:
        return out
    return Run(out.keys[:m].copy(), out.values[:m].copy(), out.lsns[:m].copy(), out.live[:m].copy())


def merged_count(base_keys: np.ndarray, delta: Run) -> int:
    """Records in the base once `delta` is applied."""
    if len(delta) == 0:
        return len(base_keys)
    if len(base_keys) == 0:
        return int(np.count_nonzero(delta.live))
    pos = np.minimum(np.searchsorted(base_keys, delta.keys), len(base_keys) - 1)
    exists = base_keys[pos] == delta.keys
    return len(base_keys) + int(np.count_nonzero(delta.live & ~exists)) - int(np.count_nonzero(~delta.live & exists))


def chunk_bounds(base_keys: np.ndarray, runs_oldest_first: list[Run], chunk: int = 1 << 18) -> list[int]:
    """Keys splitting the base and the delta's runs into pieces of about `chunk` records or fewer (each piece
    holds the keys from one bound up to the next; the first starts at the smallest key, the last has no
    upper bound)."""
    marks = [base_keys[chunk::chunk]] + [r.keys[chunk::chunk] for r in runs_oldest_first]
    return np.unique(np.concatenate(marks)).tolist() if any(len(m) for m in marks) else []


def delta_pieces(base_keys: np.ndarray, runs_oldest_first: list[Run], bounds: list[int]
                 ) -> Iterator[tuple[slice, Run]]:
    """(base slice, combined delta) for each piece between `bounds`: the delta's runs are combined a piece
    at a time, so a merge never holds a combined copy of the whole delta."""
    b_lo, r_lo = 0, [0] * len(runs_oldest_first)
    for x in [*bounds, None]:
        b_hi = len(base_keys) if x is None else int(np.searchsorted(base_keys, x))
        pieces = []
        for i, run in enumerate(runs_oldest_first):
            hi = len(run) if x is None else int(np.searchsorted(run.keys, x))
            pieces.append(Run(run.keys[r_lo[i]:hi], run.values[r_lo[i]:hi], run.lsns[r_lo[i]:hi],
                              run.live[r_lo[i]:hi]))
            r_lo[i] = hi
        yield slice(b_lo, b_hi), combine(pieces)
        b_lo = b_hi


def merged_count_runs(base_keys: np.ndarray, runs_oldest_first: list[Run], bounds: list[int]) -> int:
    """Records in the base once the delta's runs are applied (piece by piece, see delta_pieces)."""
    return sum(merged_count(base_keys[part], delta) if len(delta) else part.stop - part.start
               for part, delta in delta_pieces(base_keys, runs_oldest_first, bounds))


def merge_chunks(base_keys: np.ndarray, base_values: np.ndarray, base_lsns: np.ndarray,
                 runs_oldest_first: list[Run], bounds: list[int],
                 consumed: Callable[[int, int], None] | None = None
                 ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The base with the delta's runs applied, in ascending pieces between `bounds` (see chunk_bounds): a
    merge streams these to the new base file, so it never holds a second full copy of the base. Once the
    caller has taken a piece, `consumed(start, stop)` is told which base records went into it."""
    for part, delta in delta_pieces(base_keys, runs_oldest_first, bounds):
        size = part.stop - part.start + len(delta)
        keys, values, lsns = np.empty(size, np.int64), np.empty(size, np.float64), np.empty(size, np.int64)
        m = _kernels().merge_base(base_keys[part], base_values[part], base_lsns[part], delta.keys,
                                  delta.values, delta.lsns, delta.live, keys, values, lsns)
        yield keys[:m], values[:m], lsns[:m]
        if consumed is not None:
            consumed(part.start, part.stop)


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
