"""Serializing mode: one process per request, the whole body in and the whole output out.

The body is read completely (within `read_timeout`, Content-Length or chunked alike), written to
the function's stdin, which is then closed; stdout is collected until it closes and the process
has exited. Only then is the status known, so the answer always has a Content-Length, and with
`cgi_response=true` the function's own header block can set status and headers after the fact:
a CGI program, or a WSGI app under `wsgiref.handlers.CGIHandler`, runs unchanged.

Error bodies are the Go of-watchdog's: `exit status N`, `signal: killed` (exec_timeout), or
the `exec: "name": ...` line for a program that cannot start, all as 500.
"""

from __future__ import annotations

import asyncio
import time

from fwatchdog.http.request import BodyError, ClientDisconnectedError, Request
from fwatchdog.http.response import Response
from fwatchdog.modes.forking.cgi_response import CgiHeaderError, CgiHeaderParser
from fwatchdog.modes.forking.classic import MarshalledRequest
from fwatchdog.modes.forking.common import ForkingMode
from fwatchdog.modes.forking.multipart import Form, FormError, form_settings_apply, read_form
from fwatchdog.process.pipes import PipeReader, PipeWriter
from fwatchdog.process.spawn import (
    STDIN_PREFILL_MAX,
    FunctionProcess,
    SpawnError,
    describe_exit,
    forward_to_log,
)
from fwatchdog.settings.config import Config
from fwatchdog.settings.durations import format_duration
from fwatchdog.telemetry.logs import LineSplitter, Log


class SerializingMode(ForkingMode):
    """Forks `fprocess` for every request with the whole body, and answers with its output."""

    async def handle(self, request: Request, response: Response) -> None:
        started = time.perf_counter()
        answer = _Answer(request, response, self._config, self._log, started)
        if form_settings_apply(self._config, request):
            try:
                form = await read_form(request, self._config)
            except ClientDisconnectedError:
                raise
            except BodyError as error:
                answer.fail(500, str(error))
                return
            except FormError as error:
                answer.fail(error.status, str(error))
                return
            try:
                await self._run(request, answer, b"", form)
            finally:
                form.close()
            return
        try:
            body = await request.body.read_all()
        except ClientDisconnectedError:
            raise
        except BodyError as error:
            answer.fail(500, str(error))
            return
        await self._run(request, answer, body, None)

    async def _run(self, request: Request, answer: _Answer, body: bytes, form: Form | None) -> None:
        config = self._config
        if config.read_debug:
            _log_lines(self._log, "stdin", body, config)
        if form is not None:  # the body is in the form's variables and files: stdin is empty
            stdin_data = b""
            env = self._environment.build(request, 0)
            env.update(form.environment())
        else:
            marshal = config.marshal_request
            stdin_data = MarshalledRequest.encode(request, body) if marshal else body
            env = self._environment.build(request, len(stdin_data) if stdin_data else None)
        try:
            # A body that fits the new pipe goes in before the process starts: no stdin pump.
            prefill = stdin_data if len(stdin_data) <= STDIN_PREFILL_MAX else None
            # combine_output: stderr shares stdout's pipe, so the two interleave as written.
            process = await self._spawner.spawn(
                self._program, env, prefill, stderr_to_stdout=config.combine_output
            )
        except SpawnError as error:
            answer.fail(500, str(error))
            return
        exec_timeout = config.exec_timeout
        try:
            stdin = None if prefill is not None else stdin_data
            returncode, output = await self._deadlines.within(
                _communicate(process, stdin, config, self._log), exec_timeout
            )
        except TimeoutError:
            limit = format_duration(exec_timeout)
            answer.fail(500, describe_exit(-9), f"exec_timeout ({limit}) exceeded")
            return
        if config.write_debug:
            _log_lines(self._log, "stdout", output, config)
        if returncode != 0:
            reason = describe_exit(returncode)
            answer.fail(500, reason, extra=output if config.combine_output else b"")
            return
        if not config.cgi_response:
            answer.send(200, [("Content-Type", config.content_type)], output)
            return
        parser = CgiHeaderParser()
        try:
            head = parser.feed(output) or parser.end()
        except CgiHeaderError as error:
            answer.fail(502, str(error))
            return
        answer.send(head.status, head.headers_with_content_type(config.content_type), head.body)


class _Answer:
    """Sends the one response a request gets, with X-Duration-Seconds measured from the start."""

    def __init__(
        self, request: Request, response: Response, config: Config, log: Log, started: float
    ) -> None:
        self._request = request
        self._response = response
        self._config = config
        self._log = log
        self._started = started

    def send(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        seconds = time.perf_counter() - self._started
        headers.append(("X-Duration-Seconds", f"{seconds:f}"))
        self._response.send(status, body, headers)

    def fail(self, status: int, reason: str, cause: str = "", extra: bytes = b"") -> None:
        """An error answer: Go's one-line body (`extra` after it: combine_output's output)."""
        request = self._request
        logged = f"{cause}: {reason}" if cause else reason
        self._log.error(f"{request.method} {request.target}: {logged}")
        request.body.discard()
        body = reason.encode()
        if extra:
            body += b"\n" + extra
        self.send(status, [("Content-Type", self._config.content_type)], body)


async def _communicate(
    process: FunctionProcess, stdin_data: bytes | None, config: Config, log: Log
) -> tuple[int, bytes]:
    """Write stdin and close it, gather stdout until it closes, wait for the exit.

    `stdin_data` is None when the body went in with the spawn. stdout is read by the loop
    while stdin is still being written, so a function that answers before it has read
    everything cannot deadlock us. Leaves nothing running when it returns or is cancelled
    (exec_timeout, a lost client).
    """
    loop = asyncio.get_running_loop()
    parts: list[bytes] = []
    stdout_closed: asyncio.Future[None] = loop.create_future()

    def on_stdout(data: bytes, _at_eof: bool) -> None:
        parts.append(data)

    def on_stdout_end() -> None:
        if not stdout_closed.done():
            stdout_closed.set_result(None)

    # probe_eof: small output and its end are usually seen in one wake-up.
    stdout = PipeReader(process.stdout_fd, on_stdout, on_stdout_end, probe_eof=True)
    forward_to_log(process.stderr_fd, log, "stderr", config.prefix_logs, config.log_buffer_size)
    stdin = PipeWriter(process.stdin_fd) if stdin_data is not None else None
    stdout.start()
    try:
        if stdin is not None:
            if stdin_data and not stdin.write(stdin_data):
                await stdin.drain()
            stdin.close()
        await stdout_closed
        # Watched from here, as in streaming mode: most functions have exited by now, and
        # then a waitpid collects the status without a pidfd.
        returncode = await process.wait()
    finally:
        if stdin is not None:
            stdin.close()
        stdout.close()
        if process.returncode is None:
            process.kill()
            process.wait()  # reaped whenever it goes, even if its output never ended
    return returncode, b"".join(parts)


def _log_lines(log: Log, stream_name: str, data: bytes, config: Config) -> None:
    """write_debug / read_debug: `data` to the log, a line at a time, like stderr."""
    splitter = LineSplitter(
        lambda line: log.function_line(stream_name, line, config.prefix_logs),
        config.log_buffer_size,
    )
    splitter.feed(data)
    splitter.close()
