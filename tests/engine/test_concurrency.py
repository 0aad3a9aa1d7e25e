"""Readers and writers hammer the database while background merges and checkpoints run: every read sees a
consistent state (a batch entirely or not at all) and never goes back in time."""

import threading
import time

import numpy as np

from omendb import Database

from .conftest import make_config

HOT = np.arange(0, 600, dtype=np.int64)  # every version batch rewrites all of these to its version number


def test_reads_stay_consistent_during_merges(tmp_path):
    config = make_config(tmp_path, index={"retrain_threshold": 3000}, wal={"sync_on_write": False})
    stop = threading.Event()
    errors: list[str] = []
    with Database.open(config) as db:
        db.put_many(HOT, np.zeros(len(HOT)))

        def versions() -> None:
            version = 0
            while not stop.is_set():
                version += 1
                db.put_many(HOT if version % 2 else HOT[::-1], np.full(len(HOT), float(version)))

        def filler() -> None:  # new keys, in batch sizes that exercise the dict and the runs, to force merges
            rng = np.random.default_rng(0)
            base = 10**9
            while not stop.is_set():
                n = int(rng.choice([3, 200, 2500]))
                db.put_many(np.arange(base, base + n), np.ones(n))
                base += n

        def reader(kind: str) -> None:
            last = 0.0
            while not stop.is_set():
                if kind == "get_many":
                    values, found = db.get_many(HOT)
                    seen = set(values.tolist())
                    ok = found.all()
                elif kind == "range":
                    keys, values = db.range(0, 600)
                    seen = set(values.tolist())
                    ok = len(keys) == len(HOT)
                else:
                    value = db.get(int(HOT[len(HOT) // 2]))
                    seen = {value}
                    ok = value is not None
                if not ok or len(seen) != 1:
                    errors.append(f"{kind}: torn read {sorted(seen)[:5]}")
                    return
                (current,) = seen
                if current < last:
                    errors.append(f"{kind}: went back from version {last} to {current}")
                    return
                last = current

        threads = [threading.Thread(target=versions), threading.Thread(target=filler)]
        threads += [threading.Thread(target=reader, args=(kind,)) for kind in ("get_many", "range", "get")]
        for t in threads:
            t.start()
        # Run until several background merges happened under the readers (bounded, for slow machines).
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and db.retrains_total < 4 and not errors:
            time.sleep(0.05)
        stop.set()
        for t in threads:
            t.join()
        assert not errors, errors
        assert db.retrains_total >= 4, "too few background merges ran while the readers were reading"
        final = db.get(0)
    with Database.open(config) as db:
        assert db.get(0) == final
