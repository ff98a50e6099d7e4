"""HTTP/1.1 client connections to the function's own server, kept alive in a pool.

This is the client half of the proxy, on httptools' response parser: a request head goes out
as one buffer, body bytes follow as they come, and the response comes back as events (head,
body chunks, end, or an error) to a `ResponseSink` without being gathered anywhere. Framing
towards the upstream (Content-Length or chunked request bodies) is written here and only here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol, cast

import httptools

from fwatchdog.http.writer import Writer, WritesThrough, batch_of

# Idle connections kept for reuse; Go's transport keeps 100 per host.
MAX_IDLE = 100
# An idle connection older than this is closed: servers drop idle keep-alive connections
# after a few seconds (Node: 5 s, gunicorn: 2 s), and reusing one as it closes costs a retry.
IDLE_TIMEOUT = 1.0
# Above this many bytes queued towards the upstream, body producers wait.
WRITE_HIGH_WATER = 256 * 1024

RawHeaders = list[tuple[bytes, bytes]]


class UpstreamError(Exception):
    """The upstream did not give a whole response; the message says what happened."""


class UpstreamClosedError(UpstreamError):
    """The upstream closed or reset the connection before the response was complete.

    `stale` is true when that happened on a connection taken from the pool before any byte
    of the response: the upstream had most likely closed it while it was idle, so the
    request never reached it and may be sent again on a new connection.
    """

    def __init__(self, message: str, stale: bool) -> None:
        super().__init__(message)
        self.stale = stale


class UpstreamProtocolError(UpstreamError):
    """The upstream's bytes are not an HTTP/1.1 response."""


class ResponseSink(Protocol):
    """Where a connection delivers the response to the request it carries."""

    def on_head(self, status: int, headers: RawHeaders) -> None: ...

    def on_body(self, data: bytes) -> None: ...

    def on_end(self) -> None: ...

    def on_error(self, error: UpstreamError) -> None: ...

    def on_upgrade(self) -> None:
        """A 101 arrived: the connection waits for `hand_over` to a tunnel."""


# Offered the first bytes of a response: whether the upstream keeps the connection after
# taking them for the whole response (then `on_end` follows at once), or None to have them
# parsed as usual.
TakeWhole = Callable[[bytes], bool | None]


