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

from fwatchdog.http.connection import HttpConnection
from fwatchdog.http.passthrough import (
    HEAD_END,
    PassedResponse,
    ResponsePassthrough,
)
from fwatchdog.http.recent import Recent
from fwatchdog.http.request import (
    BodyError,
    ClientDisconnectedError,
    Request,
    RequestBody,
    split_target,
)
from fwatchdog.http.response import Response
from fwatchdog.http.write_batch import WriteBatch
from fwatchdog.modes.base import Ledger
from fwatchdog.process.child import LongLivedChild
from fwatchdog.process.spawn import SpawnError, describe_exit
from fwatchdog.runtime.deadlines import Deadlines
from fwatchdog.runtime.primary_link import PrimaryLink
from fwatchdog.settings.config import Config
from fwatchdog.settings.durations import format_duration, parse_duration
from fwatchdog.settings.errors import StartupError
from fwatchdog.telemetry.fixed_point import FixedPoint
from fwatchdog.telemetry.logs import Log, RequestLine
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
# Request body bytes kept in memory so that a request can be sent again when the pooled
# connection it went out on turns out to have been closed by the upstream.
REPLAY_LIMIT = 64 * 1024

# Hop-by-hop fields (RFC 9110 7.6.1), never forwarded in either direction; the fields that
# a Connection header lists are dropped as well.
_HOP_BY_HOP = ("connection", "keep-alive", "te", "trailer", "transfer-encoding", "upgrade")
# Towards the upstream we also write the framing ourselves and answer 100-continue ourselves.
_NOT_FORWARDED = frozenset((*_HOP_BY_HOP, "content-length", "expect"))
# Back to the client: the HTTP layer writes Date, we write X-Duration-Seconds; Content-Length
# stays (the HTTP layer frames the body with it).
_NOT_RETURNED = frozenset(name.encode() for name in (*_HOP_BY_HOP, "date", "x-duration-seconds"))
# The X-Duration-Seconds lines of responses passed on as they came (6 decimals, as Go's %f):
# microseconds take more values than a log line's 4 decimals, hence more room (about 1.4 MiB
# when full).
_DURATION_FIELDS = FixedPoint(
    6, lambda text: b"X-Duration-Seconds: %b\r\n" % text.encode(), limit=8192
)
# Distinct requests remembered for answer_known (the oldest forgotten first), and the largest.
KNOWN_REQUESTS = 1024
KNOWN_REQUEST_MAX = 1024


class _PassedRequest:
    """What a request passed on as it came parsed to, and what proxying it takes: kept with
    its bytes, so that the same bytes again are passed on without parsing or working out
    anything (`answer_known`)."""

    __slots__ = ("content_length", "headers", "line", "timeout", "timeout_name")

    def __init__(
        self,
        headers: list[tuple[str, str]],
        content_length: int | None,
        timeout: float,
        timeout_name: str,
        line: RequestLine,
    ) -> None:
        self.headers = headers
        self.content_length = content_length
        # What bounds the exchange: exec_timeout (or X-Timeout), or write_timeout if smaller.
        self.timeout = timeout
        self.timeout_name = timeout_name
        self.line = line  # with the method and target


# Request fields that make the proxy rewrite a head rather than pass it on as it came.
_NOT_PASSED = frozenset((*_HOP_BY_HOP, "expect"))
# Connection options that are not field names.
_CONNECTION_OPTIONS = frozenset(("close", "keep-alive", "upgrade"))
_CONNECTION_OPTIONS_BYTES = frozenset(option.encode() for option in _CONNECTION_OPTIONS)


