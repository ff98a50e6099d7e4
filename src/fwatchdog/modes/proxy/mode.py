"""HTTP mode: `fprocess` is a long-lived HTTP server, and every request is proxied to it.

The child starts once; the watchdog reports healthy only once `upstream_url` accepts TCP
connections, and requests that arrive before then wait for it (within `exec_timeout`). Each
request goes out on a pooled keep-alive connection with its method, raw target, headers and a
body streamed as it arrives; the response streams back as the upstream sends it, whatever it
is (Server-Sent Events arrive event by event). What the watchdog answers itself (502, 503, 504)
says so in `X-OpenFaaS-Internal: of-watchdog`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from urllib.parse import urlsplit

from fwatchdog.http.headers import (
    HOP_BY_HOP,
    end_to_end,
    end_to_end_raw,
    only_options,
    origin_form,
)
from fwatchdog.http.passthrough import PassedResponse, ResponsePassthrough
from fwatchdog.http.request import BodyError, Request
from fwatchdog.http.response import Response
from fwatchdog.process.child import LongLivedChild
from fwatchdog.process.spawn import SpawnError, describe_exit
from fwatchdog.runtime.deadlines import Deadlines
from fwatchdog.runtime.primary_link import PrimaryLink
from fwatchdog.settings.config import Config
from fwatchdog.settings.durations import format_duration, parse_duration
from fwatchdog.settings.errors import StartupError
from fwatchdog.telemetry.fixed_point import FixedPoint
from fwatchdog.telemetry.logs import Log
from fwatchdog.upstream.client import (
    LAST_CHUNK,
    RawHeaders,
    UpstreamClosedError,
    UpstreamConnection,
    UpstreamError,
    UpstreamPool,
    accepts_connections,
    encode_chunk,
)
from fwatchdog.upstream.tunnel import Tunnel

# Readiness polling: first retry after this, doubling up to the cap; a log line this often.
READY_POLL_FIRST = 0.005
READY_POLL_MAX = 0.1
READY_LOG_EVERY = 2.0
CONNECT_PROBE_TIMEOUT = 1.0

INTERNAL_HEADER = ("X-OpenFaaS-Internal", "of-watchdog")
# Request bytes kept in memory so that a request can be sent again when the pooled connection
# it went out on turns out to have been closed by the upstream; a larger body is sent once.
REPLAY_LIMIT = 64 * 1024
# Requests that may be sent twice (net/http's isReplayable).
IDEMPOTENT_METHODS = frozenset(("GET", "HEAD", "OPTIONS", "TRACE"))
IDEMPOTENCY_KEYS = frozenset(("idempotency-key", "x-idempotency-key"))

# Towards the upstream the framing is ours to write, and 100-continue ours to answer.
_FRAMING_FIELDS = frozenset(("content-length", "expect"))
_EXPECT = frozenset((b"expect",))  # answered here; the body is already read
_HOP_BY_HOP_BYTES = frozenset(name.encode() for name in HOP_BY_HOP)
# Back to the client: the HTTP layer writes Date, we write X-Duration-Seconds.
_NOT_RETURNED = frozenset((b"date", b"x-duration-seconds"))
# The X-Duration-Seconds lines of responses passed on as they came (6 decimals, as Go's %f).
_DURATION_FIELDS = FixedPoint(
    6, lambda text: b"X-Duration-Seconds: %b\r\n" % text.encode(), limit=8192
)


class HttpMode:
    """Starts `fprocess` once and reverse-proxies every request to `upstream_url`.

    `failed` resolves with a one-line reason when the child exits on its own after start-up
    (any exit code): the watchdog is then of no use, and the server should turn unhealthy,
    let requests in flight end, call `stop()` and exit non-zero. It never resolves once
    `stop()` has begun.
    """

    passes_raw_requests = True  # Request.raw: a request goes upstream as it came

    def __init__(self, config: Config, log: Log, primary: PrimaryLink | None = None) -> None:
        self._config = config
        self._log = log
        # In a worker process (http_workers): the primary owns the child and says when the
        # upstream is ready and when the child died.
        self._primary = primary
        url = urlsplit(config.upstream_url)
        self._url = config.upstream_url
        self._host = url.hostname or "127.0.0.1"
        self._port = url.port or 80
        self._authority = url.netloc
        # Go appends the request URI to the URL, so a path in the URL prefixes every request.
        self._path_prefix = url.path.rstrip("/")
        self._buffer_body = config.buffer_http
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._pool = UpstreamPool(self._host, self._port)
        self._passthrough = ResponsePassthrough()
        self._deadlines = Deadlines()
        self._ready: asyncio.Future[None] = loop.create_future()
        self.failed: asyncio.Future[str] = loop.create_future()
        self._child: LongLivedChild | None = None
        self._stopping = False
        self._exit_reason = ""

    # --- life ------------------------------------------------------------------------------
    async def start(self) -> None:
        """Start the child and return once the upstream accepts connections."""
        if self._primary is not None:
            await self._wait_for_primary(self._primary)
            return
        config, log = self._config, self._log
        try:
            self._child = LongLivedChild.start(
                config.function_argv,
                os.environ,
                log,
                config.prefix_logs,
                config.log_buffer_size,
            )
        except SpawnError as error:
            raise StartupError(f"fprocess: {error}") from None
        log.info(f"Started fprocess (pid {self._child.pid}): {' '.join(config.function_argv)}")
        self._child.on_exit(self._on_child_exit)
        waited = await self._wait_for_upstream()
        if waited is None:
            raise StartupError(
                f"fprocess exited before {self._url} accepted connections: "
                f"{self._child.exit_description}"
            )
        log.info(f"Upstream {self._url} accepts connections ({waited:.3f}s after start)")
        self._ready.set_result(None)

    async def _wait_for_upstream(self) -> float | None:
        """Poll the upstream with a short back-off; seconds waited, None if the child exited."""
        child = self._child
        assert child is not None
        loop = self._loop
        began = loop.time()
        next_log = began + READY_LOG_EVERY
        delay = READY_POLL_FIRST
        while not child.exited.done():
            if await accepts_connections(self._host, self._port, CONNECT_PROBE_TIMEOUT):
                return loop.time() - began
            now = loop.time()
            if now >= next_log:
                next_log = now + READY_LOG_EVERY
                self._log.info(
                    f"Waiting for the upstream {self._url} to accept connections "
                    f"({now - began:.0f}s)"
                )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await asyncio.shield(child.exited)
            delay = min(delay * 2, READY_POLL_MAX)
        return None

    async def _wait_for_primary(self, primary: PrimaryLink) -> None:
        """A worker: ready when the primary says the upstream is; failed when it says the
        child died (it logs that, once for all processes)."""
        primary.failed.add_done_callback(lambda failed: self._upstream_gone(failed.result()))
        await asyncio.wait((primary.ready, primary.failed), return_when=asyncio.FIRST_COMPLETED)
        if not primary.ready.done():
            raise StartupError(primary.failed.result())
        self._ready.set_result(None)

    def _on_child_exit(self, returncode: int) -> None:
        if self._stopping:
            return
        reason = f"Forked function has terminated: {describe_exit(returncode)}"
        self._log.error(reason)
        self._upstream_gone(reason)

    def _upstream_gone(self, reason: str) -> None:
        """Requests in flight and to come get 502 with `reason`; `failed` resolves."""
        if self._stopping:
            return
        self._exit_reason = reason
        self._pool.close()
        if self._ready.done() and not self.failed.done():
            self.failed.set_result(self._exit_reason)

    async def stop(self) -> None:
        """After the drain: SIGTERM the child's group, up to write_timeout, then SIGKILL."""
        self._stopping = True
        self._pool.close()
        child = self._child
        if child is None:
            return
        if not child.exited.done():
            self._log.info(
                f"Sending SIGTERM to fprocess (pid {child.pid}); SIGKILL after "
                f"{format_duration(self._config.write_timeout)}"
            )
        await child.terminate(self._config.write_timeout)
        self._log.info(f"fprocess (pid {child.pid}) ended: {child.exit_description}")

    # --- requests --------------------------------------------------------------------------
    def answer_now(self, request: Request, response: Response) -> bool:
        """Proxy a request whose body is all here without a task: one `_Exchange`, finished
        by the upstream connection's callbacks. Before the upstream is ready, for an upgrade
        or for a body still arriving: False, and `handle` does it."""
        if not self._ready.done() or self._exit_reason or request.upgrade:
            return False
        body = request.body.take_all_if_complete(REPLAY_LIMIT)
        if body is None:
            return False
        started = time.perf_counter()
        asked_timeout = request.header("x-timeout")
        exchange = _Exchange(self, request, response, started, *self._bounds(asked_timeout))
        exchange.send(self._whole_message(request, body), streamed=False)
        return True

    async def handle(self, request: Request, response: Response) -> None:
        """The same exchange in a task: for a request that waits for the upstream to be
        ready, streams its body, or upgrades the connection."""
        started = time.perf_counter()
        timeout, timeout_name = self._timeout(request.header("x-timeout"))
        if not self._ready.done():
            try:
                await self._deadlines.within(asyncio.shield(self._ready), timeout)
            except TimeoutError:
                reason = f"the upstream {self._url} is not accepting connections yet"
                self._fail(request, response, 503, reason, started)
                return
        if self._exit_reason:
            self._fail(request, response, 502, self._exit_reason, started)
            return
        has_body = request.chunked or request.content_length is not None
        body: bytes | None = None
        try:
            if not has_body:
                body = b""
            elif self._buffer_body:
                body = await self._deadlines.within(request.body.read_all(), timeout)
            else:
                body = request.body.take_all_if_complete(REPLAY_LIMIT)
        except TimeoutError:
            self._fail(request, response, 504, _exceeded(timeout_name, timeout), started)
            return
        except BodyError as error:
            self._fail(request, response, 408, str(error), started)
            return
        left = max(timeout - (time.perf_counter() - started), 0.001) if timeout > 0 else 0.0
        exchange = _Exchange(self, request, response, started, left, timeout_name)
        exchange.done = self._loop.create_future()
        try:
            if body is not None:
                exchange.send(self._whole_message(request, body), streamed=False)
            else:
                head = self._head(request, self._framing(request, None))
                exchange.send([head], streamed=True)
            await exchange.done
            if exchange.upgraded and exchange.conn is not None:
                await self._tunnel(request, response, exchange.conn, exchange)
        except asyncio.CancelledError:
            exchange.abandon()
            raise
        except BodyError as error:
            self._fail(request, response, 408, str(error), started)
        finally:
            exchange.close()

    def _bounds(self, asked_timeout: str | None) -> tuple[float, str]:
        """What bounds an exchange that callbacks finish (no task, so the router's
        write_timeout does not apply): exec_timeout or X-Timeout, or write_timeout when that
        is smaller."""
        timeout, timeout_name = self._timeout(asked_timeout)
        write_timeout = self._config.write_timeout
        if timeout <= 0 or write_timeout < timeout:
            return write_timeout, "write_timeout"
        return timeout, timeout_name

    def _timeout(self, asked: str | None) -> tuple[float, str]:
        """exec_timeout, or a shorter X-Timeout the request asks for (0: none)."""
        exec_timeout = self._config.exec_timeout
        if exec_timeout <= 0:
            return 0.0, ""
        if asked:
            try:
                seconds = parse_duration(asked)
            except ValueError:
                seconds = 0.0
            if 0 < seconds <= exec_timeout:
                return seconds, "X-Timeout"
        return exec_timeout, "exec_timeout"

    def _whole_message(self, request: Request, body: bytes) -> list[bytes]:
        """The request as the upstream gets it, whole: the bytes it came as when its head
        needs no new line (a Host, an origin-form target that needs no prefix, no upgrade),
        less the lines of hop-by-hop fields and Expect; else a head written afresh and the
        body framed."""
        raw = request.raw
        if (
            raw is not None
            and request.has_host
            and not self._path_prefix
            and request.target[:1] == "/"
            and not request.upgrade
        ):
            if request.hop_by_hop:
                raw = request.raw_end_to_end(_EXPECT)
            if raw is not None:
                return [raw]
        head = self._head(request, self._framing(request, body))
        if request.chunked and not self._buffer_body:
            return [head, *encode_chunk(body), LAST_CHUNK] if body else [head, LAST_CHUNK]
        return [head, body] if body else [head]

    def _framing(self, request: Request, whole_body: bytes | None) -> str:
        """The framing line and blank line that end the head towards the upstream: with
        buffer_http the whole body's Content-Length; else chunked when the client's body was,
        its Content-Length when it had one, nothing for a request without a body."""
        if not request.chunked and request.content_length is None:
            return "\r\n"
        if self._buffer_body and whole_body is not None:
            return f"Content-Length: {len(whole_body)}\r\n\r\n"
        if request.chunked:
            return "Transfer-Encoding: chunked\r\n\r\n"
        return f"Content-Length: {request.content_length}\r\n\r\n"

    def _head(self, request: Request, framing: str) -> bytes:
        """The request head for the upstream: origin-form target under the URL's path, the
        end-to-end fields, a Host, the upgrade it asks for, then `framing`."""
        target = request.target
        if target != "*":
            target = self._path_prefix + origin_form(target)
        lines = [f"{request.method} {target} HTTP/1.1\r\n"]
        lines.extend(
            f"{name}: {value}\r\n" for name, value in end_to_end(request.headers, _FRAMING_FIELDS)
        )
        if not request.has_host:
            lines.append(f"Host: {self._authority}\r\n")
        if request.upgrade:
            upgrade = request.header("upgrade")
            if upgrade is not None:
                lines.append(f"Connection: Upgrade\r\nUpgrade: {upgrade}\r\n")
        lines.append(framing)
        return "".join(lines).encode("latin-1")

    async def _tunnel(
        self, request: Request, response: Response, conn: UpstreamConnection, exchange: _Exchange
    ) -> None:
        """After the upstream's 101: join the client and the upstream until either closes."""

        def to_client(size: int) -> None:
            response.bytes_sent += size

        tunnel = Tunnel(to_client)
        try:
            response.switch_protocols(exchange.upgrade_headers, tunnel.client_end)
            conn.hand_over(tunnel.upstream_end)
            await tunnel.done
        except BaseException:
            tunnel.abort()
            conn.abort()
            raise
        tunnel.close()

    def _fail(
        self, request: Request, response: Response, status: int, reason: str, started: float
    ) -> None:
        """Answer with our own one-line response, or cut off one that has begun."""
        self._log.error(f"{request.method} {request.target}: {reason}")
        if response.started:
            response.abort()
            return
        request.body.discard()
        response.send(
            status,
            reason.encode() + b"\n",
            [
                ("Content-Type", "text/plain; charset=utf-8"),
                INTERNAL_HEADER,
                ("X-Duration-Seconds", f"{time.perf_counter() - started:f}"),
            ],
        )


