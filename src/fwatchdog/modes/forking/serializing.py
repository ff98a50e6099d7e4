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
from collections.abc import Iterable, Iterator

from fwatchdog.http.request import BodyError, ClientDisconnectedError, Request
from fwatchdog.http.response import Response
from fwatchdog.modes.forking.cgi_response import (
    HEADER_BLOCK_LIMIT,
    CgiHeaderError,
    CgiHeaderParser,
)
from fwatchdog.modes.forking.classic import MarshalledRequest
from fwatchdog.modes.forking.common import ForkingMode
from fwatchdog.modes.forking.multipart import Form, FormError, form_settings_apply, read_form
from fwatchdog.modes.forking.spool import Spool, SpoolError, spool_directory
from fwatchdog.process.pipes import PipeReader, PipeWriter, splice_file_into
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

    def __init__(self, config: Config, log: Log) -> None:
        super().__init__(config, log)
        self._spool_directory = spool_directory()

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
                await self._run(request, answer, Spool(self._spool_directory), form)
            finally:
                form.close()
            return
        # Past SPOOL_THRESHOLD the body waits in a file: memory stays bounded for any size.
        body = Spool(self._spool_directory)
        try:
            try:
                while chunk := await request.body.read():
                    body.write(chunk)
            except ClientDisconnectedError:
                raise
            except (BodyError, SpoolError) as error:
                answer.fail(500, str(error))
                return
            await self._run(request, answer, body, None)
        finally:
            body.close()

    async def _run(self, request: Request, answer: _Answer, body: Spool, form: Form | None) -> None:
        config = self._config
        if config.read_debug:
            _log_lines(self._log, "stdin", body.chunks(), config)
        marshal: MarshalledRequest | None = None
        if form is not None:  # the body is in the form's variables and files: stdin is empty
            stdin_length = 0
            env = self._environment.build(request, 0)
            env.update(form.environment())
        else:
            marshal = MarshalledRequest(request) if config.marshal_request else None
            stdin_length = marshal.encoded_length(body.size) if marshal else body.size
            env = self._environment.build(request, stdin_length if stdin_length else None)
        prefill: bytes | None = None
        if stdin_length <= STDIN_PREFILL_MAX:
            # A body that fits the new pipe goes in before the process starts: no stdin pump.
            data = body.getvalue()
            prefill = MarshalledRequest.encode(request, data) if marshal else data
        output = Spool(self._spool_directory)
        try:
            try:
                # combine_output: stderr shares stdout's pipe, so the two interleave as written.
                process = await self._spawner.spawn(
                    self._program, env, prefill, stderr_to_stdout=config.combine_output
                )
            except SpawnError as error:
                answer.fail(500, str(error))
                return
            exec_timeout = config.exec_timeout
            stdin = None if prefill is not None else _Stdin(body, marshal)
            try:
                returncode = await self._deadlines.within(
                    _communicate(process, stdin, output, config, self._log), exec_timeout
                )
            except TimeoutError:
                limit = format_duration(exec_timeout)
                answer.fail(500, describe_exit(-9), f"exec_timeout ({limit}) exceeded")
                return
            except SpoolError as error:
                answer.fail(500, str(error))
                return
            await self._answer(answer, returncode, output)
        finally:
            output.close()

    async def _answer(self, answer: _Answer, returncode: int, output: Spool) -> None:
        config = self._config
        if config.write_debug:
            _log_lines(self._log, "stdout", output.chunks(), config)
        if returncode != 0:
            reason = describe_exit(returncode)
            if config.combine_output and output.size:
                await answer.fail_with_output(500, reason, output)
            else:
                answer.fail(500, reason)
            return
        if not config.cgi_response:
            await answer.send_output(200, [("Content-Type", config.content_type)], output, 0)
            return
        parser = CgiHeaderParser()
        try:
            head = None
            fed = 0
            for chunk in output.chunks(chunk=HEADER_BLOCK_LIMIT):
                fed += len(chunk)
                head = parser.feed(chunk)
                if head is not None:
                    break
            if head is None:
                head = parser.end()
        except CgiHeaderError as error:
            answer.fail(502, str(error))
            return
        headers = head.headers_with_content_type(config.content_type)
        await answer.send_output(head.status, headers, output, fed - len(head.body))


