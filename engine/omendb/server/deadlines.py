"""``[http] request_timeout_ms`` for every request, with one timer for all of them.

``asyncio.timeout()`` per request schedules and cancels a timer handle and builds a context manager each
time: about a tenth of a single-key GET's cost in the server. Every request gets the same bound, so
deadlines come due in the order requests began: they are kept in a dict in that order, and one timer is
set for the oldest. A request that finishes leaves the dict (O(1)); when the timer fires it cancels the
requests whose deadline has passed and is set again for the next oldest, so under steady traffic it fires
about once per timeout, not once per request.

The cancellation is handled as ``asyncio.timeout()`` does it: the cancelled request sees CancelledError at
the await it was waiting on, ``expired()`` tells it the cancel was its deadline's (and takes it back with
``Task.uncancel``) so that the caller raises TimeoutError, while a cancel from anyone else still propagates.
Used from the event loop only.
"""

from __future__ import annotations

import asyncio

# How early the timer may fire (uvloop rounds delays to milliseconds) and still count a deadline as passed;
# without it an early firing would set the timer again for less than a millisecond, which may also be early.
_SLACK = 0.001


class Deadlines:
    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._due: dict[asyncio.Task[object], float] = {}  # insertion order is deadline order
        self._expired: set[asyncio.Task[object]] = set()
        self._timer: asyncio.TimerHandle | None = None

    def watch(self, task: asyncio.Task[object]) -> None:
        """Start ``task``'s deadline: it is cancelled once ``timeout`` seconds have passed."""
        loop = asyncio.get_running_loop()
        self._due[task] = loop.time() + self.timeout
        if self._timer is None:
            self._timer = loop.call_at(self._due[task], self._fire)

    def forget(self, task: asyncio.Task[object]) -> None:
        """The task has left the bounded part (answered, failed or timed out)."""
        self._due.pop(task, None)
        if task in self._expired:
            # Cancelled by its deadline but it never saw the CancelledError (something swallowed it):
            # take the cancel back all the same, as asyncio.timeout() does.
            self._expired.discard(task)
            task.uncancel()

    def expired(self, task: asyncio.Task[object], cancelling: int) -> bool:
        """Whether the CancelledError ``task`` caught came from its deadline and from no one else;
        ``cancelling``: ``task.cancelling()`` when it was watched."""
        if task not in self._expired:
            return False
        self._expired.discard(task)
        return task.uncancel() <= cancelling

    def _fire(self) -> None:
        self._timer = None
        loop = asyncio.get_running_loop()
        now = loop.time() + _SLACK
        due = self._due
        while due:
            task, deadline = next(iter(due.items()))
            if deadline > now:
                self._timer = loop.call_at(deadline, self._fire)
                return
            del due[task]
            if not task.done():
                self._expired.add(task)
                task.cancel()

    def __len__(self) -> int:
        return len(self._due)
