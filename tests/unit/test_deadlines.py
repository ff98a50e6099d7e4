"""Deadlines.within: asyncio.timeout's behaviour on the shared ticking timer."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import pytest
import uvloop

from fwatchdog.runtime.deadlines import Deadlines

T = TypeVar("T")


def run(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    return uvloop.run(main())


def test_returns_what_the_awaitable_gives_in_time() -> None:
    async def main() -> str:
        deadlines = Deadlines()
        await asyncio.sleep(0)
        return await deadlines.within(asyncio.sleep(0.01, result="done"), 1.0)

    assert run(main) == "done"


def test_raises_timeout_error_once_the_deadline_passed_and_forgets_the_task() -> None:
    async def main() -> float:
        deadlines = Deadlines(tick=0.01)
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await deadlines.within(asyncio.sleep(5), 0.05)
        elapsed = time.monotonic() - started
        task = asyncio.current_task()
        assert task is not None and task.cancelling() == 0
        assert not deadlines.expired(task)
        await asyncio.sleep(0.05)  # and the task is not cancelled again later
        return elapsed

    assert 0.045 <= run(main) < 1.0  # the loop's timers are rounded to the millisecond


def test_a_cancel_from_elsewhere_stays_a_cancel() -> None:
    async def main() -> None:
        deadlines = Deadlines(tick=0.01)
        inner = asyncio.ensure_future(deadlines.within(asyncio.sleep(5), 10.0))
        await asyncio.sleep(0.02)
        inner.cancel()
        with pytest.raises(asyncio.CancelledError):
            await inner

    run(main)


def test_no_deadline_when_seconds_is_zero() -> None:
    async def main() -> str:
        deadlines = Deadlines(tick=0.01)
        return await deadlines.within(asyncio.sleep(0.05, result="slow but fine"), 0)

    assert run(main) == "slow but fine"


class _Rearming:
    """A cancellable whose cancel() adds a fresh deadline, as a promoted exchange does."""

    def __init__(self, deadlines: Deadlines, generations: int) -> None:
        self.deadlines = deadlines
        self.generations = generations

    def cancel(self) -> None:
        if self.generations:
            self.deadlines.add(_Rearming(self.deadlines, self.generations - 1), 0.0)


class _CountingDeadlines(Deadlines):
    """Deadlines that count their checks."""

    checks = 0

    def _check(self) -> None:
        self.checks += 1
        super()._check()


def test_a_cancel_that_adds_a_deadline_does_not_start_a_second_timer_chain() -> None:
    async def main() -> int:
        deadlines = _CountingDeadlines(tick=0.01)
        for _ in range(5):
            deadlines.add(_Rearming(deadlines, 3), 0.0)
        deadlines.add(asyncio.ensure_future(asyncio.sleep(5)), 10.0)  # keeps the timer running
        await asyncio.sleep(0.5)
        return deadlines.checks

    # One chain ticks about 50 times in 0.5 s; each extra chain would add as many.
    checks = run(main)
    assert checks < 80, checks