class HttpMode:
    """Starts `fprocess` once and reverse-proxies every request to `upstream_url`.

    `failed` resolves with a one-line reason when the child exits on its own after start-up
    (any exit code): the watchdog is then of no use, and the server should turn unhealthy,
    let requests in flight end, call `stop()` and exit non-zero. It never resolves once
    `stop()` has begun.
    """

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
        # The whole lane's writes, made together at the end of the loop's turn.
        self._writes = WriteBatch(loop)
        # Request bytes answer_whole passed on -> what they parsed to (answer_known).
        self._known: Recent[_PassedRequest] = Recent(KNOWN_REQUESTS, KNOWN_REQUEST_MAX)
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
        """Proxy a request whose body is all here without a task: written at once on a
        pooled connection and answered by that connection's callbacks (`_Forwarding`).
        Before the upstream is ready, with no idle connection, for an upgrade or a body too
        big to keep for a retry: False, and `handle` does it."""
        if not self._ready.done() or self._exit_reason or request.upgrade:
            return False
        conn = self._pool.take()
        if conn is None:
            return False
        body = request.body.take_all_if_complete(REPLAY_LIMIT)
        if body is None:
            self._pool.release(conn)
            return False
        started = time.perf_counter()
        head_lines, asked_timeout = self._request_head(request)
        parts = self._framed(request, head_lines, body)
        timeout, timeout_name = self._timeout_without_task(asked_timeout)
        forwarding = _Forwarding(self, request, response, started, parts, timeout_name, timeout)
        response.on_abandon(forwarding.abandon)
        self._deadlines.add(forwarding, timeout)
        forwarding.send_on(conn)
        return True

    def answer_whole(
        self,
        conn: HttpConnection,
        method: str,
        target: str,
        headers: list[tuple[str, str]],
        raw: bytes,
        content_length: int | None,
        ledger: Ledger,
    ) -> bool:
        """A whole request passed on as it came, on an idle pooled connection, before any
        Request or Response is made (`_Relay`); False for the usual path to take it."""
        if not self._ready.done() or self._exit_reason or method == "HEAD" or self._path_prefix:
            return False
        passes, asked_timeout = _passes_as_received(headers)
        if not passes:
            return False
        timeout, timeout_name = self._timeout_without_task(asked_timeout)
        line = ledger.line_of(method, target, headers)
        passed = _PassedRequest(headers, content_length, timeout, timeout_name, line)
        if not self._relay(conn, ledger, raw, passed):
            return False
        self._known.remember(raw, passed)
        return True

    def answer_known(self, conn: HttpConnection, data: bytes, ledger: Ledger) -> bool:
        """The same request bytes as one answer_whole passed on before: passed on again,
        without parsing them again."""
        passed = self._known.get(data)
        if passed is None or not self._ready.done() or self._exit_reason:
            return False
        return self._relay(conn, ledger, data, passed)

    def _relay(
        self, conn: HttpConnection, ledger: Ledger, raw: bytes, passed: _PassedRequest
    ) -> bool:
        """Start a `_Relay` for `raw` on an idle pooled connection; False if there is none."""
        upstream = self._pool.take()
        if upstream is None:
            return False
        relay = _Relay(self, conn, ledger, passed, raw)
        conn.hold(relay)
        ledger.enter()
        self._deadlines.add(relay, passed.timeout)
        relay.send_on(upstream)
        return True

    def _framed(self, request: Request, head_lines: list[str], body: bytes) -> list[bytes]:
        """Head and whole body as written upstream, framed as `_proxy` frames a streamed one."""
        framing = self._framing(request, body)
        head = ("".join(head_lines) + framing).encode("latin-1")
        if framing.startswith("Transfer-Encoding"):
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

    def _upstream_failed(
        self, request: Request, response: Response, error: UpstreamError, started: float
    ) -> None:
        """No whole response from the upstream: 502, or a cut-off response if one began."""
        if response.started:
            self._log.error(f"{request.method} {request.target}: {error}; response cut off")
            response.abort()
        else:
            self._fail(request, response, 502, self._exit_reason or str(error), started)

    async def handle(self, request: Request, response: Response) -> None:
        started = time.perf_counter()
        head_lines, asked_timeout = self._request_head(request)
        timeout, timeout_name = self._timeout(asked_timeout)
        waiting = not self._ready.done()
        task: asyncio.Task[object] = asyncio.current_task(self._loop)  # type: ignore[assignment]
        if timeout > 0:
            self._deadlines.add(task, timeout)
        try:
            if waiting:
                await asyncio.shield(self._ready)
                waiting = False
            await self._proxy(request, response, started, head_lines)
        except asyncio.CancelledError:
            if not self._deadlines.expired(task) or task.uncancel() > 0:
                raise  # not (only) our deadline: the client left, or write_timeout
            if waiting:
                reason = f"the upstream {self._url} is not accepting connections yet"
                self._fail(request, response, 503, reason, started)
            else:
                reason = f"{timeout_name} ({format_duration(timeout)}) exceeded"
                self._fail(request, response, 504, reason, started)
        except ClientDisconnectedError:
            raise
        except BodyError as error:
            self._fail(request, response, 408, str(error), started)
        finally:
            self._deadlines.discard(task)

    def _timeout_without_task(self, asked: str | None) -> tuple[float, str]:
        """What bounds an exchange that callbacks finish (no task, so the router's
        write_timeout does not apply): `_timeout`, or write_timeout when that is smaller."""
        timeout, timeout_name = self._timeout(asked)
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

    async def _proxy(
        self, request: Request, response: Response, started: float, head_lines: list[str]
    ) -> None:
        if self._exit_reason:
            self._fail(request, response, 502, self._exit_reason, started)
            return
        body = request.body
        has_body = request.chunked or request.content_length is not None
        buffered: bytes | None = None
        if has_body and self._buffer_body:
            buffered = await body.read_all()
        head_lines.append(self._framing(request, buffered))
        head = "".join(head_lines).encode("latin-1")
        exchange = _Exchange(request, response, started, self._loop)
        try:
            for attempt in (1, 2):
                conn = self._pool.take() if attempt == 1 else None
                if conn is None:
                    try:
                        conn = await self._pool.connect()
                    except OSError as error:
                        reason = self._exit_reason or (
                            f"cannot connect to the upstream {self._url}: {error.strerror or error}"
                        )
                        self._fail(request, response, 502, reason, started)
                        return
                exchange.attach(conn)
                conn.begin(exchange, request.method == "HEAD")
                if buffered is not None:
                    conn.writelines([head, buffered])
                elif not has_body:
                    conn.write(head)
                else:
                    await self._send_body(conn, head, body, request.chunked, exchange)
                try:
                    await exchange.done
                except UpstreamClosedError as error:
                    if attempt == 1 and error.stale and exchange.replayable:
                        exchange.retry()
                        continue
                    raise
                break
            if exchange.upgraded and exchange.conn is not None:
                await self._tunnel(request, response, exchange.conn, exchange)
        except UpstreamError as error:
            self._upstream_failed(request, response, error, started)
        finally:
            exchange.close()

    async def _tunnel(
        self, request: Request, response: Response, conn: UpstreamConnection, exchange: _Exchange
    ) -> None:
        """After the upstream's 101: join the client and the upstream until either closes."""
        switch_protocols = getattr(response, "switch_protocols", None)
        if switch_protocols is None or not getattr(request, "upgrade", False):
            conn.abort()
            raise UpstreamError("the upstream answered 101 Switching Protocols unasked")

        def to_client(size: int) -> None:
            response.bytes_sent += size

        tunnel = Tunnel(to_client)
        try:
            switch_protocols(exchange.upgrade_headers, tunnel.client_end)
            conn.hand_over(tunnel.upstream_end)
            await tunnel.done
        except BaseException:
            tunnel.abort()
            conn.abort()
            raise
        tunnel.close()

    async def _send_body(
        self,
        conn: UpstreamConnection,
        head: bytes,
        body: RequestBody,
        chunked: bool,
        exchange: _Exchange,
    ) -> None:
        """Send the head and the body bytes already here in one write; a task streams the rest.

        On a retry, what the first attempt sent goes out again first.
        """
        parts = [head]
        if exchange.sent:
            parts.extend(exchange.sent)
        finished = exchange.body_finished
        # Take what has arrived without waiting: most bodies are here whole with the head.
        while not finished and (body.buffered or body.complete):
            chunk = await body.read()
            if not chunk:
                finished = True
                break
            exchange.record(parts, encode_chunk(chunk) if chunked else [chunk])
        if finished and not exchange.body_finished:
            if chunked:
                exchange.record(parts, [LAST_CHUNK])
            exchange.body_finished = True
        conn.writelines(parts)
        if not finished:
            conn.body_complete = False
            exchange.start_pump(_pump_body(conn, body, chunked, exchange))

    def _request_head(self, request: Request) -> tuple[list[str], str | None]:
        """The head for the upstream, but its framing and blank line; and X-Timeout's value."""
        target = request.target
        if target.startswith("/"):
            target = self._path_prefix + target
        elif "://" in target:  # absolute-form: the upstream gets origin-form
            rest = target.split("://", 1)[1]
            slash = rest.find("/")
            target = self._path_prefix + (rest[slash:] if slash >= 0 else "/")
        lines = [f"{request.method} {target} HTTP/1.1\r\n"]
        has_host = False
        upgrade: str | None = None
        listed: set[str] | None = None
        asked_timeout: str | None = None
        for name, value in request.headers:
            lowered = name.lower()
            if lowered in _NOT_FORWARDED or lowered.startswith("proxy-"):
                if lowered == "connection":
                    listed = _connection_tokens(value, listed)
                elif lowered == "upgrade":
                    upgrade = value
                continue
            if lowered == "host":
                has_host = True
            elif lowered == "x-timeout" and asked_timeout is None:
                asked_timeout = value
            lines.append(f"{name}: {value}\r\n")
        if listed is not None and not listed <= _CONNECTION_OPTIONS:
            lines[1:] = [
                f"{name}: {value}\r\n"
                for name, value in request.headers
                if not _is_hop_by_hop(name.lower(), listed)
            ]
        if not has_host:
            lines.append(f"Host: {self._authority}\r\n")
        # An upgrade (WebSocket) is forwarded only when the HTTP layer can hand the client's
        # connection over after a 101 (`Request.upgrade`, `Response.switch_protocols`); until
        # then it goes upstream as a plain request.
        if upgrade is not None and getattr(request, "upgrade", False):
            lines.append(f"Connection: Upgrade\r\nUpgrade: {upgrade}\r\n")
        return lines, asked_timeout

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


