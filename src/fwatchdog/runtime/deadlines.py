"""Coarse deadlines for many short tasks: one ticking timer instead of one timer per task.

`asyncio.timeout()` arms and cancels a loop timer for every request; on uvloop that costs
about as much as the rest of a proxied request's Python work. Here a task registers its
deadline in a dict, and a single timer, running only while some deadline is pending, cancels
the tasks whose deadline has passed, a tick (`TICK` seconds) late at most. The task sees
`asyncio.CancelledError` where it waits, as with `asyncio.timeout()`, and `expired()` tells a
deadline from any other cancellation. Anything with a `cancel()` method can have a deadline:
work driven by callbacks rather than by a task is stopped the same way.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Protocol, TypeVar

T = TypeVar("T")

TICK = 0.01


class Cancellable(Protocol):
    """A task, or anything else that can be told to stop."""

    def cancel(self) -> object: ...


class Deadlines:
    """Deadlines of running tasks (or other cancellables), checked every `tick` seconds."""

    __slots__ = ("_expired", "_loop", "_pending", "_tick", "_timer")

    def __init__(self, tick: float = TICK) -> None:
        self._loop = asyncio.get_running_loop()
        self._tick = tick
        self._pending: dict[Cancellable, float] = {}
        self._expired: set[Cancellable] = set()
        self._timer: asyncio.TimerHandle | None = None

    def add(self, task: Cancellable, seconds: float) -> None:
        """Cancel `task` once `seconds` have passed, unless `discard`ed first."""
        self._pending[task] = self._loop.time() + seconds
        if self._timer is None:
            self._timer = self._loop.call_later(self._tick, self._check)

    def discard(self, task: Cancellable) -> None:
        """Forget the task's deadline (call it, without awaiting anything, when done)."""
        self._pending.pop(task, None)
        self._expired.discard(task)

    def expired(self, task: Cancellable) -> bool:
        """Whether the task was cancelled because its deadline passed."""
        return task in self._expired

    async def within(self, awaitable: Awaitable[T], seconds: float) -> T:
        """`await awaitable` in the current task, or TimeoutError once `seconds` have passed
        (none when `seconds` <= 0): `asyncio.timeout` without a timer per call."""
        if seconds <= 0:
            return await awaitable
        task = asyncio.current_task()
        assert task is not None, "Deadlines.within outside a task"
        self.add(task, seconds)
        try:
            return await awaitable
        except asyncio.CancelledError:
            if self.expired(task) and task.uncancel() == 0:
                raise TimeoutError from None
            raise  # not (only) ours: the client left, or another deadline
        finally:
            self.discard(task)

    def _check(self) -> None:
        self._timer = None
        now = self._loop.time()
        pending = self._pending
        late = [task for task, deadline in pending.items() if deadline <= now]
        for task in late:
            del pending[task]
            self._expired.add(task)
            task.cancel()  # may add a deadline, and with it arm the timer
        if pending and self._timer is None:
            self._timer = self._loop.call_later(self._tick, self._check)
