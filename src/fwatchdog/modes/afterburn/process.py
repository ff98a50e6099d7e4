"""One long-lived afterburn function process: HTTP/1.1 messages over its stdin and stdout.

stdout is the protocol, so unlike http mode's child (child.py) it is never logged: it is fed
to httptools' response parser, and the parsed response is relayed to the client as it comes.
stderr goes to the log line by line. Each process carries one exchange at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable, Mapping

import httptools

from fwatchdog.http.headers import end_to_end, end_to_end_raw, origin_form
from fwatchdog.http.request import ClientDisconnectedError, Request
from fwatchdog.http.response import Response
from fwatchdog.process.pipes import DEFAULT_PIPE_SIZE, PipeReader, PipeWriter
from fwatchdog.process.spawn import FunctionProcess, Program, describe_exit, forward_to_log
from fwatchdog.telemetry.logs import Log
from fwatchdog.upstream.client import delimited_by_eof

# Towards the function we write the framing ourselves (always a `Content-Length`) and answer
# 100-continue; back to the client the HTTP layer writes Date (Content-Length stays: it frames
# the body with it). Hop-by-hop fields are http/headers.py's business.
_NOT_FORWARDED = frozenset(("content-length", "expect"))
_NOT_RETURNED = frozenset((b"date",))
# After the function answered, how long the rest of the request body may take to enter its
# stdin before the stream is declared out of step.
BODY_SETTLE = 1.0
# A request up to this size (a default pipe's capacity, what readers such as Node's stream take
# in one read) is written head and body in one write(): into the empty pipe it goes whole, so
# a function that takes one read of stdin as the request gets all of it. Written in two,
# about half the small requests reached such a function without their body under load.
ONE_WRITE_MAX = DEFAULT_PIPE_SIZE
# After the process is told to stop (SIGTERM), how long before its group is killed.
STOP_GRACE = 2.0


class _NoClient:
    """Where the rest of an answer goes once its client has left: nowhere (`drop_client`)."""

    writable = True
    closing = False

    def write(self, data: bytes) -> None:
        return None

    def write_soon(self, data: bytes) -> None:
        return None

    def writelines(self, parts: list[bytes]) -> None:
        return None

    async def drain(self) -> None:
        return None

    def on_drain(self, callback: Callable[[], None]) -> None:
        callback()

    def abort(self) -> None:
        return None

    async def lend_socket(self) -> int:
        raise ClientDisconnectedError("the client has left")

    def switch_protocols(self, head: bytes, protocol: asyncio.Protocol) -> asyncio.Transport:
        raise ClientDisconnectedError("the client has left")


class ExchangeError(Exception):
    """The function's answer cannot be relayed; the process is no longer trustworthy."""


class ProcessExitedError(ExchangeError):
    """The function's stdout ended: the process died (or closed it) in the middle."""