class _Forwarding:
    """One request proxied without a task (`HttpMode.answer_now`): its head and whole body go
    out in one write, the response is relayed by the upstream connection's callbacks (this is
    its `ResponseSink`), a stale pooled connection costs one retry on a new connection, and
    the deadline (`cancel`) or the client leaving (`abandon`) ends it early. A `_Relay`
    promoted to one went out as it came (`passed_on`): sent again, its answer's first read is
    offered to `take_whole` too."""

    __slots__ = (
        "_deadline",
        "_deadline_name",
        "_mode",
        "_parts",
        "_passed",
        "_passed_on",
        "_retry",
        "conn",
        "finished",
        "request",
        "response",
        "started",
    )

    def __init__(
        self,
        mode: HttpMode,
        request: Request,
        response: Response,
        started: float,
        parts: list[bytes],
        deadline_name: str,
        deadline: float,
        passed_on: bool = False,
    ) -> None:
        self._mode = mode
        self._passed_on = passed_on
        self._passed: PassedResponse | None = None
        self.request = request
        self.response = response
        self.started = started
        self._parts = parts
        self._deadline_name = deadline_name
        self._deadline = deadline
        self._retry: asyncio.Task[None] | None = None
        self.conn: UpstreamConnection | None = None
        self.finished = False

    def send_on(self, conn: UpstreamConnection) -> None:
        self.conn = conn
        conn.begin(
            self, self.request.method == "HEAD", self.take_whole if self._passed_on else None
        )
        conn.writelines(self._parts)

    def take_whole(self, data: bytes) -> bool | None:
        """The first read of the answer: when it is the whole of a simple response, keep it
        ready to pass on as it came (`on_end` sends it), less `Connection`, plus ours."""
        passed = self._mode._passthrough.pass_on(data)
        if passed is None:
            return None
        self._passed = passed
        return passed.upstream_keeps_alive

    # ResponseSink
    def on_head(self, status: int, headers: RawHeaders) -> None:
        if status == 101:
            return  # not asked for: on_upgrade turns it into a 502
        _relay_head(self.response, status, headers, self.started)

    def on_body(self, data: bytes) -> None:
        assert self.conn is not None
        _relay_body(self.response, self.conn, data)

    def on_end(self) -> None:
        self._settle()
        passed = self._passed
        if passed is None:
            self.response.end()
            return
        self._passed = None
        message = passed.message(_duration_field(time.perf_counter() - self.started))
        self.response.send_passthrough(passed.status, message, passed.body_length)

    def on_error(self, error: UpstreamError) -> None:
        if isinstance(error, UpstreamClosedError) and error.stale and self._retry is None:
            # The pooled connection had been closed by the upstream: the request never
            # reached it, and everything it needs is still here.
            self._retry = asyncio.get_running_loop().create_task(self._send_again())
            return
        self._settle()
        self._mode._upstream_failed(self.request, self.response, error, self.started)

    def on_upgrade(self) -> None:
        if self.conn is not None:
            self.conn.abort()
        self.on_error(UpstreamError("the upstream answered 101 Switching Protocols unasked"))

    async def _send_again(self) -> None:
        mode = self._mode
        try:
            conn = await mode._pool.connect()
        except OSError as error:
            self._settle()
            reason = mode._exit_reason or (
                f"cannot connect to the upstream {mode._url}: {error.strerror or error}"
            )
            mode._fail(self.request, self.response, 502, reason, self.started)
            return
        self.send_on(conn)

    # Ends that come from outside
    def cancel(self) -> None:
        """The deadline passed (exec_timeout, X-Timeout or write_timeout): 504, or cut off."""
        if self.finished:
            return
        self._stop()
        reason = f"{self._deadline_name} ({format_duration(self._deadline)}) exceeded"
        self._mode._fail(self.request, self.response, 504, reason, self.started)

    def abandon(self) -> None:
        """The client left: drop the upstream connection, whose answer nobody will read."""
        if not self.finished:
            self._stop()

    def _stop(self) -> None:
        self._settle()
        retry = self._retry
        if retry is not None and not retry.done():
            retry.cancel()
        conn = self.conn
        if conn is not None and conn.busy_with is self:
            conn.abort()

    def _settle(self) -> None:
        self.finished = True
        self._mode._deadlines.discard(self)


