"""deadlines.py: [http] request_timeout_ms for every request with one timer (the guard's hot path)."""

from __future__ import annotations

import asyncio

import pytest

from omendb.server.deadlines import Deadlines


async def _bounded(deadlines: Deadlines, work: asyncio.Future[None] | float) -> str:
    """What the request guard does around a request: 'done', 'timeout', or CancelledError."""
    task = asyncio.current_task()
    assert task is not None
    cancelling = task.cancelling()
    deadlines.watch(task)
    try:
        try:
            if isinstance(work, float):
                await asyncio.sleep(work)
            else:
                await work
        except asyncio.CancelledError:
            if deadlines.expired(task, cancelling):
                raise TimeoutError from None
            raise
        finally:
            deadlines.forget(task)
    except TimeoutError:
        return "timeout"
    return "done"


def test_slow_requests_time_out_and_quick_ones_finish() -> None:
    async def main() -> list[str]:
        deadlines = Deadlines(0.2)
        started = asyncio.get_running_loop().time()
        results = await asyncio.gather(*(_bounded(deadlines, d) for d in (0.0, 0.05, 1.0, 0.1, 2.0)))
        elapsed = asyncio.get_running_loop().time() - started
        assert 0.19 <= elapsed < 0.9, elapsed  # the slow ones were cut at the deadline, not at their end
        assert len(deadlines) == 0
        return results

    assert asyncio.run(main()) == ["done", "done", "timeout", "done", "timeout"]


def test_one_timer_serves_a_stream_of_requests() -> None:
    async def main() -> None:
        deadlines = Deadlines(0.05)
        loop = asyncio.get_running_loop()
        fired = 0
        fire = deadlines._fire

        def counting_fire() -> None:
            nonlocal fired
            fired += 1
            fire()

        deadlines._fire = counting_fire  # type: ignore[method-assign]
        end = loop.time() + 0.3
        count = 0
        while loop.time() < end:
            assert await _bounded(deadlines, 0.001) == "done"
            count += 1
        await asyncio.sleep(0.1)  # let the last timer run out
        assert count > 20
        # Once per timeout (plus the end), not once per request.
        assert fired <= 0.3 / 0.05 + 3, (fired, count)

    asyncio.run(main())


def test_a_cancel_from_elsewhere_still_cancels() -> None:
    async def main() -> None:
        deadlines = Deadlines(5)
        task = asyncio.ensure_future(_bounded(deadlines, 10.0))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert len(deadlines) == 0

    asyncio.run(main())


def test_a_cancel_during_the_deadline_s_own_cancel_is_not_lost() -> None:
    """Both the deadline and someone else cancel the request: it must end cancelled, not answer 503."""
    async def main() -> None:
        deadlines = Deadlines(0.0)
        release: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        task = asyncio.ensure_future(_bounded(deadlines, release))
        await asyncio.sleep(0)  # the task is waiting on release now
        deadlines._fire()  # its deadline has passed: cancelled ...
        task.cancel()  # ... and by its owner too, before it runs again
        with pytest.raises(asyncio.CancelledError):
            await task
        assert len(deadlines) == 0

    asyncio.run(main())
