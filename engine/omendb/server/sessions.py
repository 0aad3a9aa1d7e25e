"""Session tokens from ``POST /auth/login``: random, kept only as their SHA-256, expiring after
``[security] session_timeout_seconds`` counted from login (not sliding, so a leaked token dies), ended
earlier by ``POST /auth/logout`` or when the user's entry in the htpasswd file changes or goes."""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Session:
    user: str
    credential: str  # the user's password hash at login: a changed password ends the session
    expires_at: float  # time.monotonic()


def _digest(token: str) -> bytes:
    # Looking tokens up by their hash means the dictionary lookup never compares secrets byte by byte.
    return hashlib.sha256(token.encode()).digest()


class SessionStore:
    def __init__(self, timeout_seconds: float, clock=time.monotonic) -> None:
        self.timeout = timeout_seconds
        self._clock = clock
        self._sessions: dict[bytes, Session] = {}
        self._lock = threading.Lock()

    def create(self, user: str, credential: str) -> str:
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._purge()
            self._sessions[_digest(token)] = Session(user, credential, self._clock() + self.timeout)
        return token

    def lookup(self, token: str) -> tuple[Session | None, str]:
        """The session for a token, or None and why ("unknown" or "expired")."""
        key = _digest(token)
        with self._lock:
            session = self._sessions.get(key)
            if session is None:
                return None, "unknown"
            if self._clock() >= session.expires_at:
                del self._sessions[key]
                return None, "expired"
        return session, ""

    def revoke(self, token: str) -> bool:
        with self._lock:
            return self._sessions.pop(_digest(token), None) is not None

    def _purge(self) -> None:
        now = self._clock()
        for key in [k for k, s in self._sessions.items() if now >= s.expires_at]:
            del self._sessions[key]

    def __len__(self) -> int:
        return len(self._sessions)