class _Exchange:
    """One request's trip to the upstream: the `ResponseSink` that writes to the client."""

    __slots__ = (
        "_loop",
        "_pump",
        "_sent_size",
        "body_finished",
        "conn",
        "done",
        "request",
        "response",
        "sent",
        "started",
        "upgrade_headers",
        "upgraded",
    )

    def __init__(
        self, request: Request, response: Response, started: float, loop: asyncio.AbstractEventLoop
    ) -> None:
        self.request = request
        self.response = response
        self.started = started
        self._loop = loop
        self.done: asyncio.Future[None] = loop.create_future()
        self.conn: UpstreamConnection | None = None
        self._pump: asyncio.Task[None] | None = None
        # The request body as sent so far (framed), kept while small enough to send again;
        # None once it is not.
        self.sent: list[bytes] | None = []
        self._sent_size = 0
        self.body_finished = False
        self.upgraded = False
        self.upgrade_headers: list[tuple[str, str]] = []

    def attach(self, conn: UpstreamConnection) -> None:
        self.conn = conn

    @property
    def replayable(self) -> bool:
        """Whether the request can be sent again exactly: all that went out is still here."""
        return self.sent is not None

    def record(self, parts: list[bytes] | None, framed: list[bytes]) -> None:
        """Note body bytes about to go out (and add them to `parts`, the next write)."""
        if parts is not None:
            parts.extend(framed)
        sent = self.sent
        if sent is None:
            return
        self._sent_size += sum(len(part) for part in framed)
        if self._sent_size > REPLAY_LIMIT:
            self.sent = None
        else:
            sent.extend(framed)

    def retry(self) -> None:
        """Forget the failed attempt (a stale pooled connection) before sending again."""
        self._stop_pump()
        self.done = self._loop.create_future()

    # ResponseSink
    def on_head(self, status: int, headers: RawHeaders) -> None:
        if status != 101:
            _relay_head(self.response, status, headers, self.started)
            return
        # A 101 is sent by the HTTP layer when it hands the client's connection over.
        returned = _returned_headers(headers)
        returned.append(("X-Duration-Seconds", f"{time.perf_counter() - self.started:f}"))
        protocol = next((v for n, v in headers if n.lower() == b"upgrade"), b"")
        returned += [("Connection", "Upgrade"), ("Upgrade", protocol.decode("latin-1"))]
        self.upgrade_headers = returned

    def on_body(self, data: bytes) -> None:
        assert self.conn is not None
        _relay_body(self.response, self.conn, data)

    def on_end(self) -> None:
        self.response.end()
        if not self.done.done():
            self.done.set_result(None)

    def on_error(self, error: UpstreamError) -> None:
        if not self.done.done():
            self.done.set_exception(error)

    def on_upgrade(self) -> None:
        self.upgraded = True
        if not self.done.done():
            self.done.set_result(None)

    # The request body stream
    def start_pump(self, pump: asyncio.Future[None] | object) -> None:
        self._pump = self._loop.create_task(pump)  # type: ignore[arg-type]
        self._pump.add_done_callback(self._pump_ended)

    def _pump_ended(self, pump: asyncio.Task[None]) -> None:
        if pump.cancelled():
            return
        error = pump.exception()
        if error is not None:
            # The client's body failed (read_timeout, disconnect): the upstream must not take
            # the part it got for a whole request.
            if self.conn is not None and self.conn.busy_with is self:
                self.conn.abort()
            if not self.done.done():
                self.done.set_exception(error)

    def _stop_pump(self) -> None:
        pump = self._pump
        self._pump = None
        if pump is not None and not pump.done():
            pump.cancel()

    def close(self) -> None:
        """Leave nothing behind: an unfinished connection is dropped, the body pump stopped."""
        pump = self._pump
        if pump is not None and not pump.done():
            self._stop_pump()
            # The upstream answered before taking the whole body; the rest is not wanted.
            self.request.body.discard()
        conn = self.conn
        if conn is not None and conn.busy_with is self:
            conn.abort()
        done = self.done
        if done.done() and not done.cancelled():
            done.exception()  # retrieved: a failure seen by nobody is not worth a warning


