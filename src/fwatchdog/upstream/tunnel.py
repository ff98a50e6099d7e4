"""Two connections joined byte for byte (after a 101 Switching Protocols), both ways.

Each end is the asyncio protocol of one transport and writes what it receives into the other;
when one side's socket buffer fills, the other side stops reading until it drains. A half
close is passed on; the tunnel ends when both sides have closed their sending halves or
either connection is lost, and then both are closed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import cast

WRITE_HIGH_WATER = 64 * 1024


class TunnelEnd(asyncio.Protocol):
    """The protocol of one transport of the tunnel."""

    __slots__ = ("_counter", "_tunnel", "eof", "peer", "transport")

    def __init__(self, tunnel: Tunnel, counter: Callable[[int], None] | None = None) -> None:
        self._tunnel = tunnel
        self._counter = counter
        self.transport: asyncio.Transport | None = None
        self.peer: TunnelEnd | None = None
        self.eof = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCPTransport is a Transport in all but its base classes.
        self.transport = cast(asyncio.Transport, transport)
        self.transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)

    def data_received(self, data: bytes) -> None:
        peer = self.peer
        if peer is None or peer.transport is None:
            return
        peer.transport.write(data)
        if self._counter is not None:
            self._counter(len(data))

    def eof_received(self) -> bool:
        self.eof = True
        peer = self.peer
        if peer is not None and peer.transport is not None and peer.transport.can_write_eof():
            peer.transport.write_eof()
        if peer is None or peer.eof:
            self._tunnel.close()
        return True  # keep the other direction open

    def connection_lost(self, exc: Exception | None) -> None:
        self._tunnel.close()

    def pause_writing(self) -> None:
        # This side cannot take more: stop reading from the side that feeds it.
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()


class Tunnel:
    """A client connection and an upstream connection joined; `done` resolves at the end."""

    def __init__(self, to_client: Callable[[int], None] | None = None) -> None:
        """`to_client(n)` is told of every n bytes that go from the upstream to the client."""
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.client_end = TunnelEnd(self)
        self.upstream_end = TunnelEnd(self, to_client)
        self.client_end.peer = self.upstream_end
        self.upstream_end.peer = self.client_end

    def close(self) -> None:
        """End the tunnel: close both connections (what is buffered is still sent)."""
        for end in (self.client_end, self.upstream_end):
            if end.transport is not None and not end.transport.is_closing():
                end.transport.close()
        if not self.done.done():
            self.done.set_result(None)

    def abort(self) -> None:
        """End the tunnel at once, dropping what is buffered."""
        for end in (self.client_end, self.upstream_end):
            if end.transport is not None:
                end.transport.abort()
        if not self.done.done():
            self.done.set_result(None)
