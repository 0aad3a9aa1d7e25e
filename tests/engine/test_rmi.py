import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from omendb import rmi

from .strategies import INT64_MAX, INT64_MIN, key_sets


def _absent(keys: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    probes = np.concatenate([keys - 1, keys + 1, rng.integers(INT64_MIN, INT64_MAX, 200, dtype=np.int64),
                             np.array([INT64_MIN, INT64_MAX], dtype=np.int64)]) if len(keys) else \
        np.array([INT64_MIN, 0, INT64_MAX], dtype=np.int64)
    probes = probes[(probes >= INT64_MIN) & (probes <= INT64_MAX)].astype(np.int64)
    return probes[~np.isin(probes, keys)]


@settings(max_examples=150, deadline=None)
@given(keys=key_sets(), max_error=st.sampled_from([1, 4, 10, 50, 100]), model_type=st.sampled_from(
    ["recursive", "linear"]))
def test_every_key_is_found_and_absent_keys_are_not(keys, max_error, model_type):
    index = rmi.train(keys, model_type, max_error)
    expected = np.arange(len(keys))
    for compiled in (True, False):
        assert (rmi.lookup_many(index, keys, keys, compiled) == expected).all()
    absent = _absent(keys, np.random.default_rng(len(keys)))
    assert (rmi.lookup_many(index, keys, absent, True) == -1).all()
    assert (rmi.lookup_many(index, keys, absent, False) == -1).all()
    for i in range(0, len(keys), max(1, len(keys) // 50)):
        assert rmi.lookup_one(index, keys, int(keys[i])) == i


@settings(max_examples=100, deadline=None)
@given(keys=key_sets(), max_error=st.sampled_from([1, 4, 10, 50]))
def test_max_error_is_a_hard_bound_for_the_recursive_model(keys, max_error):
    index = rmi.train(keys, "recursive", max_error)
    leaves = index.nodes[index.nodes["kind"] == rmi.LEAF]
    assert (leaves["err"] <= max_error).all()
    assert index.observed_max_error <= max_error


def test_larger_error_bound_gives_fewer_larger_leaves():
    keys = np.unique((np.random.default_rng(1).lognormal(0, 2, 200_000) * 1e9).astype(np.int64))
    tight = rmi.train(keys, "recursive", 10)
    loose = rmi.train(keys, "recursive", 100)
    assert loose.leaves < tight.leaves
    assert loose.model_bytes < tight.model_bytes
    assert tight.observed_max_error <= 10 and loose.observed_max_error <= 100


@pytest.mark.parametrize("model_type", ["recursive", "linear"])
def test_empty_and_single_key(model_type):
    empty = np.zeros(0, np.int64)
    index = rmi.train(empty, model_type, 10)
    assert rmi.lookup_one(index, empty, 5) == -1
    one = np.array([INT64_MIN], dtype=np.int64)
    index = rmi.train(one, model_type, 10)
    assert rmi.lookup_one(index, one, INT64_MIN) == 0
    assert rmi.lookup_one(index, one, INT64_MAX) == -1


@pytest.mark.parametrize("count", [1, 15, 16, 17, 33, 1000])
def test_batch_lookups_in_groups_match_one_at_a_time(count):
    """The batch kernel runs a group of lookups stage by stage: any batch size, present and absent keys and
    duplicates mixed in any order, gives what lookup_one gives for each."""
    rng = np.random.default_rng(count)
    keys = np.unique((rng.lognormal(0, 2, 50_000) * 1e9).astype(np.int64))
    index = rmi.train(keys, "recursive", 50)
    probes = np.concatenate([rng.choice(keys, count), _absent(keys, rng)[:count]])
    probes = rng.permutation(np.concatenate([probes, probes[:3]]))
    expected = np.array([rmi.lookup_one(index, keys, int(k)) for k in probes])
    assert (rmi.lookup_many(index, keys, probes) == expected).all()
    assert (expected[np.isin(probes, keys)] >= 0).all()


def test_point_lookup_without_the_dispatcher_answers_as_lookup_one():
    """rmi.point_lookup (Database.get's lookup, compiled code called directly) gives lookup_one's answers,
    for a writable key array and for a read-only one like a memory-mapped checkpoint's (another numba type,
    so other code), present, absent and extreme keys."""
    rng = np.random.default_rng(5)
    keys = np.unique((rng.lognormal(0, 2, 20_000) * 1e9).astype(np.int64))
    index = rmi.train(keys, "recursive", 50)
    frozen = keys.copy()
    frozen.flags.writeable = False
    probes = [int(k) for k in np.concatenate([rng.choice(keys, 200), _absent(keys, rng)[:200]])]
    probes += [INT64_MIN, INT64_MAX, 0, -1]
    for array in (keys, frozen):
        lookup = rmi.point_lookup(index.nodes, array)
        assert [lookup(index.nodes, array, k) for k in probes] == [rmi.lookup_one(index, keys, k) for k in probes]
    empty = np.zeros(0, np.int64)
    lookup = rmi.point_lookup(rmi.train(empty, "linear", 10).nodes, empty)
    assert lookup(rmi.train(empty, "linear", 10).nodes, empty, 5) == -1