class _Exchange:
    """One request's trip to the upstream, whichever way it started: its head (and whole
    body, or the start of one a task streams) goes out on a pooled connection, and the answer
    comes back through this object's callbacks (it is the connection's `ResponseSink`). A
    simple whole answer is passed on as the bytes it came as (`take_whole`); anything else
    is taken apart and written again. The deadline (`cancel`) or the client leaving
    (`abandon`) ends it early; a connection that fails before answering costs one retry on a
    new connection when the request may be sent twice (`_may_retry`)."""

    __slots__ = (
        "_connected",
        "_connecting",
        "_first",
        "_mode",
        "_passed",
        "_pump",
        "_retried",
        "_sent",
        "_sent_size",
        "conn",
        "deadline",
        "deadline_name",
        "done",
        "finished",
        "request",
        "response",
        "started",
        "upgrade_headers",
        "upgraded",
    )

    def __init__(
        self,
        mode: HttpMode,
        request: Request,
        response: Response,
        started: float,
        deadline: float,
        deadline_name: str,
    ) -> None:
        self._mode = mode
        self.request = request
        self.response = response
        self.started = started
        self.deadline = deadline
        self.deadline_name = deadline_name
        self.conn: UpstreamConnection | None = None
        # Set by `handle`: resolved when the answer is complete, failed or upgraded.
        self.done: asyncio.Future[None] | None = None
        self.finished = False
        self.upgraded = False
        self.upgrade_headers: list[tuple[str, str]] = []
        self._passed: PassedResponse | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._connected: asyncio.Future[None] | None = None
        self._pump: asyncio.Task[None] | None = None
        self._first: list[bytes] = []
        self._retried = False
        # What went out so far, while small enough to send again; None once it is not.
        self._sent: list[bytes] | None = []
        self._sent_size = 0

    # --- sending ---------------------------------------------------------------------------
    def send(self, parts: list[bytes], streamed: bool) -> None:
        """Send `parts` (and, if `streamed`, the body after them as it arrives)."""
        self._first = parts
        self._record(parts)
        mode = self._mode
        if streamed:
            self._connected = mode._loop.create_future()
            self._pump = mode._loop.create_task(self._stream_body(self._connected))
            self._pump.add_done_callback(self._pump_ended)
        if self.deadline > 0:
            mode._deadlines.add(self, self.deadline)
        if self.done is None:
            self.response.on_abandon(self.abandon)
        conn = mode._pool.take()
        if conn is None:
            self._connecting = mode._loop.create_task(self._connect())
        else:
            self._send_on(conn)

    def _send_on(self, conn: UpstreamConnection) -> None:
        """Send what this exchange has to say on `conn`: everything so far on a retry."""
        self.conn = conn
        passes = self.response.may_pass_through and not self.request.upgrade
        take_whole = self.take_whole if passes else None
        conn.begin(self, self.request.method == "HEAD", take_whole)
        parts = self._first
        if self._retried:
            if self._sent is None:  # the body outgrew what is kept while reconnecting
                self._fail(502, "the upstream closed the connection before answering")
                return
            parts = self._sent
        if self._pump is None:
            # A whole request: written with the other writes of this turn of the loop.
            conn.write_soon(parts[0] if len(parts) == 1 else b"".join(parts))
            return
        conn.body_complete = False
        conn.writelines(parts)
        connected = self._connected
        if connected is not None and not connected.done():
            connected.set_result(None)

    async def _connect(self) -> None:
        mode = self._mode
        try:
            conn = await mode._pool.connect()
        except OSError as error:
            reason = mode._exit_reason or (
                f"cannot connect to the upstream {mode._url}: {error.strerror or error}"
            )
            self._fail(502, reason)
            return
        self._connecting = None
        if self.finished:
            mode._pool.release(conn)
        else:
            self._send_on(conn)

    def _record(self, parts: list[bytes]) -> None:
        """Keep what goes out, for a retry, while it is small enough."""
        sent = self._sent
        if sent is None:
            return
        self._sent_size += sum(len(part) for part in parts)
        if self._sent_size > REPLAY_LIMIT:
            self._sent = None
        else:
            sent.extend(parts)

    async def _stream_body(self, connected: asyncio.Future[None]) -> None:
        """Stream the request body to the upstream as it arrives, at the upstream's pace.

        A chunk is recorded and written in one step, so that a retry on a new connection,
        which writes all that was recorded, never repeats or loses one."""
        await connected
        request = self.request
        chunked = request.chunked
        body = request.body
        while chunk := await body.read():
            parts = encode_chunk(chunk) if chunked else [chunk]
            self._record(parts)
            conn = self.conn
            if conn is not None and conn.busy_with is self:
                conn.writelines(parts)
                if not conn.writable:
                    await conn.drain()
        if chunked:
            self._record([LAST_CHUNK])
        conn = self.conn
        if conn is not None and conn.busy_with is self:
            if chunked:
                conn.write(LAST_CHUNK)
            conn.body_complete = True

    def _pump_ended(self, pump: asyncio.Task[None]) -> None:
        if pump.cancelled():
            return
        error = pump.exception()
        if error is not None:
            # The client's body failed (read_timeout, disconnect): the upstream must not take
            # the part it got for a whole request.
            conn = self.conn
            if conn is not None and conn.busy_with is self:
                conn.abort()
            if isinstance(error, BodyError):
                self._end(error)
            else:
                self._fail(502, f"sending the body upstream failed: {error!r}")

    # --- ResponseSink ----------------------------------------------------------------------
    def take_whole(self, data: bytes) -> bool | None:
        """The first read of the answer: when it is the whole of a simple response, keep it
        ready to pass on as it came (`on_end` sends it), less `Connection`, plus ours."""
        passed = self._mode._passthrough.pass_on(data)
        if passed is None:
            return None
        self._passed = passed
        return passed.upstream_keeps_alive

    def on_head(self, status: int, headers: RawHeaders) -> None:
        if status == 101:
            if self.request.upgrade and self.done is not None:
                self.upgrade_headers = _upgrade_headers(headers, self.started)
            return  # not asked for: on_upgrade turns it into a 502
        _relay_head(self.response, status, headers, self.started)

    def on_body(self, data: bytes) -> None:
        conn = self.conn
        assert conn is not None
        if not self.response.write_nowait(data):
            conn.pause_reading()  # the client is not keeping up
            self.response.on_drain(conn.resume_reading)

    def on_end(self) -> None:
        passed = self._passed
        if passed is None:
            self.response.end()
        else:
            self._passed = None
            units = int((time.perf_counter() - self.started) * _DURATION_FIELDS.scale + 0.5)
            field = _DURATION_FIELDS.get(units) or _DURATION_FIELDS.write(units)
            self.response.send_passthrough(passed.status, passed.message(field), passed.body_length)
        self._end(None)

    def on_error(self, error: UpstreamError) -> None:
        if self._may_retry(error):
            self._retried = True
            self.conn = None
            self._connecting = self._mode._loop.create_task(self._connect())
            return
        if self.response.started:
            self._mode._log.error(
                f"{self.request.method} {self.request.target}: {error}; response cut off"
            )
            self.response.abort()
            self._end(None)
        else:
            self._fail(502, self._mode._exit_reason or str(error))

    def on_upgrade(self) -> None:
        if self.upgrade_headers:
            self.upgraded = True
            self._end(None)
            return
        if self.conn is not None:
            self.conn.abort()
        self._fail(502, "the upstream answered 101 Switching Protocols unasked")

    def _may_retry(self, error: UpstreamError) -> bool:
        """Go's rule (net/http isReplayable): a pooled connection that closed before any
        byte of the answer is tried once more on a new one, only for a request that may be
        sent twice (an idempotent method, or an idempotency key) and that is still here."""
        if self._retried or self.finished or self._sent is None:
            return False
        if not isinstance(error, UpstreamClosedError) or not error.stale:
            return False
        request = self.request
        if request.method in IDEMPOTENT_METHODS:
            return True
        return any(name.lower() in IDEMPOTENCY_KEYS for name, _ in request.headers)

    # --- ends ------------------------------------------------------------------------------
    def cancel(self) -> None:
        """The deadline passed (exec_timeout, X-Timeout or write_timeout): 504, or cut off."""
        if not self.finished:
            self._stop()
            self._fail(504, _exceeded(self.deadline_name, self.deadline))

    def abandon(self) -> None:
        """The client left: drop the upstream connection, whose answer nobody will read."""
        if not self.finished:
            self._stop()
            self._end(None)

    def _fail(self, status: int, reason: str) -> None:
        self._stop()
        self._mode._fail(self.request, self.response, status, reason, self.started)
        self._end(None)

    def _stop(self) -> None:
        for task in (self._connecting, self._pump):
            if task is not None and not task.done():
                task.cancel()
        conn = self.conn
        if conn is not None and conn.busy_with is self:
            conn.abort()

    def _end(self, error: BaseException | None) -> None:
        """The exchange is over: forget its deadline and tell `handle`, if it waits."""
        self.finished = True
        self._mode._deadlines.discard(self)
        done = self.done
        if done is not None and not done.done():
            if error is None:
                done.set_result(None)
            else:
                done.set_exception(error)

    def close(self) -> None:
        """Leave nothing behind: an unfinished connection is dropped, the body pump stopped
        (the upstream answered before taking the whole body: the rest is not wanted)."""
        pump = self._pump
        if pump is not None and not pump.done():
            pump.cancel()
            self.request.body.discard()
        if not self.finished or (self.conn is not None and self.conn.busy_with is self):
            self._stop()
        self.finished = True
        self._mode._deadlines.discard(self)


