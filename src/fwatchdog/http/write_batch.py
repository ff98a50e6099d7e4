"""Writes held until the end of the event loop's turn, then made one after another.

Each write to a loopback socket whose reader sleeps in epoll wakes it, and on a VM that wake-up
(an inter-processor interrupt) was 11% of http mode's CPU: two per proxied request, one for the
upstream and one for the client. Written back to back at the end of the turn, the requests and
answers of all connections that were ready together wake each peer once: the later writes find
it already awake. Measured on the known-request lane: +10-17% req/s, 5 µs less system time per
request.

A connection that holds a write makes every later write of its own, and its closing, wait
behind it (`Deferring.flush_deferred` first), so bytes keep their order.
"""

from __future__ import annotations

import asyncio
from typing import Protocol


class Deferring(Protocol):
    """A connection that can hold writes for a `WriteBatch`."""

    def flush_deferred(self) -> None:
        """Write what it holds, now."""


class WriteBatch:
    """The connections holding writes in this turn of the loop."""

    __slots__ = ("_holding", "_loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._holding: list[Deferring] = []

    def add(self, connection: Deferring) -> None:
        """`connection` holds a write: flush it with the others once this turn's I/O is done."""
        holding = self._holding
        holding.append(connection)
        if len(holding) == 1:
            # call_soon from an I/O callback runs in the next turn, before it polls again.
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        holding, self._holding = self._holding, []
        for connection in holding:
            connection.flush_deferred()