class AfterburnProcess:
    """A spawned function with a parser on its stdout; `exchange` runs one request through it."""

    def __init__(self, process: FunctionProcess, log: Log, prefix_logs: bool, line_max: int):
        self._process = process
        self._log = log
        self._loop = asyncio.get_running_loop()
        self.exited: asyncio.Future[int] = process.wait()
        self.retired = False  # killed or stopped by us: its exit is not a failure
        self._stdin = PipeWriter(process.stdin_fd)
        self._stdout = PipeReader(process.stdout_fd, self._on_stdout, self._on_stdout_end)
        self._stderr = forward_to_log(process.stderr_fd, log, "stderr", prefix_logs, line_max)
        self._parser = httptools.HttpResponseParser(self)
        # The exchange in progress, if any.
        self._response: Response | None = None
        self._done: asyncio.Future[None] | None = None
        self._headers: list[tuple[bytes, bytes]] = []
        self._interim = False
        self._pending: list[bytes] = []
        self.desynced = False  # stdout carried bytes no request asked for
        # The whole request of the exchange in progress has been handed to stdin: if its
        # client leaves now, the answer can still be read to its end and the process kept.
        self.request_delivered = False
        self._stdout.start()

    @classmethod
    def spawn(
        cls, program: Program, env: Mapping[str, str], log: Log, prefix_logs: bool, line_max: int
    ) -> AfterburnProcess:
        """Start the program; raises process.SpawnError naming it when it cannot run."""
        return cls(
            FunctionProcess.spawn(program, env, die_with_watchdog=True), log, prefix_logs, line_max
        )

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def dead(self) -> bool:
        return self.exited.done() or self._stdout.closed

    def exit_description(self) -> str:
        code = self._process.returncode
        return "still running" if code is None else describe_exit(code)

    # --- one request ----------------------------------------------------------------------
    async def exchange(self, request: Request, response: Response, body: bytes | None) -> None:
        """Write the request, relay the response until it is complete.

        `body` is the whole body when the client sent it chunked (already de-chunked); with
        None the body is streamed from the request by its Content-Length. Raises
        ExchangeError (the caller replaces the process) and lets cancellation through.
        """
        self._response = response
        self._done = self._loop.create_future()
        self._parser = httptools.HttpResponseParser(self)
        self._headers = []
        self._pending = []
        head_only = request.method == "HEAD"
        length = len(body) if body is not None else (request.content_length or 0)
        head = _request_head(request, "GET" if head_only else request.method, length)
        feeder: asyncio.Task[None] | None = None
        self.request_delivered = False
        try:
            if body is None and length > 0 and len(head) + length <= ONE_WRITE_MAX:
                # Small: wait for the whole body, so that head and body go in one write.
                body = await _read_body(request, length)
            if body is not None or length == 0:
                if not self._stdin.write(head + body if body else head):
                    feeder = self._loop.create_task(self._stdin.drain())
                self.request_delivered = True
            else:
                feeder = self._loop.create_task(self._feed(head, request, length))
                # A body that fails (client gone, read_timeout) must end the wait at once.
                feeder.add_done_callback(self._on_feeder_done)
            await self._done
            if feeder is not None and not feeder.done():
                # The function answered; the body must still enter its stdin completely, or
                # what is left would be read as the next request.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(BODY_SETTLE):
                        await asyncio.shield(feeder)
                if not feeder.done():
                    raise ExchangeError("the function answered before reading the request body")
            if feeder is not None:
                feeder.result()
            if self._stdin.broken:
                raise ProcessExitedError("the function closed its stdin")
        finally:
            if feeder is not None and not feeder.done():
                feeder.cancel()
            self._response = None
            self._done = None
            self._stdout.resume()

    def drop_client(self) -> None:
        """The client left after its whole request reached the function: the rest of the
        answer is read to its end and dropped, so that the process can serve the next one."""
        if self._response is not None:
            self._response = Response(_NoClient(), "GET", "1.1", keep_alive=False)

    def _on_feeder_done(self, feeder: asyncio.Task[None]) -> None:
        done = self._done
        if feeder.cancelled() or done is None or done.done():
            return
        error = feeder.exception()
        if error is not None:
            done.set_exception(error)

    async def _feed(self, head: bytes, request: Request, length: int) -> None:
        stdin = self._stdin
        if not stdin.write(head):
            await stdin.drain()
        left = length
        while left > 0:
            chunk = await request.body.read()
            if not chunk:
                break
            left -= len(chunk)
            delivered = stdin.write(chunk)
            self.request_delivered = left <= 0
            if not delivered:
                await stdin.drain()
            if stdin.broken:
                return

    # --- stdout: the parser and its callbacks ---------------------------------------------
    def _on_stdout(self, data: bytes, _at_eof: bool) -> None:
        if self._done is None or self._done.done():
            self._log.error(f"afterburn: pid {self.pid} wrote to stdout between requests")
            self._stdout.pause()
            self.desynced = True
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._finish(ExchangeError("the function answered 101 Switching Protocols"))
        except httptools.HttpParserError as error:
            self._finish(ExchangeError(f"the function's output is not an HTTP response: {error}"))
        self._flush()

    def _on_stdout_end(self) -> None:
        self._finish(ProcessExitedError("the function's stdout ended (the process exited?)"))

    def on_message_begin(self) -> None:
        if self._done is None or self._done.done():
            self.desynced = True  # a second response after the one that was asked for
        self._headers = []

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        response = self._response
        if response is None or self._done is None or self._done.done():
            return
        status = self._parser.get_status_code()
        if status < 200:
            self._interim = True  # 100 Continue, 103 Early Hints: the real answer follows
            return
        if delimited_by_eof(status, self._headers):
            self._finish(
                ExchangeError(
                    f"the function's {status} response has neither Content-Length nor "
                    "Transfer-Encoding: chunked"
                )
            )
            return
        response.start(status, _returned_headers(self._headers))

    def on_body(self, body: bytes) -> None:
        if self._done is not None and not self._done.done():
            self._pending.append(body)

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        response = self._response
        done = self._done
        if response is None or done is None or done.done():
            return
        pending = self._pending
        self._pending = []
        response.end(pending[0] if len(pending) == 1 else b"".join(pending))
        done.set_result(None)
        self._stdout.pause()  # nothing more is due until the next request

    def _flush(self) -> None:
        """Relay the body bytes parsed from the last read; pause stdout if the client lags."""
        response = self._response
        if not self._pending or response is None or self._done is None or self._done.done():
            self._pending = []
            return
        pending = self._pending
        self._pending = []
        if not response.write_nowait(pending[0] if len(pending) == 1 else b"".join(pending)):
            self._stdout.pause()
            response.on_drain(self._resume_if_busy)

    def _resume_if_busy(self) -> None:
        if self._done is not None and not self._done.done():
            self._stdout.resume()

    def _finish(self, error: ExchangeError) -> None:
        done = self._done
        if done is not None and not done.done():
            done.set_exception(error)

    # --- end of life ----------------------------------------------------------------------
    def kill(self) -> None:
        """SIGKILL the whole group and close our pipe ends (stderr drains by itself)."""
        self.retired = True
        self._process.kill()
        self._close_pipes()

    async def terminate(self, grace: float = STOP_GRACE) -> None:
        """SIGTERM the group (its stdin closes too), then SIGKILL after `grace` seconds."""
        self.retired = True
        self._stdin.close()
        if not self.exited.done():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._process.pid, signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace):
                    await asyncio.shield(self.exited)
        self._process.kill()
        self._close_pipes()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                await asyncio.shield(self.exited)

    def _close_pipes(self) -> None:
        self._stdin.close()
        self._stdout.close()


async def _read_body(request: Request, length: int) -> bytes:
    """The whole Content-Length body of a small request; raises BodyError as `read` does."""
    parts: list[bytes] = []
    left = length
    while left > 0:
        chunk = await request.body.read()
        if not chunk:
            break
        parts.append(chunk)
        left -= len(chunk)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def _request_head(request: Request, method: str, content_length: int) -> bytes:
    """Request line with the origin-form target, the end-to-end headers, Content-Length."""
    lines = [f"{method} {origin_form(request.target)} HTTP/1.1\r\n"]
    lines.extend(
        f"{name}: {value}\r\n" for name, value in end_to_end(request.headers, _NOT_FORWARDED)
    )
    # Spelled exactly so: the published Node.js client looks it up case-sensitively.
    lines.append(f"Content-Length: {content_length}\r\n\r\n")
    return "".join(lines).encode("latin-1")


def _returned_headers(raw: list[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    """The function's response headers minus hop-by-hop ones, as the HTTP layer takes them."""
    return end_to_end_raw(raw, _NOT_RETURNED)
