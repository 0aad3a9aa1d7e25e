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

The tree is one structured array, a 64-byte record (one cache line) per node (the layout and
``LearnedIndex`` are in ``omendb.rmi_nodes``, re-exported here, so that readers of checkpoint files need
not import numba).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numba
import numpy as np
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic

from omendb.rmi_nodes import GUARD, INTERNAL, LEAF, NODE_DTYPE, LearnedIndex

MAX_FANOUT = 1 << 16


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
    nodes = _NodeBuffer()
    nodes.alloc(1)
    depth, err_sum, err_max = 1, 0.0, 0
    bound = max_error if model_type == "recursive" else None
    target = _leaf_targets(max_error)
    stack = [(0, 0, n, 1)] if n else []  # nodes whose model is still to be decided: (id, lo, hi, depth)
    while stack:
        node, lo, hi, level = stack.pop()
        depth = max(depth, level)
        # A node far larger than a leaf's target is split without first being tried as a leaf: its error
        # would almost surely exceed the bound, and the fit costs a pass over its keys.
        if bound is None or hi - lo <= 64 * target:
            starts, kmins, slopes, intercepts, errs, err_sums, _ = _fit_children(keys, lo, hi, 1, 0.0)
            if bound is None or errs[0] <= bound or hi - lo <= 1:
                nodes.arr[node] = (LEAF, kmins[0], lo, hi, errs[0], slopes[0], intercepts[0], 0)
                err_sum, err_max = err_sum + err_sums[0], max(err_max, int(errs[0]))
                continue
        fanout = int(min(MAX_FANOUT, max(2, -(-(hi - lo) // target))))
        span = float(np.uint64(int(keys[hi - 1]) - int(keys[lo])))
        scale = fanout / (span + 1.0)
        starts, kmins, slopes, intercepts, errs, err_sums, counts = _fit_children(keys, lo, hi, fanout, scale)
        first = nodes.alloc(fanout)
        arr = nodes.arr
        arr[node] = (INTERNAL, keys[lo], first, fanout, 0, scale, 0.0, 0)
        children = arr[first:first + fanout]
        children["kind"], children["kmin"], children["a"], children["b"] = LEAF, kmins, starts[:-1], starts[1:]
        children["err"], children["slope"], children["intercept"] = errs, slopes, intercepts
        done = (errs <= bound) | (counts <= 1)
        err_sum += float(err_sums[done].sum())
        err_max = max(err_max, int(errs[done].max(initial=0)))
        stack.extend((first + int(c), int(starts[c]), int(starts[c + 1]), level + 1) for c in np.nonzero(~done)[0])
    arr = nodes.arr[:nodes.n].copy()
    return LearnedIndex(
        nodes=arr, model_type=model_type, max_error=max_error, observed_max_error=err_max,
        observed_mean_error=err_sum / n if n else 0.0, leaves=int(np.count_nonzero(arr["kind"] == LEAF)),
        depth=depth, train_seconds=time.perf_counter() - started,
    )


class _NodeBuffer:
    """A growable array of node records; children of one node get consecutive ids."""

    def __init__(self) -> None:
        self.arr = np.zeros(1024, dtype=NODE_DTYPE)
        self.n = 0

    def alloc(self, count: int) -> int:
        while self.n + count > len(self.arr):
            self.arr = np.concatenate([self.arr, np.zeros(len(self.arr), dtype=NODE_DTYPE)])
        first = self.n
        self.n += count
        return first


@numba.njit(cache=True, nogil=True, inline="always")
def _route(key, kmin0, scale, fanout):  # pragma: no cover - compiled
    """The child an internal node with this scale routes `key` to (as _lookup_one does)."""
    c = np.int64(0)
    if key > kmin0:
        c = np.int64(np.floor(np.float64(np.uint64(key) - np.uint64(kmin0)) * scale))
        if c > fanout - 1:
            c = fanout - 1
    return c


@numba.njit(cache=True, nogil=True)
def _fit_children(keys, lo, hi, fanout, scale):  # pragma: no cover - compiled
    """Route keys[lo:hi] to `fanout` children as an internal node with this scale would (fanout 1 = fit the
    node itself as a leaf) and fit each child's least-squares line on offsets from its own smallest key.
    Returns per child: starts (fanout + 1), smallest key, slope, intercept, max error, error sum, count."""
    # The child of each key is recomputed in every pass rather than stored: an array of it would cost 8 bytes
    # per key (800 MB at the root of a 100M-record base), and the routing is one multiply.
    kmin0 = keys[lo]
    counts = np.zeros(fanout, np.int64)
    for i in range(lo, hi):
        counts[_route(keys[i], kmin0, scale, fanout)] += 1
    starts = np.empty(fanout + 1, np.int64)
    starts[0] = lo
    kmins = np.zeros(fanout, np.int64)
    for j in range(fanout):  # routing is monotone in the key, so children are contiguous ranges
        starts[j + 1] = starts[j] + counts[j]
        if counts[j] > 0:
            kmins[j] = keys[starts[j]]
    mean_x = np.zeros(fanout)
    for i in range(lo, hi):
        c = _route(keys[i], kmin0, scale, fanout)
        mean_x[c] += np.float64(np.uint64(keys[i]) - np.uint64(kmins[c]))
    for j in range(fanout):
        if counts[j] > 0:
            mean_x[j] /= counts[j]
    sxx = np.zeros(fanout)
    sxy = np.zeros(fanout)
    for i in range(lo, hi):  # centred sums: stable for the huge offsets extreme keys produce
        c = _route(keys[i], kmin0, scale, fanout)
        dx = np.float64(np.uint64(keys[i]) - np.uint64(kmins[c])) - mean_x[c]
        sxx[c] += dx * dx
        sxy[c] += dx * (np.float64(i - starts[c]) - (counts[c] - 1) / 2.0)
    slopes = np.zeros(fanout)
    intercepts = np.zeros(fanout)
    for j in range(fanout):
        if sxx[j] > 0:
            slopes[j] = sxy[j] / sxx[j]
        intercepts[j] = (counts[j] - 1) / 2.0 - slopes[j] * mean_x[j]
    errs = np.zeros(fanout, np.int64)
    err_sums = np.zeros(fanout)
    for i in range(lo, hi):  # the same prediction the lookup kernel makes
        c = _route(keys[i], kmin0, scale, fanout)
        x = np.float64(np.uint64(keys[i]) - np.uint64(kmins[c]))
        p = np.floor(intercepts[c] + slopes[c] * x + 0.5)
        if p < 0:
            p = 0.0
        elif p > counts[c] - 1:
            p = np.float64(counts[c] - 1)
        e = abs(np.int64(p) - (i - starts[c]))
        err_sums[c] += e
        if e > errs[c]:
            errs[c] = e
    return starts, kmins, slopes, intercepts, errs, err_sums, counts


# ---- lookups -------------------------------------------------------------------------------------------

@numba.njit(cache=True, nogil=True, inline="always")
def _search_window(keys, key, pos, wlo, whi, end):  # pragma: no cover - compiled
    """Position of `key` in keys[wlo:whi] searching from the prediction `pos`, -1 where absent."""
    # Exponential search outward from the prediction: most keys sit within a few slots of it (the mean error
    # is far below the bound), so this touches one or two cache lines where a binary search over the whole
    # window would touch several.
    if keys[pos] < key:
        lo = pos + 1
        bound = 1
        while lo + bound - 1 < whi and keys[lo + bound - 1] < key:
            lo += bound
            bound *= 2
        hi = lo + bound - 1
        if hi > whi:
            hi = whi
    else:
        hi = pos
        bound = 1
        while hi - bound >= wlo and keys[hi - bound] >= key:
            hi -= bound
            bound *= 2
        lo = hi - bound + 1
        if lo < wlo:
            lo = wlo
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
def _lookup_one(nodes, keys, key):  # pragma: no cover - compiled
    node = nodes[0]
    while node.kind == INTERNAL:
        child = np.int64(0)
        if key > node.kmin:
            x = np.float64(np.uint64(key) - np.uint64(node.kmin))
            child = np.int64(np.floor(x * node.slope))
            if child > node.b - 1:
                child = node.b - 1
        node = nodes[node.a + child]
    kmin = node.kmin
    start = node.a
    end = node.b
    if end <= start or key < kmin:
        return -1
    x = np.float64(np.uint64(key) - np.uint64(kmin))
    p = np.floor(node.intercept + node.slope * x + 0.5)
    size = end - start
    if p < 0:
        p = 0.0
    elif p > size - 1:
        p = np.float64(size - 1)
    err = node.err + GUARD
    pos = start + np.int64(p)
    wlo = pos - err  # the window the measured error guarantees: [pos - err, pos + err]
    whi = pos + err + 1
    if wlo < start:
        wlo = start
    if whi > end:
        whi = end
    return _search_window(keys, key, pos, wlo, whi, end)


def _prefetch_typing(typingctx, arr, idx):  # pragma: no cover - compiled
    """Ask the CPU to start loading the cache line of `arr[idx]` (LLVM's prefetch: a hint, never a fault,
    so an index anywhere inside the array is safe) without waiting for it."""
    sig = types.void(arr, idx)

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, signature.args[0], ary, [args[1]], wraparound=False)
        i8p = builder.bitcast(ptr, ir.IntType(8).as_pointer())
        i32 = ir.IntType(32)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [i8p.type, i32, i32, i32]),
                                            "llvm.prefetch.p0")
        # read (0), keep in every cache level (3), data cache (1)
        builder.call(fn, [i8p, ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()
    return sig, codegen


_prefetch: Any = intrinsic(_prefetch_typing)  # called as _prefetch(arr, idx) from compiled code


LOOKUP_GROUP = 16  # lookups in flight at once: enough to keep the CPU's outstanding misses busy


@numba.njit(cache=True, nogil=True)
def _lookup_many(nodes, keys, queries, out):  # pragma: no cover - compiled
    """The lookups of `_lookup_one`, a group at a time, stage by stage: every lookup of the group descends
    one level of the tree, then every one predicts its position, then every one searches its window. Each
    stage prefetches what the next stage will read for every lookup of the group, so the group's cache and
    TLB misses (a leaf's node, the keys around the prediction, each a miss into a base of hundreds of MB)
    overlap instead of following one another; one lookup at a time spends most of its time waiting for
    memory. Same results as `_lookup_one` for every query."""
    n = len(queries)
    g = LOOKUP_GROUP
    nid = np.zeros(g, np.int64)
    pos = np.zeros(g, np.int64)
    wlos = np.zeros(g, np.int64)
    whis = np.zeros(g, np.int64)
    for g0 in range(0, n, g):
        m = min(g, n - g0)
        for j in range(m):
            nid[j] = 0
        descending = True
        while descending:
            descending = False
            for j in range(m):
                node = nodes[nid[j]]
                if node.kind == INTERNAL:
                    key = queries[g0 + j]
                    child = np.int64(0)
                    if key > node.kmin:
                        child = np.int64(np.floor(np.float64(np.uint64(key) - np.uint64(node.kmin)) * node.slope))
                        if child > node.b - 1:
                            child = node.b - 1
                    nid[j] = node.a + child
                    _prefetch(nodes, nid[j])
                    descending = True
        for j in range(m):
            node = nodes[nid[j]]
            key = queries[g0 + j]
            start = node.a
            end = node.b
            if end <= start or key < node.kmin:
                pos[j] = -1
                continue
            p = np.floor(node.intercept + node.slope * np.float64(np.uint64(key) - np.uint64(node.kmin)) + 0.5)
            if p < 0:
                p = 0.0
            elif p > end - start - 1:
                p = np.float64(end - start - 1)
            err = node.err + GUARD
            ps = start + np.int64(p)
            pos[j] = ps
            wlos[j] = max(ps - err, start)
            whis[j] = min(ps + err + 1, end)
            # The prediction's line and its neighbours' (8 keys a line): the mean error is a few slots, so
            # the search usually stays within these three.
            _prefetch(keys, ps)
            if ps + 8 < whis[j]:
                _prefetch(keys, ps + 8)
            if ps - 8 >= wlos[j]:
                _prefetch(keys, ps - 8)
        for j in range(m):
            ps = pos[j]
            if ps < 0:
                out[g0 + j] = -1
                continue
            out[g0 + j] = _search_window(keys, queries[g0 + j], ps, wlos[j], whis[j], nodes[nid[j]].b)


def lookup_many(index: LearnedIndex, keys: np.ndarray, queries: np.ndarray, compiled: bool = True
                ) -> np.ndarray:
    """Positions of `queries` in the sorted `keys` array, -1 where absent."""
    out = np.empty(len(queries), dtype=np.int64)
    if len(queries) == 0:
        return out
    if compiled:
        _lookup_many(index.nodes, keys, queries, out)
        return out
    return _lookup_many_numpy(index, keys, queries)


def lookup_one(index: LearnedIndex, keys: np.ndarray, key: int) -> int:
    return int(_lookup_one(index.nodes, keys, key))


def point_lookup(nodes: np.ndarray, keys: np.ndarray) -> Callable[[np.ndarray, np.ndarray, int], int]:
    """``_lookup_one`` compiled for the types of these two arrays, to be called with them (or arrays of the
    very same types) and an int64 key, without numba's dispatcher. The dispatcher works out the argument
    types on every call (a record array's too): about 0.3 µs of a single-key read that would give the same
    answer for the life of a base. The types are numba's own (the dispatcher's typeof), so a base whose
    arrays differ in any way (read-only, aligned, layout) gets the code compiled for exactly those."""
    signature = tuple(_lookup_one.typeof_pyval(a) for a in (nodes, keys)) + (types.int64,)
    entry: Callable[[np.ndarray, np.ndarray, int], int] = _lookup_one.compile(signature)
    return entry


def _lookup_many_numpy(index: LearnedIndex, keys: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """The same lookup as the compiled kernel, level by level in plain numpy (`enable_simd = false`)."""
    nodes = index.nodes
    kind, kmins, a, b = nodes["kind"], nodes["kmin"], nodes["a"], nodes["b"]
    slopes, intercepts = nodes["slope"], nodes["intercept"]
    node = np.zeros(len(queries), dtype=np.int64)
    while True:
        internal = kind[node] == INTERNAL
        if not internal.any():
            break
        idx = np.nonzero(internal)[0]
        n, q = node[idx], queries[idx]
        child = np.floor(_offsets(q, kmins[n]) * slopes[n])
        child = np.minimum(child, b[n] - 1).astype(np.int64)
        node[idx] = a[n] + child
    kmin, start, end = kmins[node], a[node], b[node]
    size = end - start
    p = np.floor(intercepts[node] + slopes[node] * _offsets(queries, kmin) + 0.5)
    p = np.clip(p, 0, np.maximum(size - 1, 0)).astype(np.int64)
    err = nodes["err"][node] + GUARD
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
