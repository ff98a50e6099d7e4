"""One client connection: httptools callbacks in, `Request`s to the handler, responses out.

Requests on a connection are answered one at a time, in order (pipelining). A request whose
whole message arrived in one read, on a connection with nothing else to answer, is first
offered to the handler's `answer_now`, which may answer it from the parser callback (probes,
cached files) or start an answer that callbacks finish (http mode): no task, no await; the
connection holds later requests until that answer is done. Reading stops
whenever the current body has more than a small window buffered or too many requests wait,
and writing producers wait while the socket's buffer is above its high-water mark, so neither
a slow client nor a slow function makes the watchdog hold more than a fixed amount.
"""

from __future__ import annotations

import asyncio
import os
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import httptools

from fwatchdog.http.passthrough import is_whole_request
from fwatchdog.http.request import (
    ClientDisconnectedError,
    ReadTimeoutError,
    Request,
    RequestBody,
    split_target,
)
from fwatchdog.http.response import Response
from fwatchdog.http.write_batch import WriteBatch

Handler = Callable[[Request, Response], Awaitable[None]]
# A handler may also have `answer_now(request, response) -> bool`, for a request whose body has
# fully arrived: True when it has answered, or has started an answer that callbacks will
# finish (`Response.when_done` tells when); False, leaving `response` untouched, to have the
# handler itself answer it.
AnswerNow = Callable[[Request, Response], bool]
# And `answer_whole(conn, method, target, headers, raw, content_length) -> bool`, offered
# first, before any Request or Response is made, an HTTP/1.1 keep-alive request whose whole
# message is `raw`, the one read it came in (no body, or one framed by Content-Length), on a
# connection with nothing else to answer: True when it has written the whole answer with
# `conn.write`, or has begun one and called `conn.hold(pending)`, then `conn.release()` once
# it is complete. The cheapest way through, for answers made of bytes ready to go.
AnswerWhole = Callable[
    ["HttpConnection", str, str, list[tuple[str, str]], bytes, "int | None"], bool
]
# And `answer_known(conn, data) -> bool`, offered before the parser sees it a read that
# arrives between requests on an idle connection: True when `data` is, byte for byte, a whole
# request the handler answered on that lane before and it has answered it again (with
# `conn.write`, complete). The parser is not fed: it stays between requests, as it would be.
AnswerKnown = Callable[["HttpConnection", bytes], bool]
OnError = Callable[[str], None]

WRITE_HIGH_WATER = 64 * 1024
MAX_QUEUED_REQUESTS = 16
RAW_HEAD_SLACK = 256 * 1024
DEADLINE_TICK = 0.1
UPGRADE_BUFFER_LIMIT = 64 * 1024


class Pending(Protocol):
    """An answer that callbacks will finish, held by the connection until then."""

    def abandon(self) -> None:
        """The client went away: stop producing the answer, and finish it."""


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
    and one ticking timer that enforces their read and idle deadlines.

    Arming and cancelling a loop timer twice per request (read, then idle) cost more than
    the rest of a small request's connection work; a deadline is a float, checked every
    DEADLINE_TICK seconds, so a timeout fires at most that much late.
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


