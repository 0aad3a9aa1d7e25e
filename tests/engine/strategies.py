"""Adversarial key sets for the learned index and the database (hypothesis strategies)."""

import numpy as np
from hypothesis import strategies as st

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


@st.composite
def key_sets(draw, max_size: int = 3000) -> np.ndarray:
    """Sorted unique int64 keys: clustered, lognormal, sequential with gaps, extreme values, tiny, empty."""
    kind = draw(st.sampled_from(["clustered", "lognormal", "gaps", "extreme", "tiny", "uniform", "dense"]))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    n = draw(st.integers(0, max_size)) if kind != "tiny" else draw(st.integers(0, 3))
    if kind == "clustered":
        centers = rng.integers(INT64_MIN // 2, INT64_MAX // 2, size=max(1, n // 200 + 1))
        keys = centers[rng.integers(0, len(centers), n)] + rng.integers(-1000, 1000, n)
    elif kind == "lognormal":
        keys = (rng.lognormal(0, 3, n) * 1e6).astype(np.int64)
    elif kind == "gaps":
        keys = np.cumsum(rng.choice([1, 1, 1, 2, 1000, 10**9], size=n)).astype(np.int64)
    elif kind == "extreme":
        edge = np.array([INT64_MIN, INT64_MIN + 1, -1, 0, 1, INT64_MAX - 1, INT64_MAX], dtype=np.int64)
        keys = np.concatenate([edge, rng.integers(INT64_MIN, INT64_MAX, n, dtype=np.int64, endpoint=True)])
    elif kind == "dense":
        keys = np.arange(n, dtype=np.int64) * draw(st.integers(1, 3)) - n
    else:
        keys = rng.integers(INT64_MIN, INT64_MAX, n, dtype=np.int64, endpoint=True)
    return np.unique(keys.astype(np.int64))