class UpstreamConnection(WritesThrough, asyncio.Protocol):
    """One keep-alive connection to the upstream, carrying one request at a time."""

    __slots__ = (
        "_drain_waiter",
        "_fresh_parser",
        "_headers",
        "_interim",
        "_leftover",
        "_loop",
        "_lost",
        "_parser",
        "_pool",
        "_sink",
        "_skip_body",
        "_take_whole",
        "_until_eof",
        "_upgrading",
        "_writable",
        "_writer",
        "body_complete",
        "closed",
        "idle_since",
        "received",
        "reused",
        "transport",
    )

    def __init__(self, pool: UpstreamPool) -> None:
        self._pool = pool
        self._loop = asyncio.get_running_loop()
        self._parser = httptools.HttpResponseParser(self)
        self._fresh_parser = False
        self._sink: ResponseSink | None = None
        self._take_whole: TakeWhole | None = None
        self._headers: RawHeaders = []
        self._interim = False
        self._skip_body = False
        self._until_eof = False
        self._upgrading = False
        self._writable = True
        self._drain_waiter: asyncio.Future[None] | None = None
        self._leftover = b""
        self._lost = False
        self.transport: asyncio.Transport | None = None
        self._writer: Writer | None = None
        # Per request: any byte of the response arrived; the request body was all written.
        self.received = False
        self.body_complete = True
        self.reused = False
        self.closed = False
        self.idle_since = 0.0

    # --- the request side, for the proxy ---------------------------------------------------
    def begin(
        self, sink: ResponseSink, head_request: bool, take_whole: TakeWhole | None = None
    ) -> None:
        """Carry a new request: its response goes to `sink`; HEAD responses have no body.
        `take_whole`, if given, is offered the response's first read before the parser."""
        if self._fresh_parser:
            self._parser = httptools.HttpResponseParser(self)
            self._fresh_parser = False
        self._sink = sink
        self._take_whole = take_whole
        self._skip_body = head_request
        self.received = False
        self.body_complete = True

    def redirect(self, sink: ResponseSink) -> None:
        """From now on the response in flight goes to `sink`."""
        self._sink = sink

    @property
    def busy_with(self) -> ResponseSink | None:
        """The sink of the request in flight, None when idle or done."""
        return self._sink

    @property
    def writable(self) -> bool:
        return self._writable

    async def drain(self) -> None:
        """Wait until the upstream takes more body bytes (or the connection ends)."""
        if self._writable or self.closed:
            return
        self._drain_waiter = self._loop.create_future()
        try:
            await self._drain_waiter
        finally:
            self._drain_waiter = None

    def pause_reading(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()

    def abort(self) -> None:
        """Drop the connection at once (a request that cannot be finished on it)."""
        self._sink = None
        self._take_whole = None
        self.closed = True
        if self._writer is not None:
            self._writer.abort()

    def close(self) -> None:
        self.closed = True
        if self._writer is not None:
            self._writer.close()

    def hand_over(self, protocol: asyncio.Protocol) -> None:
        """After a 101: the connection now belongs to `protocol` (a tunnel), with the bytes
        that followed the 101 and, if it has already closed, the news of that."""
        transport = self.transport
        assert transport is not None
        leftover, self._leftover = self._leftover, b""
        self._sink = None
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        if leftover:
            protocol.data_received(leftover)
        if self._lost:
            protocol.connection_lost(None)
        else:
            transport.resume_reading()

    # --- asyncio.Protocol --------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCPTransport is a Transport in all but its base classes.
        self.transport = cast(asyncio.Transport, transport)
        self.transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        self._writer = Writer(self.transport, batch_of(self._loop))

    def data_received(self, data: bytes) -> None:
        if self._sink is None:
            # Bytes while no request is outstanding: the connection is out of step.
            self.abort()
            return
        self.received = True
        take_whole = self._take_whole
        if take_whole is not None:
            self._take_whole = None
            reusable = take_whole(data)
            if reusable is not None:
                self._complete(reusable)
                return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            self._upgraded(data[upgrade.args[0] :])
        except httptools.HttpParserError as error:
            self._fail(UpstreamProtocolError(f"malformed response from the upstream: {error}"))

    def eof_received(self) -> bool:
        self.closed = True
        if self._sink is not None and self._until_eof:
            self._complete(reusable=False)  # a body delimited by the end of the connection
        elif self._sink is not None:
            self._fail(self._closed_error("closed the connection"))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._lost = True
        self._pool.forget(self)
        if self._sink is not None:
            if self._until_eof:
                self._complete(reusable=False)
            else:
                reason = "reset the connection" if exc is not None else "closed the connection"
                self._fail(self._closed_error(reason))
        self._wake_writer()

    def pause_writing(self) -> None:
        self._writable = False

    def resume_writing(self) -> None:
        self._writable = True
        self._wake_writer()

    def _wake_writer(self) -> None:
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # --- httptools callbacks -----------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._headers = []
        self._until_eof = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        sink = self._sink
        if sink is None:
            return
        status = self._parser.get_status_code()
        if status < 200 and status != 101:
            self._interim = True  # 100 Continue, 103 Early Hints: the real answer follows
            return
        if status == 101:
            self._upgrading = True
        elif not self._parser.should_keep_alive() and not self._skip_body:
            self._until_eof = delimited_by_eof(status, self._headers)
        sink.on_head(status, self._headers)
        if self._skip_body and not self._upgrading and self._sink is sink:
            # The answer to HEAD carries no body, but the parser would wait for the one its
            # Content-Length announces: the exchange ends here, and the next gets a new parser.
            self._fresh_parser = True
            self._complete(reusable=self._parser.should_keep_alive())

    def on_body(self, body: bytes) -> None:
        sink = self._sink
        if sink is not None:
            sink.on_body(body)

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        if self._upgrading or self._sink is None:
            return
        self._complete(reusable=self._parser.should_keep_alive())

    # --- ends of an exchange -----------------------------------------------------------------
    def _complete(self, reusable: bool) -> None:
        sink = self._sink
        self._sink = None
        self._take_whole = None
        self._until_eof = False
        if reusable and self.body_complete and not self.closed:
            self._pool.release(self)
        else:
            self.close()
        if sink is not None:
            sink.on_end()

    def _fail(self, error: UpstreamError) -> None:
        sink = self._sink
        self.abort()
        if sink is not None:
            sink.on_error(error)

    def _closed_error(self, what: str) -> UpstreamClosedError:
        stale = self.reused and not self.received
        where = "before answering" if not self.received else "before the response was complete"
        return UpstreamClosedError(f"the upstream {what} {where}", stale)

    def _upgraded(self, leftover: bytes) -> None:
        """A 101 arrived: hold the bytes after it until `hand_over` gives them a new owner."""
        sink = self._sink
        self._sink = None
        self._upgrading = False
        self._leftover = leftover
        if self.transport is not None:
            self.transport.pause_reading()
        if sink is not None:
            sink.on_upgrade()


def delimited_by_eof(status: int, headers: RawHeaders) -> bool:
    """Whether a response's body runs to the end of the connection (no length, not chunked);
    afterburn calls such a response unframed, since its pipe never ends between answers."""
    if status in (204, 304):
        return False
    for name, _ in headers:
        lowered = name.lower()
        if lowered in (b"content-length", b"transfer-encoding"):
            return False
    return True


class UpstreamPool:
    """Connections to one upstream address; idle ones are reused newest first."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._loop = asyncio.get_running_loop()
        self._idle: list[UpstreamConnection] = []
        self._sweeper: asyncio.TimerHandle | None = None
        self._closed = False

    def take(self) -> UpstreamConnection | None:
        """An idle connection ready for a request, or None."""
        idle = self._idle
        while idle:
            conn = idle.pop()
            if not conn.closed:
                conn.reused = True
                return conn
        return None

    async def connect(self) -> UpstreamConnection:
        """A new connection; raises OSError when the upstream cannot be reached."""
        _, conn = await self._loop.create_connection(
            lambda: UpstreamConnection(self), self.host, self.port
        )
        return conn

    def release(self, conn: UpstreamConnection) -> None:
        if self._closed or len(self._idle) >= MAX_IDLE:
            conn.close()
            return
        conn.idle_since = self._loop.time()
        self._idle.append(conn)
        if self._sweeper is None:
            self._sweeper = self._loop.call_later(IDLE_TIMEOUT, self._sweep)

    def forget(self, conn: UpstreamConnection) -> None:
        """A connection closed: it is no longer idle here."""
        if conn in self._idle:
            self._idle.remove(conn)

    def _sweep(self) -> None:
        self._sweeper = None
        cutoff = self._loop.time() - IDLE_TIMEOUT
        # The list is oldest first where it matters: connections are appended when released.
        while self._idle and self._idle[0].idle_since <= cutoff:
            self._idle.pop(0).close()
        if self._idle:
            delay = self._idle[0].idle_since + IDLE_TIMEOUT - self._loop.time()
            self._sweeper = self._loop.call_later(max(delay, 0.05), self._sweep)

    def close(self) -> None:
        """Close every idle connection and keep none from now on."""
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


async def accepts_connections(host: str, port: int, timeout: float) -> bool:
    """Whether something accepts a TCP connection on host:port now."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout):
            transport, _ = await loop.create_connection(asyncio.Protocol, host, port)
    except (OSError, TimeoutError):
        return False
    transport.close()
    return True


def encode_chunk(data: bytes) -> list[bytes]:
    """One chunk of a chunked request body."""
    return [b"%x\r\n" % len(data), data, b"\r\n"]


LAST_CHUNK = b"0\r\n\r\n"
