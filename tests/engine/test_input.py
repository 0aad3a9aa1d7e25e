import numpy as np
import pytest

from omendb import Database, DatabaseLocked, InvalidInput, MemoryLimitExceeded

from .conftest import make_config


@pytest.mark.parametrize("keys, values, message", [
    ([2**63], [1.0], "outside int64"),
    ([-(2**63) - 1], [1.0], "outside int64"),
    ([1, 2], [1.0], "2 keys but 1 values"),
    ([1.5], [1.0], "not an integer"),
    (["1"], [1.0], "not an integer"),
    ([True], [1.0], "not an integer"),
    (np.array([1.0]), [1.0], "integer array"),
    ([1], ["x"], "not a number"),
    ([1], [float("nan")], "NaN and infinite"),
    ([1], [float("inf")], "NaN and infinite"),
    (np.array([2**64 - 1], dtype=np.uint64), [1.0], "fit in int64"),
    ("12", [1.0], "sequence or array"),
])
def test_bad_input_is_refused_and_changes_nothing(db, keys, values, message):
    db.put_many([7], [7.0])
    lsn = db.lsn()
    with pytest.raises(InvalidInput, match=message):
        db.put_many(keys, values)
    assert db.lsn() == lsn and db.count() == 1 and db.get(7) == 7.0


def test_bad_single_key_and_range_arguments(db):
    with pytest.raises(InvalidInput):
        db.get(2**63)
    with pytest.raises(InvalidInput):
        db.get("1")
    with pytest.raises(InvalidInput, match="limit"):
        db.range(0, 10, limit=-1)


def test_memory_limit_refuses_a_write_whole(tmp_path):
    config = make_config(tmp_path, database={"max_memory_mb": 1}, limits={"memory_limit_mb": 64})
    with Database.open(config) as db:
        db.put_many(np.arange(10_000), np.ones(10_000))
        before = db.lsn(), db.count()
        with pytest.raises(MemoryLimitExceeded, match="max_memory_mb"):
            db.put_many(np.arange(10_000, 60_000), np.ones(50_000))
        assert (db.lsn(), db.count()) == before
        assert db.memory_usage_bytes() <= config.memory_limit_bytes
        db.delete_many(np.arange(5_000))  # deletes are how space is freed: always accepted
        assert db.count() == 5_000
    with Database.open(config) as db:  # the refused batch never reached the WAL
        assert db.count() == 5_000


def test_second_open_of_the_same_directory_is_refused(config):
    with Database.open(config), pytest.raises(DatabaseLocked, match="in use by process"):
        Database.open(config)


def test_empty_batches_are_no_ops(db):
    assert db.put_many([], []) == 0
    assert db.delete_many(np.zeros(0, dtype=np.int64)) == 0
