"""One client connection: bytes in through httptools, each request to the handler once, the
answers out through one `Writer`.

Every request goes the same way: once its head is parsed, and its body has arrived or the
read it came in is used up, the handler's `serve` is called with a `Request` and a
`Response`. It answers at once (probes, cached files), starts an answer that callbacks finish
(a proxied request), or returns an awaitable that the connection runs in a task (a forked
function, a streamed body). Requests on a connection are answered one at a time, in order
(pipelining). Where the connection stands is `ConnectionState` (http/state.py).

An answer sent before its request's body was read (a 429, a function that did not read
stdin) must still reach clients that send their whole body before reading: the rest of a
small body is skipped and the connection kept; otherwise the connection is half-closed and
the rest read and dropped for a while (a lingering close, as nginx does), never reset.
Reading stops while the current body has more than a small window buffered or too many
requests wait, and producers wait while the socket's buffer is full, so neither a slow
client nor a slow function makes the watchdog hold more than a fixed amount.
"""

from __future__ import annotations

import asyncio
import os
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import httptools

from fwatchdog.http import state as st
from fwatchdog.http.headers import HOP_BY_HOP, split_target
from fwatchdog.http.request import (
    ClientDisconnectedError,
    ReadTimeoutError,
    Request,
    RequestBody,
)
from fwatchdog.http.response import Response
from fwatchdog.http.state import ConnectionState
from fwatchdog.http.writer import Writer, WritesThrough, batch_of

OnError = Callable[[str], None]

WRITE_HIGH_WATER = 64 * 1024
MAX_QUEUED_REQUESTS = 16
RAW_HEAD_SLACK = 256 * 1024
DEADLINE_TICK = 0.1
UPGRADE_BUFFER_LIMIT = 64 * 1024
# A drain does not close as idle a connection whose client may have sent a request already:
# a new one before its first request, or one whose last answer said keep-alive, for this long.
SEND_GRACE = 1.0
# The rest of a body its answer did not need is skipped, keeping the connection, up to this.
SKIP_BODY_MAX = 64 * 1024
# A lingering close reads and drops the client's bytes for at most this long and this much.
LINGER_SECONDS = 5.0
LINGER_BYTES = 256 * 1024 * 1024
HEAD_END = b"\r\n\r\n"
# Fields the head's parse notes as it goes (framing, Host, User-Agent, hop-by-hop and Expect),
# found first by the lengths of their names.
_HOP_BY_HOP_BYTES = frozenset(name.encode() for name in HOP_BY_HOP)
_NOTED_NAME_SIZES = frozenset(
    len(name) for name in (*_HOP_BY_HOP_BYTES, b"expect", b"host", b"user-agent", b"content-length")
)


class Handler(Protocol):
    """What answers requests (the router; the metrics endpoint)."""

    # Whether it may pass a request on as the bytes it came as (Request.raw): only then are
    # they kept and checked, which costs every request a little.
    passes_raw_requests: bool

    def serve(self, request: Request, response: Response) -> Awaitable[None] | None:
        """Answer `request`: None once it is answered, or once callbacks will finish the
        answer (`response.when_done` tells when); otherwise an awaitable that answers it,
        which the connection runs in a task of its own."""


