"""The learned index's data, without its compiled kernels: the node record layout and ``LearnedIndex``.

A tree is one structured array, a 64-byte record (one cache line) per node, so a lookup costs one cache
miss per level: ``kind, kmin, a, b, err, slope, intercept``; for an internal node a/b are (first child,
child count) and ``slope`` is the routing scale, for a leaf a/b are (start, end) in the base array.

Training and lookups (numba kernels) are in ``omendb.rmi``, which re-exports these names. They live apart
so that code that only reads or writes checkpoint files (``omendb.checkpoint``, the backup tool) does not
import numba: that import alone costs 0.4-0.8 s of a process's start on a small machine, as much as a
whole restore of 10M records.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LEAF = 0
INTERNAL = 1
NODE_DTYPE = np.dtype([("kind", np.int64), ("kmin", np.int64), ("a", np.int64), ("b", np.int64),
                       ("err", np.int64), ("slope", np.float64), ("intercept", np.float64), ("pad", np.int64)])
GUARD = 1  # extra slots searched on each side of a leaf's measured error


@dataclass(frozen=True)
class LearnedIndex:
    nodes: np.ndarray  # NODE_DTYPE records
    model_type: str
    max_error: int  # the configured bound
    observed_max_error: int
    observed_mean_error: float
    leaves: int
    depth: int
    train_seconds: float

    @property
    def model_bytes(self) -> int:
        return int(self.nodes.nbytes)
