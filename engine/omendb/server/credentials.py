"""Passwords verified recently, so HTTP Basic does not pay bcrypt on every request.

An entry is keyed by HMAC-SHA256 under a random per-process key of the user name and password, so the
cache never holds a password or anything an attacker could test guesses against offline (the key never
leaves the process). An entry lives at most ``[security] credential_cache_seconds``, only for the
generation of the htpasswd file it was verified under (a reload forgets everything), and only for the
hash it was verified against. Only successes are stored; the size is bounded (oldest dropped first).
"""

from __future__ import annotations

import collections
import hashlib
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class _Verified:
    user: str
    hash_: str
    generation: int
    expires_at: float


class CredentialCache:
    MAX_ENTRIES = 10_000

    def __init__(self, lifetime_seconds: float, clock: Callable[[], float] = time.monotonic,
                 secret: bytes | None = None) -> None:
        self.lifetime = lifetime_seconds
        self._clock = clock
        # HMAC-SHA256 (RFC 2104) with the key's inner and outer states computed once: hmac.digest() would
        # redo them on every request, and this runs on every Basic-authenticated request.
        key = (secret or secrets.token_bytes(32)).ljust(64, b"\0")  # a secret only from tests
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in key))
        self._entries: collections.OrderedDict[bytes, _Verified] = collections.OrderedDict()
        self._generation = 0
        self._lock = threading.Lock()
        self.pending: dict[bytes, Any] = {}  # key -> the verification running now (see auth._verify)

    def key(self, user: str, password: str) -> bytes:
        # The user's length first, so ("a:b", "c") and ("a", "b:c") differ (a JSON login name may hold ':').
        inner = self._inner.copy()
        inner.update(f"{len(user)}:{user}:{password}".encode("utf-8", "surrogatepass"))
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()

    def lookup(self, user: str, password: str, hash_: str | None, generation: int) -> bool:
        """True if this password was verified for the user's current hash within the lifetime."""
        if hash_ is None or not self._entries:
            return False
        if generation != self._generation:
            self.drop_if_reloaded(generation)
            return False
        entry = self._entries.get(self.key(user, password))
        return (entry is not None and entry.generation == generation and entry.user == user
                and entry.hash_ == hash_ and self._clock() < entry.expires_at)

    def remember(self, user: str, password: str, hash_: str, generation: int) -> None:
        if self.lifetime <= 0:
            return
        key = self.key(user, password)
        with self._lock:
            if generation != self._generation:
                # The file was reloaded: nothing verified before may be trusted any more.
                if generation < self._generation:
                    return
                self._entries.clear()
                self._generation = generation
            self._entries[key] = _Verified(user, hash_, generation, self._clock() + self.lifetime)
            self._entries.move_to_end(key)
            while len(self._entries) > self.MAX_ENTRIES:
                self._entries.popitem(last=False)

    def drop_if_reloaded(self, generation: int) -> None:
        """Forget every entry once the htpasswd file has been reloaded."""
        if generation != self._generation:
            with self._lock:
                if generation > self._generation:
                    self._entries.clear()
                    self._generation = generation

    def __len__(self) -> int:
        return len(self._entries)
