"""The learned index: a recursive model index (RMI) over a sorted int64 key array.

A tree of models maps a key to its position in the sorted base array. Internal nodes route a key to one
of their children with a linear model over the node's key range; leaves predict the position with a
least-squares line. Training measures every leaf's worst prediction error on the keys it holds; a leaf
whose error exceeds ``max_error`` is replaced by an internal node over the same keys (recursively), so
``max_error`` is a hard bound: a lookup searches at most ``2 * max_error + 1`` slots (plus one guard slot
on each side against floating-point rounding differences between training and lookup).

Correctness never depends on the model: a lookup compares the key it finds with the key it was asked
for, and the window is derived from errors measured on the very keys in the array.

Keys are mapped to float offsets relative to each node's smallest key, computed in uint64 arithmetic,
so offsets inside small nodes are exact even for extreme int64 values.

The tree is two arrays so a compiled kernel can take it in one argument each:
``nodes_i[n] = [kind, kmin, a, b, err]`` and ``nodes_f[n] = [slope_or_scale, intercept]``; for an
internal node a/b are (first child, child count), for a leaf (start, end) in the base array.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numba
import numpy as np

LEAF = 0
INTERNAL = 1
MAX_FANOUT = 1 << 16
GUARD = 1  # extra slots searched on each side of a leaf's measured error


@dataclass(frozen=True)
class LearnedIndex:
    nodes_i: np.ndarray  # int64 (n_nodes, 5)
    nodes_f: np.ndarray  # float64 (n_nodes, 2)
    model_type: str
    max_error: int  # the configured bound
    observed_max_error: int
    observed_mean_error: float
    leaves: int
    depth: int
    train_seconds: float

    @property
    def model_bytes(self) -> int:
        return int(self.nodes_i.nbytes + self.nodes_f.nbytes)


def _offsets(keys: np.ndarray, kmin: np.ndarray | int) -> np.ndarray:
    """Float offsets of keys above kmin; keys below kmin map to 0 (they route to the first child)."""
    diff = keys.view(np.uint64) - np.asarray(kmin, dtype=np.int64).view(np.uint64)
    return np.where(keys < kmin, 0.0, diff.astype(np.float64))


def _leaf_targets(max_error: int) -> int:
    # Larger error bounds buy fewer, larger leaves (a smaller model, a wider search), as the guide's tuning
    # section describes.
    return max(16, 8 * max_error)


def train(keys: np.ndarray, model_type: str = "recursive", max_error: int = 50) -> LearnedIndex:
    """Train an index over sorted unique int64 keys."""
    started = time.perf_counter()
    n = len(keys)
    nodes_i: list[list[int]] = [[LEAF, 0, 0, 0, 0]]
    nodes_f: list[list[float]] = [[0.0, 0.0]]
    leaf_errors: list[np.ndarray] = []
    depth = 1
    if n:
        bound = max_error if model_type == "recursive" else None
        # Work stack of (node id, lo, hi, depth): nodes whose model is still to be decided.
        stack = [(0, 0, n, 1)]
        while stack:
            node, lo, hi, level = stack.pop()
            depth = max(depth, level)
            err = _fit_leaf(keys, lo, hi, nodes_i, nodes_f, node)
            if bound is None or err[1] <= bound or hi - lo <= 1:
                leaf_errors.append(err[0])
                continue
            fanout = int(min(MAX_FANOUT, max(2, -(-(hi - lo) // _leaf_targets(max_error)))))
            children = _split(keys, lo, hi, fanout, nodes_i, nodes_f, node, bound, leaf_errors)
            stack.extend((child, clo, chi, level + 1) for child, clo, chi in children)
    errors = np.concatenate(leaf_errors) if leaf_errors else np.zeros(0, dtype=np.int64)
    ni = np.asarray(nodes_i, dtype=np.int64).reshape(-1, 5)
    nf = np.asarray(nodes_f, dtype=np.float64).reshape(-1, 2)
    return LearnedIndex(
        nodes_i=ni, nodes_f=nf, model_type=model_type, max_error=max_error,
        observed_max_error=int(errors.max()) if len(errors) else 0,
        observed_mean_error=float(errors.mean()) if len(errors) else 0.0,
        leaves=int(np.count_nonzero(ni[:, 0] == LEAF)), depth=depth,
        train_seconds=time.perf_counter() - started,
    )


def _fit_leaf(keys, lo, hi, nodes_i, nodes_f, node) -> tuple[np.ndarray, int]:
    """Fit one least-squares line to keys[lo:hi]; returns (per-key errors, max error)."""
    k = keys[lo:hi]
    kmin = int(k[0])
    x = _offsets(k, kmin)
    y = np.arange(hi - lo, dtype=np.float64)
    if hi - lo > 1 and x[-1] > 0:
        mx, my = x.mean(), y.mean()
        dx = x - mx
        slope = float((dx * (y - my)).sum() / (dx * dx).sum())
        intercept = float(my - slope * mx)
    else:
        slope, intercept = 0.0, float((hi - lo - 1) / 2)
    pred = np.clip(np.floor(intercept + slope * x + 0.5), 0, hi - lo - 1)
    errors = np.abs(pred - y).astype(np.int64)
    err = int(errors.max())
    nodes_i[node] = [LEAF, kmin, lo, hi, err]
    nodes_f[node] = [slope, intercept]
    return errors, err


def _split(keys, lo, hi, fanout, nodes_i, nodes_f, node, bound, leaf_errors):
    """Make `node` internal with `fanout` children; fit all children as leaves in one vectorized pass and
    return the (child, lo, hi) of those whose error exceeds the bound, to be split further."""
    k = keys[lo:hi]
    kmin = int(k[0])
    span = float(np.uint64(int(k[-1]) - kmin)) if int(k[-1]) >= kmin else 0.0
    scale = fanout / (span + 1.0)
    child_of = np.clip(np.floor(_offsets(k, kmin) * scale), 0, fanout - 1).astype(np.int64)
    starts = np.searchsorted(child_of, np.arange(fanout), side="left")
    ends = np.append(starts[1:], hi - lo)
    first_child = len(nodes_i)
    nodes_i[node] = [INTERNAL, kmin, first_child, fanout, 0]
    nodes_f[node] = [scale, 0.0]

    sizes = ends - starts
    nonempty = sizes > 0
    # Per-child least squares on offsets relative to each child's own smallest key.
    child_kmin = np.where(nonempty, k[np.minimum(starts, len(k) - 1)], 0)
    x = _offsets(k, child_kmin[child_of])
    y = np.arange(hi - lo, dtype=np.float64) - starts[child_of]
    counts = np.maximum(sizes, 1).astype(np.float64)
    mean_x = np.bincount(child_of, weights=x, minlength=fanout) / counts
    mean_y = (sizes - 1) / 2.0
    dx = x - mean_x[child_of]
    sxx = np.bincount(child_of, weights=dx * dx, minlength=fanout)
    sxy = np.bincount(child_of, weights=dx * (y - mean_y[child_of]), minlength=fanout)
    slope = np.divide(sxy, sxx, out=np.zeros(fanout), where=sxx > 0)
    intercept = mean_y - slope * mean_x
    pred = np.clip(np.floor(intercept[child_of] + slope[child_of] * x + 0.5), 0,
                   np.maximum(sizes - 1, 0)[child_of])
    errors = np.abs(pred - y).astype(np.int64)
    child_err = np.zeros(fanout, dtype=np.int64)
    np.maximum.at(child_err, child_of, errors)

    retry = []
    for c in range(fanout):
        clo, chi = lo + int(starts[c]), lo + int(ends[c])
        nodes_i.append([LEAF, int(child_kmin[c]), clo, chi, int(child_err[c])])
        nodes_f.append([float(slope[c]), float(intercept[c])])
        if child_err[c] > bound and chi - clo > 1:
            retry.append((first_child + c, clo, chi))
    ok = child_err[child_of] <= bound
    leaf_errors.append(errors[ok])
    return retry


# ---- lookups -------------------------------------------------------------------------------------------

@numba.njit(cache=True, nogil=True)
def _lookup_one(nodes_i, nodes_f, keys, key):  # pragma: no cover - compiled
    node = 0
    while nodes_i[node, 0] == INTERNAL:
        kmin = nodes_i[node, 1]
        child = np.int64(0)
        if key > kmin:
            x = np.float64(np.uint64(key) - np.uint64(kmin))
            child = np.int64(np.floor(x * nodes_f[node, 0]))
            if child > nodes_i[node, 3] - 1:
                child = nodes_i[node, 3] - 1
        node = nodes_i[node, 2] + child
    kmin = nodes_i[node, 1]
    start = nodes_i[node, 2]
    end = nodes_i[node, 3]
    if end <= start or key < kmin:
        return -1
    x = np.float64(np.uint64(key) - np.uint64(kmin))
    p = np.floor(nodes_f[node, 1] + nodes_f[node, 0] * x + 0.5)
    size = end - start
    if p < 0:
        p = 0.0
    elif p > size - 1:
        p = np.float64(size - 1)
    err = nodes_i[node, 4] + 1
    lo = start + np.int64(p) - err
    hi = start + np.int64(p) + err + 1
    if lo < start:
        lo = start
    if hi > end:
        hi = end
    while lo < hi:
        mid = (lo + hi) >> 1
        if keys[mid] < key:
            lo = mid + 1
        else:
            hi = mid
    if lo < end and keys[lo] == key:
        return lo
    return -1


@numba.njit(cache=True, nogil=True)
def _lookup_many(nodes_i, nodes_f, keys, queries, out):  # pragma: no cover - compiled
    for i in range(len(queries)):
        out[i] = _lookup_one(nodes_i, nodes_f, keys, queries[i])


def lookup_many(index: LearnedIndex, keys: np.ndarray, queries: np.ndarray, compiled: bool = True
                ) -> np.ndarray:
    """Positions of `queries` in the sorted `keys` array, -1 where absent."""
    out = np.empty(len(queries), dtype=np.int64)
    if len(queries) == 0:
        return out
    if compiled:
        _lookup_many(index.nodes_i, index.nodes_f, keys, queries, out)
        return out
    return _lookup_many_numpy(index, keys, queries)


def lookup_one(index: LearnedIndex, keys: np.ndarray, key: int) -> int:
    return int(_lookup_one(index.nodes_i, index.nodes_f, keys, key))


def _lookup_many_numpy(index: LearnedIndex, keys: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """The same lookup as the compiled kernel, level by level in plain numpy (`enable_simd = false`)."""
    ni, nf = index.nodes_i, index.nodes_f
    node = np.zeros(len(queries), dtype=np.int64)
    while True:
        internal = ni[node, 0] == INTERNAL
        if not internal.any():
            break
        idx = np.nonzero(internal)[0]
        n, q = node[idx], queries[idx]
        child = np.floor(_offsets(q, ni[n, 1]) * nf[n, 0])
        child = np.minimum(child, ni[n, 3] - 1).astype(np.int64)
        node[idx] = ni[n, 2] + child
    kmin, start, end = ni[node, 1], ni[node, 2], ni[node, 3]
    size = end - start
    p = np.floor(nf[node, 1] + nf[node, 0] * _offsets(queries, kmin) + 0.5)
    p = np.clip(p, 0, np.maximum(size - 1, 0)).astype(np.int64)
    err = ni[node, 4] + GUARD
    lo = np.maximum(start + p - err, start)
    hi = np.minimum(start + p + err + 1, end)
    steps = int(np.ceil(np.log2(max(2, 2 * int(err.max()) + 2)))) + 1
    for _ in range(steps):
        active = lo < hi
        mid = (lo + hi) >> 1
        less = np.zeros(len(queries), dtype=bool)
        less[active] = keys[mid[active]] < queries[active]
        lo = np.where(active & less, mid + 1, lo)
        hi = np.where(active & ~less, mid, hi)
    found = (lo < end) & (size > 0) & (queries >= kmin)
    found[found] = keys[lo[found]] == queries[found]
    return np.where(found, lo, -1)