class HttpConnection(asyncio.Protocol):
    """An HTTP/1.1 server connection on the httptools (llhttp) parser."""

    def __init__(
        self, handler: Handler, limits: Limits, state: ServerState, on_error: OnError
    ) -> None:
        self._handler = handler
        self._answer_now_of_handler: AnswerNow | None = getattr(handler, "answer_now", None)
        self._answer_whole: AnswerWhole | None = getattr(handler, "answer_whole", None)
        self._answer_known: AnswerKnown | None = getattr(handler, "answer_known", None)
        self._limits = limits
        self._state = state
        self._on_error = on_error
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        # Bytes held for the end of the loop's turn (`write_soon`); None: nothing held.
        self._deferred: list[bytes] | None = None
        self._parser = httptools.HttpRequestParser(self)
        self._queue: deque[Request] = deque()
        self._runner: asyncio.Task[None] | None = None
        # A request offered to answer_now once its message completes in the same read.
        self._immediate: Request | None = None
        # An answer answer_now or answer_whole started and callbacks will finish: the
        # connection is busy until it is released.
        self._pending: Pending | None = None
        self._current_body: RequestBody | None = None
        self._url = b""
        self._headers: list[tuple[str, str]] = []
        # This read's bytes while no message has begun in it yet, then the first message's.
        self._read: bytes | None = None
        self._message_read: bytes | None = None
        self._header_bytes = 0
        self._raw_head_bytes = 0
        self._in_headers = False
        self._reading_paused = False
        self._splicing = False
        self._writable = True
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._drain_callbacks: list[Callable[[], None]] = []
        self._read_deadline = 0.0  # 0: none
        self._idle_deadline = 0.0
        self._closed = False
        self._responding = False
        # An upgrade request was parsed: what the client sends next is not HTTP; it waits
        # here until the handler switches protocols (or the connection closes).
        self._upgraded = False
        self._upgrade_buffer = bytearray()
        self._client_eof = False
        self.remote_addr: tuple[str, int] = ("", 0)

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        tcp: asyncio.Transport = transport  # type: ignore[assignment]  # uvloop's TCPTransport
        self._transport = tcp
        tcp.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            self.remote_addr = (str(peer[0]), int(peer[1]))
        self._state.add(self)
        self._arm_idle_timer()

    def data_received(self, data: bytes) -> None:
        if self._closed:
            return
        if self._upgraded:
            self._hold_for_upgrade(data)
            return
        body = self._current_body
        if self._in_headers or body is None or body.complete:
            if (
                self._answer_known is not None
                and not self._in_headers
                and self._runner is None
                and self._pending is None
                and not self._queue
                and self._known_answered(data)
            ):
                return
            # A guard for one endless header line, which httptools buffers without a limit;
            # the exact count of complete headers is kept in on_header.
            self._raw_head_bytes += len(data)
            if self._raw_head_bytes > self._limits.max_header_bytes + RAW_HEAD_SLACK:
                self._reject(431, "request headers larger than 1 MiB")
                return
            if not self._in_headers:
                self._read = data  # a message that begins now begins with this read
        try:
            self._parser.feed_data(data)
            if self._immediate is not None:
                # Its body goes on in later reads: answer it the ordinary way.
                self._enqueue(self._immediate)
                self._immediate = None
        except httptools.HttpParserUpgrade as upgrade:
            self._immediate = None  # never set for an upgrade; cleared for certain
            self._upgraded = True
            self._hold_for_upgrade(data[upgrade.args[0] :])
        except httptools.HttpParserError as error:
            self._immediate = None
            if self._header_bytes > self._limits.max_header_bytes:
                self._reject(431, "request headers larger than 1 MiB")
            else:
                self._reject(400, f"malformed request: {error}")
        finally:
            self._read = self._message_read = None

    def eof_received(self) -> bool:
        """The client closed its side: like Go's server, take it as gone and stop its work.

        A closed and a half-closed socket look the same from here, and a function left
        running for a client that has left would hold its slot until exec_timeout.
        """
        self._client_eof = True
        body = self._current_body
        if body is not None and not body.complete:
            body.fail(ClientDisconnectedError("client closed the connection mid-body"))
        if self._runner is not None and not self._runner.done():
            self._runner.cancel()
        if self._pending is not None:
            self._pending.abandon()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._state.connections.discard(self)
        self._cancel_timers()
        body = self._current_body
        if body is not None and not body.complete:
            body.fail(ClientDisconnectedError("client disconnected"))
        if self._runner is not None and not self._runner.done():
            self._runner.cancel()
        if self._pending is not None:
            self._pending.abandon()
        self._wake_writers()

    def pause_writing(self) -> None:
        self._writable = False

    def resume_writing(self) -> None:
        self._writable = True
        self._wake_writers()

    # httptools callbacks
    def on_message_begin(self) -> None:
        self._message_read, self._read = self._read, None
        self._url = b""
        self._header_bytes = 0
        self._headers = []
        self._in_headers = True
        self._idle_deadline = 0.0
        if self._limits.read_timeout > 0:
            self._read_deadline = self._loop.time() + self._limits.read_timeout

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._header_bytes += len(url)
        if self._header_bytes > self._limits.max_header_bytes:
            raise HeadersTooLargeError

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value) + 4
        if self._header_bytes > self._limits.max_header_bytes:
            raise HeadersTooLargeError
        self._headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        self._in_headers = False
        self._header_bytes = 0
        self._raw_head_bytes = 0
        parser = self._parser
        headers = self._headers
        chunked = False
        content_length: int | None = None
        expect_continue = False
        for name, value in headers:
            # Lengths first: most names are none of the three, and lowering each costs more.
            size = len(name)
            if size == 14:
                if name.lower() == "content-length":
                    content_length = int(value)
            elif size == 17:
                if name.lower() == "transfer-encoding":
                    chunked = "chunked" in value.lower()
            elif size == 6 and name.lower() == "expect":
                expect_continue = value.lower() == "100-continue"
        http_version = parser.get_http_version()
        raw = self._message_read
        if (
            raw is not None
            and self._answer_whole is not None
            and not chunked
            and not expect_continue
            and self._runner is None
            and self._pending is None
            and not self._queue
            and not self._closed
            and http_version == "1.1"
            and parser.should_keep_alive()
            and not parser.should_upgrade()
            and is_whole_request(raw, content_length)
            and self._offer_whole(parser, headers, raw, content_length)
        ):
            self._current_body = None  # the rest of this message is the handler's
            return
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
            headers=headers,
            http_version=http_version,
            keep_alive=parser.should_keep_alive(),
            body=body,
            upgrade=parser.should_upgrade(),
            chunked=chunked,
            content_length=content_length,
            remote_addr=self.remote_addr,
        )
        self._current_body = body
        if self._closed:
            return  # pipelined behind a response that closed the connection: never answered
        if (
            self._runner is None
            and self._pending is None
            and not self._queue
            and not request.upgrade
            and self._answer_now_of_handler is not None
        ):
            self._immediate = request
        else:
            self._enqueue(request)

    def _offer_whole(
        self,
        parser: httptools.HttpRequestParser,
        headers: list[tuple[str, str]],
        raw: bytes,
        content_length: int | None,
    ) -> bool:
        """Offer a whole request to the handler's `answer_whole`; True if it took it."""
        answer_whole = self._answer_whole
        assert answer_whole is not None
        method = parser.get_method().decode("ascii")
        target = self._url.decode("latin-1")
        try:
            if not answer_whole(self, method, target, headers, raw, content_length):
                return False
        except Exception as error:  # a bug in a mode must not take the server down
            self._on_error(f"error serving {method} {target}: {error!r}")
            self._close()  # what was written of an answer is unknown
            return True
        self._answered_in_callback()
        return True

    def _known_answered(self, data: bytes) -> bool:
        """Offer a read to the handler's `answer_known`; True if it answered it."""
        answer_known = self._answer_known
        assert answer_known is not None
        self._idle_deadline = 0.0  # a request has begun (on_message_begin's part)
        try:
            if not answer_known(self, data):
                return False
        except Exception as error:  # a bug in a mode must not take the server down
            self._on_error(f"error answering a known request: {error!r}")
            self._close()
            return True
        self._answered_in_callback()
        return True

    def _answered_in_callback(self) -> None:
        """After answer_whole or answer_known: go on with the connection, unless the answer
        is held (then `release` does, once it is complete)."""
        if self._pending is None:
            if self._state.closing:
                self._close()
            else:
                self._arm_idle_timer()

    def hold(self, pending: Pending) -> None:
        """An answer that callbacks will finish: later requests wait for `release`."""
        self._pending = pending
        self._responding = True

    def release(self, keep_open: bool = True) -> None:
        """The held answer is complete: go on with the connection, or close it."""
        self._pending = None
        self._responding = False
        if self._closed:
            return
        if not keep_open or self._state.closing:
            self._close()
        elif self._queue:
            self._runner = self._loop.create_task(self._serve_queue())
        else:
            self._arm_idle_timer()

    def _enqueue(self, request: Request) -> None:
        self._queue.append(request)
        if self._runner is None and self._pending is None:
            self._runner = self._loop.create_task(self._serve_queue())
        elif len(self._queue) > MAX_QUEUED_REQUESTS:
            self.update_reading()

    def on_body(self, data: bytes) -> None:
        body = self._current_body
        if body is not None:
            body.feed(data)
            if body.over_high_water and not self._reading_paused:
                self.update_reading()

    def on_message_complete(self) -> None:
        self._read_deadline = 0.0
        if self._current_body is not None:
            self._current_body.finish()
        request = self._immediate
        if request is not None:
            self._immediate = None
            self._answer_now(request)

    # ReadControl, for RequestBody
    def update_reading(self) -> None:
        """Pause the socket while the current body's window or the request queue is full."""
        transport = self._transport
        if transport is None or self._closed or self._splicing:
            return
        body = self._current_body
        should_pause = len(self._queue) > MAX_QUEUED_REQUESTS or (
            body is not None and body.over_high_water
        )
        if should_pause and not self._reading_paused:
            self._reading_paused = True
            transport.pause_reading()
        elif not should_pause and self._reading_paused:
            self._reading_paused = False
            transport.resume_reading()

    def detach_for_splice(self, body: RequestBody) -> int | None:
        """Stop reading the socket and lend a duplicate of it for the rest of this body."""
        transport = self._transport
        if transport is None or self._closed or body is not self._current_body:
            return None
        sock = transport.get_extra_info("socket")
        if sock is None:
            return None
        if not self._reading_paused:
            transport.pause_reading()
            self._reading_paused = True
        self._splicing = True
        return os.dup(sock.fileno())

    def reattach_after_splice(self, body: RequestBody, complete: bool) -> None:
        """The body went past the parser: start a fresh parser for the next request."""
        self._splicing = False
        if self._closed:
            return
        if complete:
            self._parser = httptools.HttpRequestParser(self)
            self.on_message_complete()
            self.update_reading()

    def send_continue(self) -> None:
        if self._deferred is not None:
            self.flush_deferred()
        if self._transport is not None and not self._closed:
            self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    # Upgrades
    def _hold_for_upgrade(self, data: bytes) -> None:
        """Keep bytes sent after an upgrade request for the protocol that takes over."""
        self._upgrade_buffer += data
        if len(self._upgrade_buffer) > UPGRADE_BUFFER_LIMIT and not self._reading_paused:
            self._reading_paused = True
            if self._transport is not None:
                self._transport.pause_reading()

    def switch_protocols(self, head: bytes, protocol: asyncio.Protocol) -> asyncio.Transport:
        """Send the 101 `head` and hand the connection over to `protocol` for good."""
        transport = self._transport
        if not self._upgraded or transport is None or self._closed:
            raise RuntimeError("switch_protocols: not an upgrade request on an open connection")
        self._cancel_timers()
        self._state.connections.discard(self)  # no longer an HTTP connection to drain
        if self._deferred is not None:
            self.flush_deferred()
        transport.write(head)
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

    # WriteControl, for Response
    @property
    def writable(self) -> bool:
        return self._writable and not self._closed

    def write(self, data: bytes) -> None:
        if self._deferred is not None:
            self.flush_deferred()
        if self._transport is not None and not self._closed:
            self._transport.write(data)

    def writelines(self, parts: list[bytes]) -> None:
        if self._deferred is not None:
            self.flush_deferred()
        if self._transport is not None and not self._closed:
            self._transport.writelines(parts)

    def write_soon(self, data: bytes, batch: WriteBatch) -> None:
        """Write `data` at the end of the loop's turn, with the other writes of `batch`; any
        later write or close of this connection goes after it."""
        if self._transport is None or self._closed:
            return
        if self._deferred is None:
            self._deferred = [data]
            batch.add(self)
        else:
            self._deferred.append(data)

    def flush_deferred(self) -> None:
        deferred, self._deferred = self._deferred, None
        if deferred and self._transport is not None and not self._closed:
            self._transport.writelines(deferred)

    async def drain(self) -> None:
        if self._closed:
            raise ClientDisconnectedError("client disconnected")
        if self._writable:
            return
        waiter = self._loop.create_future()
        self._drain_waiters.append(waiter)
        await waiter
        if self._closed:
            raise ClientDisconnectedError("client disconnected")

    async def lend_socket(self) -> int:
        """A duplicate of the socket for direct writes (sendfile, splice), once everything
        written through the transport has left, so that bytes keep their order."""
        if self._deferred is not None:
            self.flush_deferred()
        transport = self._transport
        while True:
            if transport is None or self._closed:
                raise ClientDisconnectedError("client disconnected")
            if transport.get_write_buffer_size() == 0:
                break
            # Rare: only when the socket was full at this moment; libuv empties it meanwhile.
            await asyncio.sleep(0.001)
        sock = transport.get_extra_info("socket")
        return os.dup(sock.fileno())

    def borrow_socket(self) -> int | None:
        """A duplicate of the socket for direct writes (sendfile) now, or None while the
        transport still holds bytes to send, which must go first."""
        if self._deferred is not None:
            self.flush_deferred()
        transport = self._transport
        if transport is None or self._closed or transport.get_write_buffer_size():
            return None
        sock = transport.get_extra_info("socket")
        return None if sock is None else os.dup(sock.fileno())

    def on_drain(self, callback: Callable[[], None]) -> None:
        if self._writable or self._closed:
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

    # Serving
    def _answer_now(self, request: Request) -> None:
        """Offer a complete request to the handler's synchronous path; queue it if declined."""
        response = Response(self, request.method, request.http_version, request.keep_alive)
        try:
            answer_now = self._answer_now_of_handler
            assert answer_now is not None  # requests are held for it only when it exists
            answered = answer_now(request, response)
        except Exception as error:  # a bug in a mode must not take the server down
            self._on_error(f"error serving {request.method} {request.target}: {error!r}")
            if response.started:
                self._close()
                return
            response.keep_alive = False
            response.send_text(500, "internal error in the watchdog")
            answered = True
        if not answered:
            self._enqueue(request)
            return
        if not response.finished:
            self.hold(response)
            response.when_done(lambda: self.release(response.keep_alive))
            return
        if response.keep_alive and not self._state.closing:
            self._arm_idle_timer()
        else:
            self._close()

    async def _serve_queue(self) -> None:
        """Answer queued requests in order until the queue is empty or the connection ends."""
        try:
            while self._queue and not self._closed:
                request = self._queue.popleft()
                if self._reading_paused:
                    self.update_reading()
                keep_open = await self._serve_one(request)
                if not keep_open:
                    self._close()
                    return
        finally:
            self._runner = None
        if self._state.closing:
            self._close()
        else:
            self._arm_idle_timer()

    async def _serve_one(self, request: Request) -> bool:
        """Run the handler for one request; True when the connection may carry another."""
        response = Response(self, request.method, request.http_version, request.keep_alive)
        self._responding = True
        try:
            await self._handler(request, response)
        except ClientDisconnectedError:
            return False
        except Exception as error:  # a bug in a mode must not take the server down
            self._on_error(f"error serving {request.method} {request.target}: {error!r}")
            if response.started:
                return False
            response.keep_alive = False
            response.send_text(500, "internal error in the watchdog")
        finally:
            self._responding = False
        if not response.finished:
            response.end()
        body = request.body
        if not body.complete:
            # The mode did not read the whole body: the next request cannot be found in it.
            body.discard()
            return False
        if self._upgraded:
            return False  # the protocol was not switched, and what follows is not HTTP
        return response.keep_alive and not self._state.closing

    # Errors, timers, closing
    def _reject(self, status: int, reason: str) -> None:
        """Answer a request we could not parse, then close: the byte stream is lost."""
        if self._transport is None or self._closed:
            return
        if not self._responding and not self._queue:
            response = Response(self, "GET", "1.1", keep_alive=False)
            response.send_text(status, reason)
        self._close()

    def check_deadlines(self, now: float) -> None:
        """Called by the server's ticker: act on a passed read or idle deadline."""
        if self._read_deadline and now >= self._read_deadline:
            self._read_deadline = 0.0
            self._on_read_timeout()
        if self._idle_deadline and now >= self._idle_deadline:
            self._idle_deadline = 0.0
            self._close()

    def _on_read_timeout(self) -> None:
        if self._in_headers:
            self._reject(408, "read_timeout exceeded while reading the request headers")
            return
        body = self._current_body
        if body is not None and not body.complete:
            body.fail(ReadTimeoutError("read_timeout exceeded while reading the request body"))

    def _arm_idle_timer(self) -> None:
        if self._limits.idle_timeout > 0 and not self._closed:
            self._idle_deadline = self._loop.time() + self._limits.idle_timeout

    def _cancel_timers(self) -> None:
        self._idle_deadline = 0.0
        self._read_deadline = 0.0

    def close_if_idle(self) -> None:
        if self._runner is None and self._pending is None and not self._in_headers:
            self._close()

    def _close(self) -> None:
        if self._deferred is not None:
            self.flush_deferred()
        if self._transport is not None and not self._closed:
            self._closed = True
            self._cancel_timers()
            self._transport.close()

    def abort(self) -> None:
        """Drop the connection at once (a response that can no longer be completed)."""
        self._deferred = None
        if self._transport is not None:
            self._transport.abort()