async def _pump_body(
    conn: UpstreamConnection, body: RequestBody, chunked: bool, exchange: _Exchange
) -> None:
    """Stream the request body to the upstream as it arrives, at the upstream's pace."""
    while chunk := await body.read():
        parts = encode_chunk(chunk) if chunked else [chunk]
        exchange.record(None, parts)
        conn.writelines(parts)
        if not conn.writable:
            await conn.drain()
        if conn.closed:
            return  # the exchange reports why
    if chunked:
        exchange.record(None, [LAST_CHUNK])
        conn.write(LAST_CHUNK)
    exchange.body_finished = True
    conn.body_complete = True


def _passes_as_received(headers: list[tuple[str, str]]) -> tuple[bool, str | None]:
    """Whether request headers need no change on the way upstream (a Host, no hop-by-hop
    field, no Expect), and the X-Timeout among them."""
    has_host = False
    asked_timeout: str | None = None
    for name, value in headers:
        lowered = name.lower()
        if lowered in _NOT_PASSED or lowered.startswith("proxy-"):
            return False, None
        if lowered == "host":
            has_host = True
        elif lowered == "x-timeout" and asked_timeout is None:
            asked_timeout = value
    return has_host, asked_timeout


class _Relay:
    """One whole request proxied with nothing made for it but this (`answer_whole`): the
    client's bytes go upstream as they came, and a simple whole answer comes back the same way
    (`take_whole`), written to the client's connection and reported to the ledger. Anything
    else (an answer that needs taking apart, a stale connection, the deadline) promotes it
    to a `_Forwarding` with a Request and a Response, which carries on as for `answer_now`."""

    __slots__ = (
        "_conn",
        "_forwarding",
        "_ledger",
        "_mode",
        "_passed",
        "raw",
        "request",
        "started",
        "upstream",
    )

    def __init__(
        self,
        mode: HttpMode,
        conn: HttpConnection,
        ledger: Ledger,
        request: _PassedRequest,
        raw: bytes,
    ) -> None:
        self._mode = mode
        self._conn = conn
        self._ledger = ledger
        self.request = request
        self.raw = raw
        self.started = time.perf_counter()
        self.upstream: UpstreamConnection | None = None
        self._passed: PassedResponse | None = None
        self._forwarding: _Forwarding | None = None

    def send_on(self, upstream: UpstreamConnection) -> None:
        self.upstream = upstream
        upstream.begin(self, False, self.take_whole)
        upstream.write_soon(self.raw, self._mode._writes)

    def take_whole(self, data: bytes) -> bool | None:
        passed = self._mode._passthrough.pass_on(data)
        if passed is None:
            self._promote()  # the parser takes it from here, for the _Forwarding
            return None
        self._passed = passed
        return passed.upstream_keeps_alive

    # ResponseSink: only on_end comes here, after take_whole; the rest promotes
    def on_end(self) -> None:
        passed = self._passed
        if passed is None:
            self._promote().on_end()
            return
        self._passed = None
        self._mode._deadlines.discard(self)
        conn = self._conn
        seconds = time.perf_counter() - self.started
        conn.write_soon(passed.message(_duration_field(seconds)), self._mode._writes)
        self._ledger.leave(self.request.line, passed.status, passed.body_length, seconds)
        conn.release()

    def on_head(self, status: int, headers: RawHeaders) -> None:
        self._promote().on_head(status, headers)

    def on_body(self, data: bytes) -> None:
        self._promote().on_body(data)

    def on_error(self, error: UpstreamError) -> None:
        self._promote().on_error(error)

    def on_upgrade(self) -> None:
        self._promote().on_upgrade()

    # Ends that come from outside
    def cancel(self) -> None:
        """The deadline passed: as `_Forwarding.cancel` (504, or cut off)."""
        self._promote().cancel()

    def abandon(self) -> None:
        """The client left (the connection's `Pending`)."""
        forwarding = self._forwarding
        if forwarding is not None:
            forwarding.response.abandon()
            return
        self._mode._deadlines.discard(self)
        upstream = self.upstream
        if upstream is not None and upstream.busy_with is self:
            upstream.abort()
        seconds = time.perf_counter() - self.started
        self._ledger.leave(self.request.line, 499, 0, seconds)
        self._conn.release(keep_open=False)

    def _promote(self) -> _Forwarding:
        """Make the Request and Response the general path needs, and hand over to it."""
        forwarding = self._forwarding
        if forwarding is not None:
            return forwarding
        mode = self._mode
        conn = self._conn
        raw = self.raw
        passed = self.request
        method, target = passed.line.method, passed.line.target
        body = RequestBody(conn, False, passed.content_length)
        body_bytes = raw[raw.find(HEAD_END) + 4 :]
        if body_bytes:
            body.feed(body_bytes)
        body.finish()
        path, query = split_target(target)
        request = Request(
            method,
            target,
            path,
            query,
            passed.headers,
            "1.1",
            True,
            body,
            content_length=passed.content_length,
            remote_addr=conn.remote_addr,
        )
        response = Response(conn, method, "1.1", True)
        forwarding = _Forwarding(
            mode, request, response, self.started, [raw], passed.timeout_name, passed.timeout, True
        )
        self._forwarding = forwarding
        forwarding.conn = self.upstream
        response.on_abandon(forwarding.abandon)
        response.when_done(self._promoted_done)
        mode._deadlines.discard(self)
        left = self.request.timeout - (time.perf_counter() - self.started)
        mode._deadlines.add(forwarding, max(left, 0.0))
        upstream = self.upstream
        if upstream is not None and upstream.busy_with is self:
            upstream.redirect(forwarding)
        return forwarding

    def _promoted_done(self) -> None:
        forwarding = self._forwarding
        assert forwarding is not None
        response = forwarding.response
        status = response.status if response.started else 499
        seconds = time.perf_counter() - self.started
        self._ledger.leave(self.request.line, status, response.bytes_sent, seconds)
        self._conn.release(response.keep_alive)


