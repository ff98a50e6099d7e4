"""The one owner of a transport's writes, on the client side and the upstream side alike.

Writes of complete messages may be held to the end of the event loop's turn (`write_soon`)
and then made back to back with every other connection's, so that a peer asleep in epoll is
woken once per turn rather than once per write. Order is the writer's business, not its
callers': any write made now, a close, an abort or lending the socket first sends what is held.
"""

from __future__ import annotations

import asyncio
import os


class WriteBatch:
    """The writers holding bytes in this turn of the loop; one per loop."""

    __slots__ = ("_holding", "_loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._holding: list[Writer] = []

    def add(self, writer: Writer) -> None:
        holding = self._holding
        holding.append(writer)
        if len(holding) == 1:
            # call_soon from an I/O callback runs in the next turn, before it polls again.
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        holding, self._holding = self._holding, []
        for writer in holding:
            writer.flush()


_batches: dict[asyncio.AbstractEventLoop, WriteBatch] = {}


def batch_of(loop: asyncio.AbstractEventLoop) -> WriteBatch:
    """The loop's WriteBatch (made at first use)."""
    batch = _batches.get(loop)
    if batch is None:
        batch = _batches[loop] = WriteBatch(loop)
    return batch


class Writer:
    """Writes to one transport, in order; nothing else writes to it."""

    __slots__ = ("_batch", "_held", "closed", "transport")

    def __init__(self, transport: asyncio.Transport, batch: WriteBatch) -> None:
        self.transport = transport
        self._batch = batch
        self._held: list[bytes] | None = None
        self.closed = False

    def write(self, data: bytes) -> None:
        if self._held is not None:
            self.flush()
        if not self.closed:
            self.transport.write(data)

    def writelines(self, parts: list[bytes]) -> None:
        if self._held is not None:
            self.flush()
        if not self.closed:
            self.transport.writelines(parts)

    def write_soon(self, data: bytes) -> None:
        """Write `data` at the end of the loop's turn, with the other writers' bytes."""
        if self.closed:
            return
        if self._held is None:
            self._held = [data]
            self._batch.add(self)
        else:
            self._held.append(data)

    def flush(self) -> None:
        held, self._held = self._held, None
        if held and not self.closed:
            self.transport.writelines(held)

    @property
    def buffered(self) -> int:
        """Bytes not yet handed to the kernel."""
        held = sum(len(part) for part in self._held) if self._held else 0
        return held + self.transport.get_write_buffer_size()

    def half_close(self) -> None:
        """Send what is held, then FIN: the peer reads everything, then the end; later
        writes (an answer still being made) are dropped."""
        self.flush()
        if not self.closed and self.transport.can_write_eof():
            self.transport.write_eof()
            self.closed = True

    def close(self) -> None:
        """Send what is held, then close once the transport has written everything."""
        self.flush()
        if not self.transport.is_closing():
            self.closed = True
            self.transport.close()

    def abort(self) -> None:
        """Drop the connection and whatever is unsent."""
        self._held = None
        self.closed = True
        self.transport.abort()

    def duplicate_socket(self) -> int | None:
        """A duplicate of the socket for direct writes (sendfile), once nothing is queued
        before them; None while bytes still wait (they must go first)."""
        self.flush()
        if self.closed or self.transport.get_write_buffer_size():
            return None
        sock = self.transport.get_extra_info("socket")
        return None if sock is None else os.dup(sock.fileno())


class WritesThrough:
    """What a connection offers its producers (a Response, a proxied request): writes that go
    through its `Writer`, once the connection has one."""

    __slots__ = ()
    _writer: Writer | None

    def write(self, data: bytes) -> None:
        if self._writer is not None:
            self._writer.write(data)

    def writelines(self, parts: list[bytes]) -> None:
        if self._writer is not None:
            self._writer.writelines(parts)

    def write_soon(self, data: bytes) -> None:
        """A whole message, written at the end of the loop's turn with the other writes."""
        if self._writer is not None:
            self._writer.write_soon(data)
