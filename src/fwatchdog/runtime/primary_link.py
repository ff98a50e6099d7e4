"""A worker's end of its control socket to the primary (see workers.py): when the upstream is
ready, when the child failed, and its counters for the primary's scrapes."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Any

PRIMARY_GONE = "the primary fwatchdog process exited"


class PrimaryLink:
    """What the primary says, as futures: `ready` (the upstream accepts connections) and
    `failed` (the child died, or the primary itself: its reason). The primary turns healthy
    only once every worker says it is `listening`."""

    def __init__(self, control: socket.socket, snapshot: Callable[[], dict[str, Any]]) -> None:
        loop = asyncio.get_running_loop()
        self._control = control
        self._snapshot = snapshot
        self.ready: asyncio.Future[None] = loop.create_future()
        self.failed: asyncio.Future[str] = loop.create_future()
        self._task: asyncio.Task[None] | None = None

    async def listen(self, listening: bool) -> None:
        """Say whether this worker could open its listener (`listening`, or `failed` and
        exit), then follow what the primary says."""
        reader, writer = await asyncio.open_unix_connection(sock=self._control)
        writer.write(b"listening\n" if listening else b"failed\n")
        self._task = asyncio.get_running_loop().create_task(self._follow(reader, writer))

    async def _follow(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                command, _, argument = line.rstrip(b"\n").decode().partition(" ")
                if command == "ready" and not self.ready.done():
                    self.ready.set_result(None)
                elif command == "fail":
                    self._fail(argument)
                elif command == "metrics":
                    import json  # only http mode's scrapes pay for it

                    snapshot = json.dumps(self._snapshot(), separators=(",", ":"))
                    writer.write(f"metrics {argument} {snapshot}\n".encode())
        except OSError:
            pass
        finally:
            writer.close()
        self._fail(PRIMARY_GONE)

    def _fail(self, reason: str) -> None:
        if not self.failed.done():
            self.failed.set_result(reason)
