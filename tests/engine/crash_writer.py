"""Writer process for the crash test: writes numbered batches from several threads and prints an ack line
for each one after put_many/delete_many returned. Batch b puts keys [b*2000, b*2000 + size) = b, and every
7th batch deletes the keys of batch b-3 instead, once that batch is acknowledged."""

import sys
import threading

import numpy as np

from omendb import Config, Database

data_dir, wal_dir, first = sys.argv[1], sys.argv[2], int(sys.argv[3])
config = Config().replace("database", data_dir=data_dir).replace("wal", dir=wal_dir)
config = config.replace("index", retrain_threshold=3000)
db = Database.open(config)
lock = threading.Lock()
next_batch = [first]
acked_puts: set[int] = set()


def size_of(b: int) -> int:
    return (1, 50, 999, 1500)[b % 4]


def writer() -> None:
    while True:
        with lock:
            b = next_batch[0]
            next_batch[0] += 1
        with lock:
            victim_ready = b - 3 in acked_puts  # never race a delete against its own put
        if b % 7 == 0 and victim_ready:
            victim = b - 3
            db.delete_many(np.arange(victim * 2000, victim * 2000 + size_of(victim)))
            line = f"del {victim}\n"
        else:
            keys = np.arange(b * 2000, b * 2000 + size_of(b))
            db.put_many(keys, np.full(len(keys), float(b)))
            line = f"put {b}\n"
            with lock:
                acked_puts.add(b)
        sys.stdout.write(line)
        sys.stdout.flush()


sys.stdout.write("ready\n")
sys.stdout.flush()
threads = [threading.Thread(target=writer, daemon=True) for _ in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
