"""Failed-login throttling, per user name and per client address.

Each scope counts wrong passwords in a fixed window that starts at the first failure: once a user name
(``[security] login_failures_per_user``) or an address (``login_failures_per_address``) reaches its limit
within ``login_failure_window_seconds``, further password checks for it are refused with 429 and
Retry-After until the window ends, without running bcrypt. Refused attempts are not counted again (the
window does not slide forward), and a success resets nothing: with HTTP Basic every request of a real
client is a success, which would otherwise wipe an attacker's count. Counters live in memory, at most
``MAX_KEYS`` per scope (least recently failed dropped first), so a spray of made-up names cannot grow it.
Used from the event loop only (auth.check_password), so it needs no lock.
"""

from __future__ import annotations

import collections
import math
import time
from collections.abc import Callable

USER = "user"
ADDRESS = "address"


class _Counters:
    def __init__(self, limit: int, window: float, clock: Callable[[], float], max_keys: int) -> None:
        self.limit = limit
        self.window = window
        self._clock = clock
        self._max_keys = max_keys
        self._counts: collections.OrderedDict[str, list[float]] = collections.OrderedDict()  # [count, start]

    def retry_after(self, key: str) -> int:
        """Seconds until ``key`` may try again (0: it may now)."""
        entry = self._counts.get(key)
        if entry is None or self.limit <= 0 or entry[0] < self.limit:
            return 0
        left = entry[1] + self.window - self._clock()
        return math.ceil(left) if left > 0 else 0

    def purge(self) -> None:
        """Drop counters whose window has ended, oldest failure first (so the common case stays empty)."""
        now = self._clock()
        while self._counts:
            key, (_count, start) = next(iter(self._counts.items()))
            if now < start + self.window:
                return
            del self._counts[key]

    def fail(self, key: str) -> bool:
        """Count one failure; True if it made ``key`` reach the limit (throttling starts now)."""
        if self.limit <= 0:
            return False
        now = self._clock()
        entry = self._counts.get(key)
        if entry is None or now >= entry[1] + self.window:
            entry = self._counts[key] = [0, now]
        entry[0] += 1
        self._counts.move_to_end(key)
        while len(self._counts) > self._max_keys:
            self._counts.popitem(last=False)
        return entry[0] == self.limit

    def __len__(self) -> int:
        return len(self._counts)


class LoginThrottle:
    MAX_KEYS = 10_000

    def __init__(self, per_user: int, per_address: int, window_seconds: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.window = window_seconds
        self._scopes = {USER: _Counters(per_user, window_seconds, clock, self.MAX_KEYS),
                        ADDRESS: _Counters(per_address, window_seconds, clock, self.MAX_KEYS)}
        self._counters = tuple(self._scopes.values())

    def active(self) -> bool:
        """Whether any failure is remembered; if not, ``check`` would pass anyone (tells callers on the hot
        path they need not work out its arguments)."""
        return bool(self._counters[0]._counts or self._counters[1]._counts)

    def check(self, user: str, address: str) -> tuple[str, int] | None:
        """The throttled scope and its Retry-After in seconds, or None if this attempt may go ahead."""
        if not self._counters[0]._counts and not self._counters[1]._counts:
            return None  # no recent failures at all: the common case, on every Basic request
        for counters in self._counters:
            counters.purge()
        for scope, key in ((ADDRESS, address), (USER, user)):
            seconds = self._scopes[scope].retry_after(key)
            if seconds:
                return scope, seconds
        return None

    def fail(self, user: str, address: str) -> list[str]:
        """Count a wrong password; the scopes this failure started throttling (for the audit line)."""
        return [scope for scope, key in ((USER, user), (ADDRESS, address)) if self._scopes[scope].fail(key)]

    def sizes(self) -> dict[str, int]:
        return {scope: len(counters) for scope, counters in self._scopes.items()}