def _duration_field(seconds: float) -> bytes:
    """The X-Duration-Seconds line of a response passed on as it came."""
    units = _DURATION_FIELDS.units(seconds)
    return _DURATION_FIELDS.get(units) or _DURATION_FIELDS.write(units)


def _connection_tokens(value: str, listed: set[str] | None) -> set[str]:
    """Add the options of one Connection header to `listed`."""
    listed = set() if listed is None else listed
    for token in value.split(","):
        token = token.strip().lower()
        if token:
            listed.add(token)
    return listed


def _is_hop_by_hop(lowered: str, listed: set[str]) -> bool:
    return lowered in _NOT_FORWARDED or lowered.startswith("proxy-") or lowered in listed


def _relay_head(response: Response, status: int, raw: RawHeaders, started: float) -> None:
    """Start the client's response with the upstream's status and headers, plus ours."""
    seconds = b"%f" % (time.perf_counter() - started)
    encoded = _encoded_headers(raw)
    if encoded is not None:
        fields, length = encoded
        response.start_encoded(status, b"%bX-Duration-Seconds: %b\r\n" % (fields, seconds), length)
        return
    returned = _returned_headers(raw)
    returned.append(("X-Duration-Seconds", seconds.decode()))
    response.start(status, returned)


def _relay_body(response: Response, conn: UpstreamConnection, data: bytes) -> None:
    """Pass body bytes on; while the client's socket is full, stop reading the upstream."""
    if not response.write_nowait(data):
        conn.pause_reading()
        response.on_drain(conn.resume_reading)


