"""A writer's lock on an object store prefix: one lock object, created only if absent, with an owner and
an expiry that its holder keeps renewing.

S3 has no flock. What it does have (AWS since 2024, SeaweedFS, MinIO) are conditional writes: a PUT with
``If-None-Match: *`` succeeds for exactly one of several writers racing to create a key, and a PUT with
``If-Match: <etag>`` replaces exactly the version named. So:

- acquire: create ``<prefix>/.lock`` if absent, holding ``{owner, host, pid, process_space, command, ttl,
  renewed_at}``;
- hold: a thread renews ``renewed_at`` every ttl/4 with If-Match on the version it wrote last; if that
  fails someone took the lock over (we stalled past the expiry) and ``lost`` is set, which the holder
  checks before committing anything (publishing a manifest, deleting a backup);
- a crashed holder: once its ``renewed_at`` + ``ttl`` is past, a newcomer replaces the lock with If-Match on the
  stale version it read, so of two newcomers only one wins. A holder that ran in the newcomer's own process
  space (same boot, same PID namespace: e.g. a killed run on the same machine or in the same container) and
  whose pid is gone is known dead at once;
- release: delete the lock object if it is still ours.

A lock has expired when its ``renewed_at`` plus its ``ttl`` is past by the newcomer's clock (so machines'
clocks must agree to well within the ttl, 120 s by default, OMENDB_S3_LOCK_TTL: NTP does), or when a
newcomer waiting for it (``--lock-timeout``) has seen the same version for a whole ttl by its own
monotonic clock, which needs no clock agreement at all. The store's Last-Modified is not used: its
resolution is a second, and SeaweedFS was seen stamping it seconds late.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from omendb.objectstore import AlreadyExists, NotFound, ObjectStore, ObjectStoreError, Precondition

LOCK_KEY = ".lock"
DEFAULT_TTL = 120.0


class LockBusy(ObjectStoreError):
    """Another live writer holds the lock."""


class LockLost(ObjectStoreError):
    """Our lock expired and was taken over: nothing may be committed any more."""


class ObjectLock:
    def __init__(self, store: ObjectStore, key: str = LOCK_KEY, ttl: float | None = None) -> None:
        self.store, self.key = store, key
        self.ttl = ttl if ttl is not None else float(os.environ.get("OMENDB_S3_LOCK_TTL") or DEFAULT_TTL)
        self.owner = uuid.uuid4().hex
        self.lost = False
        self._etag: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _body(self) -> bytes:
        return json.dumps({
            "owner": self.owner, "host": socket.gethostname(), "pid": os.getpid(), "process_space": _space(),
            "command": " ".join(sys.argv[1:])[:300], "ttl": self.ttl, "renewed_at": time.time(),
        }).encode()

    def holder(self) -> tuple[dict[str, object], str | None, float] | None:
        """(the lock's content, its etag, seconds until it expires by its holder's clock) or None when there
        is no lock."""
        try:
            info = self.store.head(self.key)
            raw = self.store.get(self.key)
        except NotFound:
            return None
        try:
            body = json.loads(raw)
            left = float(body["ttl"]) - (time.time() - float(body["renewed_at"]))
        except (ValueError, KeyError, TypeError, AttributeError):
            body, left = {"unreadable": raw[:100].decode(errors="replace")}, float("inf")
        return body, info.e_tag, left

    def acquire(self, timeout: float = 0.0) -> None:
        deadline = time.monotonic() + timeout
        watched: tuple[str | None, float] = (None, 0.0)  # a version of the lock, and since when we see it
        while True:
            sent = time.monotonic()
            try:
                self._etag = self.store.put_if_absent(self.key, self._body())
                break
            except AlreadyExists:
                pass
            found = self.holder()
            if found is None:
                continue  # released meanwhile: create it again
            body, etag, left = found
            if etag != watched[0]:
                watched = (etag, time.monotonic())
            unchanged_for = time.monotonic() - watched[1]
            held_for = body.get("ttl")
            ttl = float(held_for) if isinstance(held_for, (int, float)) else self.ttl
            if etag and (left < 0 or unchanged_for > ttl or _dead_here(body)):  # died or stalled: take over
                try:
                    self._etag = self.store.put(self.key, self._body(), mode={"e_tag": etag})
                    break
                except (Precondition, NotFound):
                    continue  # another newcomer was quicker: look again
            if time.monotonic() >= deadline:
                who = f"{body.get('host')} pid {body.get('pid')}: {body.get('command')}" \
                    if "owner" in body else str(body)
                raise LockBusy(f"{self.store.url} is in use by another backup_tool run ({who}; lock object "
                               f"{self.store.url}/{self.key}, expires in {max(left, 0):.0f}s unless renewed); "
                               "wait for it to finish, or pass --lock-timeout SECONDS to wait. A crashed "
                               "run's lock expires by itself")
            time.sleep(0.5)
        if time.monotonic() - sent > self.ttl / 4:
            # A slow write (a store allocating space for its first object took 8 s in the tests) leaves
            # a renewed_at older than it looks: renew now, before the lock is relied upon.
            try:
                self._etag = self.store.put(self.key, self._body(), mode={"e_tag": self._etag})
            except (Precondition, NotFound):
                self.lost = True
        self.check()
        self._thread = threading.Thread(target=self._renew, name="omendb-objectlock", daemon=True)
        self._thread.start()

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl / 4):
            try:
                self._etag = self.store.put(self.key, self._body(), mode={"e_tag": self._etag})
            except (Precondition, NotFound):
                self.lost = True
                return
            except ObjectStoreError:
                continue  # the store is briefly unreachable: try again before the expiry

    def check(self) -> None:
        if self.lost:
            raise LockLost(f"the lock on {self.store.url} expired and another run took it over (this run "
                           f"stalled for more than {self.ttl:.0f}s); nothing more is written — rerun")

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.lost:
            return
        found = self.holder()
        if found is not None and found[0].get("owner") == self.owner:
            self.store.delete([self.key])


def _space() -> str | None:
    """This boot of this machine and this PID namespace: where a pid names one process (None: unknown)."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        return f"{boot}/{os.readlink('/proc/self/ns/pid')}"
    except OSError:
        return None


def _dead_here(body: dict[str, object]) -> bool:
    """The holder ran in our process space and its pid is gone: it died (a killed run), no need to wait
    for its ttl. Anywhere else (another pod, machine or boot) only the ttl can tell."""
    space, pid = body.get("process_space"), body.get("pid")
    if space is None or space != _space() or not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, someone else's
    return False


@contextmanager
def locked(store: ObjectStore, timeout: float = 0.0, key: str = LOCK_KEY) -> Iterator[ObjectLock]:
    lock = ObjectLock(store, key)
    lock.acquire(timeout)
    try:
        yield lock
    finally:
        lock.release()