class HeadersTooLargeError(Exception):
    """Raised from a parser callback to stop parsing a head over the size limit."""


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-connection limits; 0 for a timeout means none."""

    read_timeout: float = 30.0
    idle_timeout: float = 60.0
    max_header_bytes: int = 1024 * 1024


class ServerState:
    """What all connections of one listener share: live connections, for a graceful stop,
    whether it is closing (every answer then says `Connection: close`), and one ticking timer
    that enforces their read, idle and linger deadlines: a deadline is a float, checked every
    DEADLINE_TICK seconds, instead of a loop timer armed and cancelled per request.
    """

    def __init__(self) -> None:
        self.connections: set[HttpConnection] = set()
        self.closing = False
        self._ticker: asyncio.TimerHandle | None = None

    def add(self, conn: HttpConnection) -> None:
        self.connections.add(conn)
        if self._ticker is None:
            self._ticker = asyncio.get_running_loop().call_later(DEADLINE_TICK, self._tick)

    def _tick(self) -> None:
        self._ticker = None
        if not self.connections:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        for conn in list(self.connections):
            conn.check_deadlines(now)
        self._ticker = loop.call_later(DEADLINE_TICK, self._tick)

    def close_idle(self) -> None:
        for conn in list(self.connections):
            conn.close_if_idle()

    def settling(self) -> bool:
        """Whether an idle connection may still bring a request (see SEND_GRACE)."""
        return any(conn.may_send for conn in self.connections)


def is_whole_message(raw: bytes, content_length: int | None) -> bool:
    """Whether `raw`, one read, is exactly one request with a Content-Length body or none."""
    head_end = raw.find(HEAD_END)
    return head_end >= 0 and head_end + 4 + (content_length or 0) == len(raw)


class HttpConnection(WritesThrough, asyncio.Protocol):
    """An HTTP/1.1 server connection on the httptools (llhttp) parser."""

    def __init__(
        self, handler: Handler, limits: Limits, state: ServerState, on_error: OnError
    ) -> None:
        self._serve = handler.serve
        self._keep_raw = handler.passes_raw_requests
        self._limits = limits
        self._server = state
        self._on_error = on_error
        self._loop = asyncio.get_running_loop()
        self._state = ConnectionState()
        self._writer: Writer | None = None
        self._parser = httptools.HttpRequestParser(self)
        # Requests parsed while another is answered, in order.
        self._queue: deque[Request] = deque()
        # The request being answered, its response, and the task answering it (if any).
        self._request: Request | None = None
        self._response: Response | None = None
        self._runner: asyncio.Task[None] | None = None
        # A request to hand over once its message completes in this read (or the read ends).
        self._waiting: Request | None = None
        self._current_body: RequestBody | None = None
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        # The framing fields of the head being parsed, noted as on_header sees them.
        self._content_length: int | None = None
        self._chunked = False
        self._expect_continue = False
        self._has_host = False
        self._hop_by_hop = False
        self._user_agent: str | None = None
        # This read's bytes while no message has begun in it yet, then the first message's.
        self._read: bytes | None = None
        self._message_read: bytes | None = None
        self._header_bytes = 0
        self._raw_head_bytes = 0
        self._reading_paused = False
        self._splicing = False
        self._writable = True
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._drain_callbacks: list[Callable[[], None]] = []
        self._read_deadline = 0.0  # 0: none
        self._idle_deadline = 0.0
        self._linger_deadline = 0.0
        self._lingered = 0
        self._upgrade_buffer = bytearray()
        self._client_eof = False
        # Since when it waits for a request: made, or its last answer ended keeping it open.
        self._idle_since = self._loop.time()
        self.remote_addr: tuple[str, int] = ("", 0)

    # --- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        tcp: asyncio.Transport = transport  # type: ignore[assignment]  # uvloop's TCPTransport
        tcp.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        self._writer = Writer(tcp, batch_of(self._loop))
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            self.remote_addr = (str(peer[0]), int(peer[1]))
        self._server.add(self)
        self._arm_idle_timer()

    def data_received(self, data: bytes) -> None:
        reading = self._state.reading
        if reading == st.LINGER:
            self._drop_lingering(len(data))
            return
        if reading == st.UPGRADE:
            self._hold_for_upgrade(data)
            return
        if reading != st.BODY:
            # A guard for one endless header line, which httptools buffers without a limit;
            # the exact count of complete headers is kept in on_header.
            self._raw_head_bytes += len(data)
            if self._raw_head_bytes > self._limits.max_header_bytes + RAW_HEAD_SLACK:
                self._reject(431, "request headers larger than 1 MiB")
                return
            if reading == st.BETWEEN and self._keep_raw:
                self._read = data  # a message that begins now begins with this read
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            self._hold_for_upgrade(data[upgrade.args[0] :])
        except httptools.HttpParserError as error:
            self._waiting = None
            if self._header_bytes > self._limits.max_header_bytes:
                self._reject(431, "request headers larger than 1 MiB")
            else:
                self._reject(400, f"malformed request: {error}")
        else:
            if (
                self._state.reading == st.HEAD
                and b"\n" in data
                and self._parser.get_http_version() == "0.0"
            ):
                self._reject(400, "malformed request: HTTP/0.9 request line")
        finally:
            self._read = self._message_read = None
        waiting = self._waiting
        if waiting is not None:
            self._waiting = None  # its body goes on in later reads
            self._begin(waiting)

    def eof_received(self) -> bool:
        """The client closed its side: like Go's server, take it as gone and stop its work.

        A closed and a half-closed socket look the same from here, and a function left
        running for a client that has left would hold its slot until exec_timeout.
        """
        self._client_eof = True
        if self._state.reading == st.LINGER:
            self._close()
            return False
        self._client_gone(ClientDisconnectedError("client closed the connection mid-body"))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._state.close()
        if self._writer is not None:
            self._writer.closed = True
        self._server.connections.discard(self)
        self._cancel_timers()
        self._client_gone(ClientDisconnectedError("client disconnected"))
        self._wake_writers()

    def _client_gone(self, error: ClientDisconnectedError) -> None:
        body = self._current_body
        if body is not None and not body.complete:
            body.fail(error)
        if self._runner is not None and not self._runner.done():
            self._runner.cancel()
        response = self._response
        if response is not None and self._runner is None:
            response.abandon()  # an answer that callbacks were finishing

    def pause_writing(self) -> None:
        self._writable = False

    def resume_writing(self) -> None:
        self._writable = True
        self._wake_writers()

    # --- httptools callbacks ---------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._state.begin_request()
        self._message_read, self._read = self._read, None
        self._url = b""
        self._header_bytes = 0
        self._headers = []
        self._content_length = self._user_agent = None
        self._chunked = self._expect_continue = self._has_host = self._hop_by_hop = False
        self._idle_deadline = 0.0
        if self._limits.read_timeout > 0:
            self._read_deadline = self._loop.time() + self._limits.read_timeout

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._header_bytes += len(url)
        if self._header_bytes > self._limits.max_header_bytes:
            raise HeadersTooLargeError

    def on_header(self, name: bytes, value: bytes) -> None:
        size = len(name)
        self._header_bytes += size + len(value) + 4
        if self._header_bytes > self._limits.max_header_bytes:
            raise HeadersTooLargeError
        if size in _NOTED_NAME_SIZES:  # lengths first: lowering every name costs more
            lowered = name.lower()
            if lowered == b"content-length":
                self._content_length = int(value)
            elif lowered == b"host":
                self._has_host = True
            elif lowered == b"user-agent" and self._user_agent is None:
                self._user_agent = value.decode("latin-1")
            elif lowered == b"transfer-encoding":
                self._chunked = b"chunked" in value.lower()
                self._hop_by_hop = True
            elif lowered == b"expect":
                self._expect_continue = value.lower() == b"100-continue"
                self._hop_by_hop = True
            elif lowered in _HOP_BY_HOP_BYTES:
                self._hop_by_hop = True
        elif (name[0] | 0x20) == 0x70 and name[:6].lower() == b"proxy-":  # a 'p'
            self._hop_by_hop = True
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._state.head_complete()
        self._header_bytes = 0
        self._raw_head_bytes = 0
        parser = self._parser
        headers = self._headers
        chunked = self._chunked
        content_length = self._content_length
        expect_continue = self._expect_continue
        http_version = parser.get_http_version()
        upgrade = parser.should_upgrade()
        raw = self._message_read
        if raw is not None and (chunked or not is_whole_message(raw, content_length)):
            raw = None
        body = RequestBody(
            self, expect_continue and http_version == "1.1", None if chunked else content_length
        )
        target = self._url.decode("latin-1")
        path, query = split_target(target)
        request = Request(
            method=parser.get_method().decode("ascii"),
            target=target,
            path=path,
            query=query,
            headers=None,
            raw_headers=headers,
            http_version=http_version,
            keep_alive=parser.should_keep_alive(),
            body=body,
            upgrade=upgrade,
            chunked=chunked,
            content_length=content_length,
            remote_addr=self.remote_addr,
            raw=raw,
            user_agent=self._user_agent,
            has_host=self._has_host,
            hop_by_hop=self._hop_by_hop,
        )
        self._current_body = body
        if upgrade:
            self._state.upgrade_requested()
        if self._state.answering == st.IDLE and not self._queue and not upgrade:
            self._waiting = request
        else:
            self._enqueue(request)

    def on_body(self, data: bytes) -> None:
        body = self._current_body
        if body is not None:
            body.feed(data)
            if body.over_high_water and not self._reading_paused:
                self.update_reading()

    def on_message_complete(self) -> None:
        if self._state.reading == st.BODY:
            self._state.request_complete()
        self._read_deadline = 0.0
        if self._current_body is not None:
            self._current_body.finish()
        waiting = self._waiting
        if waiting is not None:
            self._waiting = None
            self._begin(waiting)

    # --- answering -------------------------------------------------------------------------
    def _enqueue(self, request: Request) -> None:
        self._queue.append(request)
        if self._state.answering == st.IDLE:
            self._begin(self._queue.popleft())
        elif len(self._queue) > MAX_QUEUED_REQUESTS:
            self.update_reading()

    def _begin(self, request: Request) -> None:
        """Hand `request` to the handler: the one way every request is answered."""
        if self._state.closed:
            return  # pipelined behind an answer that closed the connection
        self._state.start_answer()
        response = Response(self, request.method, request.http_version, request.keep_alive)
        self._request = request
        self._response = response
        try:
            work = self._serve(request, response)
        except Exception as error:  # a bug must not take the server down
            work = None
            self._internal_error(request, response, error)
        if work is not None:
            self._runner = self._loop.create_task(self._run(request, response, work))
        elif response.finished:
            self._answered(request, response)
        else:
            response.when_done(lambda: self._answered(request, response))

    async def _run(self, request: Request, response: Response, work: Awaitable[None]) -> None:
        try:
            await work
        except (ClientDisconnectedError, asyncio.CancelledError):
            response.keep_alive = False
        except Exception as error:  # a bug must not take the server down
            self._internal_error(request, response, error)
        self._runner = None
        if not response.finished:
            response.end()
        self._answered(request, response)

    def _internal_error(self, request: Request, response: Response, error: Exception) -> None:
        self._on_error(f"error serving {request.method} {request.target}: {error!r}")
        if response.started:
            response.abort()
        else:
            response.keep_alive = False
            response.send_text(500, "internal error in the watchdog")

    def _answered(self, request: Request, response: Response) -> None:
        """The answer is complete: go on with the next request, or end the connection."""
        self._request = self._response = None
        self._state.answer_done()
        if self._state.closed:
            return
        # What the client was told: a keep-alive answer begun before a drain did not say
        # close, so the client may send another on it (answered with close).
        keep_open = response.keep_alive
        body = request.body
        if self._state.reading == st.UPGRADE:
            keep_open = False  # the protocol was not switched: what follows is not HTTP
        elif not body.complete:
            unread = None if body.content_length is None else body.content_length - body.received
            body.discard()  # the rest is not wanted: the parser drops it as it arrives
            if unread is None or unread > SKIP_BODY_MAX or body.failed:
                keep_open = False
            if not keep_open:
                self._linger()
                return
        if not keep_open:
            self._close()
            return
        self._idle_since = self._loop.time()
        if self._queue:
            if self._reading_paused:
                self.update_reading()
            self._begin(self._queue.popleft())
        elif self._state.idle:
            self._arm_idle_timer()

    # --- ReadControl, for RequestBody ------------------------------------------------------
    def update_reading(self) -> None:
        """Pause the socket while the current body's window or the request queue is full."""
        writer = self._writer
        if writer is None or self._state.closed or self._splicing:
            return
        body = self._current_body
        should_pause = len(self._queue) > MAX_QUEUED_REQUESTS or (
            body is not None and body.over_high_water
        )
        if should_pause and not self._reading_paused:
            self._reading_paused = True
            writer.transport.pause_reading()
        elif not should_pause and self._reading_paused:
            self._reading_paused = False
            writer.transport.resume_reading()

    def detach_for_splice(self, body: RequestBody) -> int | None:
        """Stop reading the socket and lend a duplicate of it for the rest of this body."""
        writer = self._writer
        if writer is None or self._state.closed or body is not self._current_body:
            return None
        sock = writer.transport.get_extra_info("socket")
        if sock is None:
            return None
        if not self._reading_paused:
            writer.transport.pause_reading()
            self._reading_paused = True
        self._splicing = True
        return os.dup(sock.fileno())

    def reattach_after_splice(self, body: RequestBody, complete: bool) -> None:
        """The body went past the parser: start a fresh parser for the next request."""
        self._splicing = False
        if self._state.closed:
            return
        if complete:
            self._parser = httptools.HttpRequestParser(self)
            self.on_message_complete()
            self.update_reading()

    def send_continue(self) -> None:
        if self._writer is not None:
            self._writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    # --- upgrades --------------------------------------------------------------------------
    def _hold_for_upgrade(self, data: bytes) -> None:
        """Keep bytes sent after an upgrade request for the protocol that takes over."""
        self._upgrade_buffer += data
        if len(self._upgrade_buffer) > UPGRADE_BUFFER_LIMIT and not self._reading_paused:
            self._reading_paused = True
            if self._writer is not None:
                self._writer.transport.pause_reading()

    def switch_protocols(self, head: bytes, protocol: asyncio.Protocol) -> asyncio.Transport:
        """Send the 101 `head` and hand the connection over to `protocol` for good."""
        writer = self._writer
        if self._state.reading != st.UPGRADE or writer is None:
            raise RuntimeError("switch_protocols: not an upgrade request on an open connection")
        self._state.switch_protocols()
        self._cancel_timers()
        self._server.connections.discard(self)  # no longer an HTTP connection to drain
        writer.write(head)
        transport = writer.transport
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        held, self._upgrade_buffer = bytes(self._upgrade_buffer), bytearray()
        if held:
            protocol.data_received(held)
        if self._client_eof:
            protocol.eof_received()
        elif self._reading_paused:
            self._reading_paused = False
            transport.resume_reading()
        return transport

    # --- WriteControl, for Response --------------------------------------------------------
    @property
    def writable(self) -> bool:
        return self._writable and not self._state.closed

    @property
    def closing(self) -> bool:
        """The server is draining: every answer says `Connection: close`."""
        return self._server.closing

    async def drain(self) -> None:
        if self._state.closed:
            raise ClientDisconnectedError("client disconnected")
        if self._writable:
            return
        waiter = self._loop.create_future()
        self._drain_waiters.append(waiter)
        await waiter
        if self._state.closed:
            raise ClientDisconnectedError("client disconnected")

    async def lend_socket(self) -> int:
        """A duplicate of the socket for direct writes (sendfile, splice), once everything
        written through the transport has left, so that bytes keep their order."""
        while True:
            writer = self._writer
            if writer is None or writer.closed:
                raise ClientDisconnectedError("client disconnected")
            fd = writer.duplicate_socket()
            if fd is not None:
                return fd
            # Rare: only when the socket was full at this moment; libuv empties it meanwhile.
            await asyncio.sleep(0.001)

    def on_drain(self, callback: Callable[[], None]) -> None:
        if self._writable or self._state.closed:
            callback()
        else:
            self._drain_callbacks.append(callback)

    def _wake_writers(self) -> None:
        waiters, self._drain_waiters = self._drain_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)
        callbacks, self._drain_callbacks = self._drain_callbacks, []
        for callback in callbacks:
            callback()

    def abort(self) -> None:
        """Drop the connection at once (a response that can no longer be completed)."""
        if self._writer is not None:
            self._writer.abort()

    # --- errors, timers, closing -----------------------------------------------------------
    def _reject(self, status: int, reason: str) -> None:
        """Answer a request we could not parse, then close: the byte stream is lost."""
        if self._state.closed or self._state.reading == st.LINGER:
            return
        if self._state.answering == st.IDLE and not self._queue:
            response = Response(self, "GET", "1.1", keep_alive=False)
            response.send_text(status, reason)
        self._linger()

    def check_deadlines(self, now: float) -> None:
        """Called by the server's ticker: act on a passed read, idle or linger deadline."""
        if self._read_deadline and now >= self._read_deadline:
            self._read_deadline = 0.0
            self._on_read_timeout()
        if self._idle_deadline and now >= self._idle_deadline:
            self._idle_deadline = 0.0
            self._close()
        if self._linger_deadline and now >= self._linger_deadline:
            self._linger_deadline = 0.0
            self._close()

    def _on_read_timeout(self) -> None:
        if self._state.reading == st.HEAD:
            self._reject(408, "read_timeout exceeded while reading the request headers")
            return
        body = self._current_body
        if body is not None and not body.complete:
            body.fail(ReadTimeoutError("read_timeout exceeded while reading the request body"))
            if self._state.answering == st.IDLE and not self._queue:
                self._close()  # the rest of a body whose answer has gone, and it stalled

    def _arm_idle_timer(self) -> None:
        if self._limits.idle_timeout > 0 and not self._state.closed:
            self._idle_deadline = self._loop.time() + self._limits.idle_timeout

    def _cancel_timers(self) -> None:
        self._idle_deadline = 0.0
        self._read_deadline = 0.0
        self._linger_deadline = 0.0

    @property
    def may_send(self) -> bool:
        """Idle, but its client may have sent a request already (see SEND_GRACE)."""
        return self._state.idle and self._loop.time() - self._idle_since < SEND_GRACE

    def close_if_idle(self) -> None:
        """Close between requests (a drain), sparing one whose client may be sending."""
        if self._state.idle and not self.may_send:
            self._close()

    def _linger(self) -> None:
        """Half-close, then read and drop what the client still sends, for a while: a client
        that sends its whole body before reading gets the answer instead of a reset."""
        writer = self._writer
        if writer is None or self._state.closed:
            return
        if self._client_eof:
            self._close()
            return
        self._state.linger()
        self._cancel_timers()
        self._linger_deadline = self._loop.time() + LINGER_SECONDS
        writer.half_close()
        if self._reading_paused or self._splicing:
            self._reading_paused = False
            writer.transport.resume_reading()

    def _drop_lingering(self, size: int) -> None:
        self._lingered += size
        if self._lingered > LINGER_BYTES:
            self._close()

    def _close(self) -> None:
        if self._writer is not None and not self._state.closed:
            self._state.close()
            self._cancel_timers()
            self._writer.close()
