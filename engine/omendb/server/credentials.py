"""Passwords verified recently, so HTTP Basic does not pay bcrypt on every request.

An entry is keyed by HMAC-SHA256, under a random per-process key, of the user name and password in the
form HTTP Basic sends them (base64 of ``user:password``), so the cache never holds a password or anything
an attacker could test guesses against offline (the key never leaves the process), and a request's
Authorization header is looked up without decoding it (this is on every Basic request's path). An entry
lives at most ``[security] credential_cache_seconds``, only for the generation of the htpasswd file it was
verified under (a reload forgets everything), and only for the hash it was verified against. Only
successes are stored; the size is bounded (oldest dropped first).
"""

from __future__ import annotations

import base64
import collections
import hashlib
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from omendb.server.htpasswd import Users


def basic_credentials(user: str, password: str) -> str:
    """What HTTP Basic sends for a user and password: base64 of ``user:password``."""
    return base64.b64encode(f"{user}:{password}".encode("utf-8", "surrogatepass")).decode("ascii")


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

    def key(self, credentials: str | bytes) -> bytes:
        """The HMAC of Basic credentials, given as text or as the header's bytes (latin-1)."""
        inner = self._inner.copy()
        # base64 is ASCII; header values are latin-1
        inner.update(credentials if isinstance(credentials, bytes) else credentials.encode("latin-1", "replace"))
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()

    def user_of(self, credentials: str | bytes, users: Users) -> str | None:
        """The user these Basic credentials were verified for, if that was within the lifetime, in this
        version of the htpasswd file, and against the user's current hash; else None."""
        found = self.verified(credentials, users)
        return None if found is None else found[0]

    def verified(self, credentials: str | bytes, users: Users) -> tuple[str, float] | None:
        """``user_of``, with the clock reading at which the verification expires."""
        if not self._entries:
            return None
        if users.generation != self._generation:
            self.drop_if_reloaded(users.generation)
            return None
        entry = self._entries.get(self.key(credentials))
        if (entry is None or entry.generation != users.generation or self._clock() >= entry.expires_at
                or users.entries.get(entry.user) != entry.hash_):
            return None
        return entry.user, entry.expires_at

    def now(self) -> float:
        return self._clock()

    def remember(self, credentials: str, user: str, hash_: str, generation: int) -> None:
        if self.lifetime <= 0:
            return
        key = self.key(credentials)
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
