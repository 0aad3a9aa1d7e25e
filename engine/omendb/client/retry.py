"""When to try a call again, and how long to wait first: pure decisions, no I/O.

A call is retried only when trying again cannot do harm:

- the request provably did not run: no connection could be made, or the server refused it up front with
  429 or 503 and a Retry-After header (overloaded, not ready yet, too many connections) — any call;
- or the call is idempotent (reads; upserts and deletes, which leave the same state however often they
  are applied) and failed in a way that may pass: a broken connection, a timeout, 502/503/504.

Admin calls (checkpoint, retrain, rebuild) are not idempotent in cost: they are retried only when they
provably did not run. Waits grow exponentially with full jitter; a server's Retry-After is honoured.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass

from omendb.client.errors import ClientError, ConnectionFailed, RateLimited, Timeout, Unavailable


class Kind(enum.Enum):
    READ = "read"  # no effect on the server
    WRITE = "write"  # idempotent upsert/delete
    ADMIN = "admin"  # runs expensive work again if repeated


# 503 codes where the request did run (or will fail the same way again): retried only if idempotent or
# never. request_timeout: the handler ran and a write may have been applied. query_timeout: the same scan
# would run out of time again.
_RAN = frozenset({"request_timeout"})
_HOPELESS = frozenset({"query_timeout"})


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5  # tries in all, the first included; 1 disables retries
    backoff: float = 0.1  # seconds before the first retry, doubled each time (full jitter)
    max_backoff: float = 5.0
    max_retry_after: float = 30.0  # a longer Retry-After is not waited for: the error is raised
    deadline: float = 60.0  # seconds from the first try after which no retry starts

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"RetryPolicy.attempts must be at least 1 (1 = no retries), got {self.attempts}")
        if self.backoff < 0 or self.max_backoff < 0 or self.deadline < 0:
            raise ValueError("RetryPolicy.backoff, max_backoff and deadline must not be negative")


def may_retry(kind: Kind, error: ClientError) -> bool:
    """Whether this failure of a call of this kind may be retried at all."""
    if error.code in _HOPELESS:
        return False
    refused_up_front = (isinstance(error, (Unavailable, RateLimited)) and error.retry_after is not None
                        and error.status in (429, 503) and error.code not in _RAN)
    if refused_up_front or (isinstance(error, ConnectionFailed) and error.code == "connect_failed"):
        return True
    if kind is Kind.ADMIN:
        return False
    return isinstance(error, (ConnectionFailed, Timeout, RateLimited)) or (
        isinstance(error, Unavailable) and error.status in (502, 503, 504))


def retry_delay(policy: RetryPolicy, kind: Kind, error: ClientError, retry_index: int, elapsed: float,
                rng: random.Random | None = None) -> float | None:
    """Seconds to wait before retry number ``retry_index`` (0 = the first retry), or None to give up."""
    if retry_index + 1 >= policy.attempts or not may_retry(kind, error):
        return None
    rng = rng or random.Random()
    if error.retry_after is not None:
        if error.retry_after > policy.max_retry_after:
            return None
        # A little jitter on top, so clients told the same Retry-After do not all return at once.
        delay = error.retry_after + rng.uniform(0, policy.backoff)
    else:
        delay = rng.uniform(0, min(policy.max_backoff, policy.backoff * 2 ** retry_index))
    if elapsed + delay > policy.deadline:
        return None
    return delay