class _Stdin:
    """What goes into a function's stdin once it runs: the body, or marshal_request's JSON."""

    __slots__ = ("body", "marshal")

    def __init__(self, body: Spool, marshal: MarshalledRequest | None) -> None:
        self.body = body
        self.marshal = marshal

    async def write_into(self, writer: PipeWriter) -> None:
        """Everything, with back-pressure; stops early if the function stops reading."""
        body, marshal = self.body, self.marshal
        if marshal is None and not body.in_memory:
            await splice_file_into(body.fileno(), 0, body.size, writer)
            return
        pieces: Iterable[bytes] = body.chunks()
        if marshal is not None:
            pieces = _marshalled(marshal, pieces)
        for piece in pieces:
            if writer.broken:
                return
            if piece and not writer.write(piece):
                await writer.drain()


def _marshalled(marshal: MarshalledRequest, chunks: Iterable[bytes]) -> Iterator[bytes]:
    yield marshal.start()
    for chunk in chunks:
        yield marshal.feed(chunk)
    yield marshal.end()


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
        headers.append(("X-Duration-Seconds", f"{self._seconds():f}"))
        self._response.send(status, body, headers)

    def _seconds(self) -> float:
        return time.perf_counter() - self._started

    async def send_output(
        self, status: int, headers: list[tuple[str, str]], output: Spool, offset: int
    ) -> None:
        """The function's output from `offset` as the body: from memory, or by sendfile from
        its spool file, with its exact Content-Length either way."""
        if output.in_memory:
            self.send(status, headers, output.getvalue()[offset:] if offset else output.getvalue())
            return
        await self._send_file(status, headers, b"", output, offset)

    async def _send_file(
        self,
        status: int,
        headers: list[tuple[str, str]],
        prefix: bytes,
        output: Spool,
        offset: int,
    ) -> None:
        length = len(prefix) + output.size - offset
        headers.append(("X-Duration-Seconds", f"{self._seconds():f}"))
        headers.append(("Content-Length", str(length)))
        response = self._response
        response.start(status, headers)
        if prefix:
            await response.write(prefix)
        await response.sendfile(output.fileno(), offset, output.size - offset)
        response.end()

    def fail(self, status: int, reason: str, cause: str = "") -> None:
        """An error answer: Go's one-line body."""
        self._log_failure(reason, cause)
        self.send(status, [("Content-Type", self._config.content_type)], reason.encode())

    async def fail_with_output(self, status: int, reason: str, output: Spool) -> None:
        """An error answer with combine_output's output after Go's line."""
        self._log_failure(reason, "")
        headers = [("Content-Type", self._config.content_type)]
        prefix = reason.encode() + b"\n"
        if output.in_memory:
            self.send(status, headers, prefix + output.getvalue())
            return
        await self._send_file(status, headers, prefix, output, 0)

    def _log_failure(self, reason: str, cause: str) -> None:
        request = self._request
        logged = f"{cause}: {reason}" if cause else reason
        self._log.error(f"{request.method} {request.target}: {logged}")
        request.body.discard()


async def _communicate(
    process: FunctionProcess, stdin_data: _Stdin | None, output: Spool, config: Config, log: Log
) -> int:
    """Write stdin and close it, gather stdout into `output` until it closes, wait for the exit.

    `stdin_data` is None when the body went in with the spawn. stdout is read by the loop
    while stdin is still being written, so a function that answers before it has read
    everything cannot deadlock us. Leaves nothing running when it returns or is cancelled
    (exec_timeout, a lost client). Raises SpoolError when the output cannot be kept.
    """
    loop = asyncio.get_running_loop()
    stdout_closed: asyncio.Future[None] = loop.create_future()

    def on_stdout(data: bytes, _at_eof: bool) -> None:
        try:
            output.write(data)
        except SpoolError as error:
            stdout.close()
            if not stdout_closed.done():
                stdout_closed.set_exception(error)

    def on_stdout_end() -> None:
        if not stdout_closed.done():
            stdout_closed.set_result(None)

    # probe_eof: small output and its end are usually seen in one wake-up.
    stdout = PipeReader(process.stdout_fd, on_stdout, on_stdout_end, probe_eof=True)
    forward_to_log(process.stderr_fd, log, "stderr", config.prefix_logs, config.log_buffer_size)
    stdin = PipeWriter(process.stdin_fd) if stdin_data is not None else None
    stdout.start()
    try:
        if stdin is not None and stdin_data is not None:
            await stdin_data.write_into(stdin)
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
    return returncode


def _log_lines(log: Log, stream_name: str, data: Iterable[bytes], config: Config) -> None:
    """write_debug / read_debug: `data` to the log, a line at a time, like stderr."""
    splitter = LineSplitter(
        lambda line: log.function_line(stream_name, line, config.prefix_logs),
        config.log_buffer_size,
    )
    for chunk in data:
        splitter.feed(chunk)
    splitter.close()
