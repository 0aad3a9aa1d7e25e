"""Every read checked against a reference dict, over adversarial key sets, merges, checkpoints and reopens."""

import shutil
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from omendb import Database

from .conftest import make_config
from .strategies import INT64_MAX, INT64_MIN, key_sets


class DatabaseMachine(RuleBasedStateMachine):
    @initialize(pool=key_sets(max_size=2000), threshold=st.sampled_from([20, 300, 5000]),
                max_error=st.sampled_from([2, 16, 64]), model_type=st.sampled_from(["recursive", "linear"]),
                simd=st.booleans(), compression=st.booleans())
    def open(self, pool, threshold, max_error, model_type, simd, compression):
        self.dir = Path(tempfile.mkdtemp(prefix="omendb-prop-"))
        self.config = make_config(self.dir, index={"retrain_threshold": threshold, "max_error": max_error,
                                                   "model_type": model_type},
                                  performance={"enable_simd": simd}, storage={"enable_compression": compression,
                                                                              "batch_size": 1024})
        extra = np.array([INT64_MIN, INT64_MAX, 0], dtype=np.int64)
        self.pool = np.unique(np.concatenate([pool, extra]))
        self.db = Database.open(self.config)
        self.ref: dict[int, float] = {}
        self.rng = np.random.default_rng(len(pool))

    def teardown(self):
        if hasattr(self, "db"):
            self.db.close()
            shutil.rmtree(self.dir, ignore_errors=True)

    def _pick(self, n):
        return self.pool[self.rng.integers(0, len(self.pool), n)]

    @rule(n=st.integers(1, 3000), repeat=st.booleans())
    def put(self, n, repeat):
        keys = self._pick(n)
        if repeat:  # a key repeated inside one batch: the last value wins
            keys = np.concatenate([keys, keys[: n // 2]])
        values = self.rng.normal(size=len(keys))
        self.db.put_many(keys, values)
        self.ref.update(zip(keys.tolist(), values.tolist(), strict=True))

    @rule(n=st.integers(1, 1500))
    def delete(self, n):
        keys = self._pick(n)
        self.db.delete_many(keys)
        for k in keys.tolist():
            self.ref.pop(k, None)

    @rule()
    def checkpoint(self):
        self.db.checkpoint()

    @rule()
    def retrain(self):
        assert self.db.retrain_index()["keys"] == len(self.ref)

    @rule()
    def reopen(self):
        self.db.close()
        self.db = Database.open(self.config)

    @rule(data=st.data())
    def range_scan(self, data):
        lo = int(data.draw(st.sampled_from(self.pool)))
        hi = data.draw(st.one_of(st.none(), st.sampled_from(self.pool)))
        limit = data.draw(st.one_of(st.none(), st.integers(0, 200)))
        keys, values = self.db.range(lo, None if hi is None else int(hi), limit)
        expected = sorted(k for k in self.ref if k >= lo and (hi is None or k < hi))
        if limit is not None:
            expected = expected[:limit]
        assert keys.tolist() == expected
        assert values.tolist() == [self.ref[k] for k in expected]

    @precondition(lambda self: hasattr(self, "db"))
    @invariant()
    def reads_match_the_reference(self):
        probe = self._pick(400)
        values, found = self.db.get_many(probe)
        for k, v, f in zip(probe.tolist(), values.tolist(), found.tolist(), strict=True):
            assert f == (k in self.ref), k
            if f:
                assert v == self.ref[k]
        for k in probe[:20].tolist():
            assert self.db.get(k) == self.ref.get(k)
        assert self.db.count() == len(self.ref)


TestDatabase = DatabaseMachine.TestCase
TestDatabase.settings = settings(max_examples=40, stateful_step_count=20, deadline=None)