def _encoded_headers(raw: RawHeaders) -> tuple[bytes, int | None] | None:
    """The upstream's response headers minus hop-by-hop ones, still encoded, and its
    Content-Length; None when `_returned_headers` must do it (a Connection header that lists
    other fields, an odd Content-Length)."""
    parts: list[bytes] = []
    length: int | None = None
    for name, value in raw:
        lowered = name.lower()
        if lowered in _NOT_RETURNED or lowered.startswith(b"proxy-"):
            if lowered == b"connection" and not _only_options(value):
                return None
            continue
        if lowered == b"content-length":
            if length is not None or not value.strip().isdigit():
                return None
            length = int(value)
            continue
        parts += (name, b": ", value, b"\r\n")
    return b"".join(parts), length


def _only_options(connection: bytes) -> bool:
    """Whether a Connection header names only options, not fields to drop."""
    if connection.lower() in _CONNECTION_OPTIONS_BYTES:
        return True  # the usual `keep-alive` or `close`
    return all(
        token.strip().lower() in _CONNECTION_OPTIONS_BYTES or not token.strip()
        for token in connection.split(b",")
    )


def _returned_headers(raw: RawHeaders) -> list[tuple[str, str]]:
    """The upstream's response headers minus hop-by-hop ones, as the HTTP layer takes them."""
    headers: list[tuple[str, str]] = []
    listed: set[bytes] | None = None
    for name, value in raw:
        lowered = name.lower()
        if lowered in _NOT_RETURNED or lowered.startswith(b"proxy-"):
            if lowered == b"connection":
                listed = listed or set()
                listed.update(token.strip().lower() for token in value.split(b","))
            continue
        headers.append((name.decode("latin-1"), value.decode("latin-1")))
    if listed:
        names = {token.decode("latin-1") for token in listed if token}
        headers = [(name, value) for name, value in headers if name.lower() not in names]
    return headers