def _exceeded(name: str, seconds: float) -> str:
    return f"{name} ({format_duration(seconds)}) exceeded"


def _upgrade_headers(headers: RawHeaders, started: float) -> list[tuple[str, str]]:
    """The 101's fields as the client gets them when the HTTP layer hands it over."""
    returned = end_to_end_raw(headers, _NOT_RETURNED)
    returned.append(("X-Duration-Seconds", f"{time.perf_counter() - started:f}"))
    protocol = next((v for n, v in headers if n.lower() == b"upgrade"), b"")
    returned += [("Connection", "Upgrade"), ("Upgrade", protocol.decode("latin-1"))]
    return returned


def _relay_head(response: Response, status: int, raw: RawHeaders, started: float) -> None:
    """Start the client's response with the upstream's status and headers, plus ours."""
    seconds = b"%f" % (time.perf_counter() - started)
    encoded = _encoded_headers(raw)
    if encoded is not None:
        fields, length = encoded
        response.start_encoded(status, b"%bX-Duration-Seconds: %b\r\n" % (fields, seconds), length)
        return
    returned = end_to_end_raw(raw, _NOT_RETURNED)
    returned.append(("X-Duration-Seconds", seconds.decode()))
    response.start(status, returned)


def _encoded_headers(raw: RawHeaders) -> tuple[bytes, int | None] | None:
    """The upstream's response headers minus hop-by-hop ones, still encoded, and its
    Content-Length; None when `end_to_end_raw` must do it (a Connection header that lists
    fields, an odd Content-Length)."""
    parts: list[bytes] = []
    length: int | None = None
    for name, value in raw:
        lowered = name.lower()
        if lowered in _HOP_BY_HOP_BYTES or lowered.startswith(b"proxy-"):
            if lowered == b"connection" and not only_options(value):
                return None
            continue
        if lowered in _NOT_RETURNED:
            continue
        if lowered == b"content-length":
            if length is not None or not value.strip().isdigit():
                return None
            length = int(value)
            continue
        parts += (name, b": ", value, b"\r\n")
    return b"".join(parts), length
