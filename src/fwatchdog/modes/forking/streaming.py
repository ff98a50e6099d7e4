"""Streaming mode (the default): one process per request, the body streamed through it.

The request body flows into stdin while stdout flows to the client, at the same time (full
duplex: `cat` echoes any size), each direction held back by the other end's pace. The status
is decided at the first byte of output: before it, a failure still becomes a 500 (504 for
`exec_timeout`, 408 for `read_timeout`) with a one-line reason instead of an empty 200.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from typing import Any

from fwatchdog.http.request import BodyError, ClientDisconnectedError, Request, RequestBody
from fwatchdog.http.response import Response
from fwatchdog.modes.forking.cgi_response import CgiHead, CgiHeaderError, CgiHeaderParser
from fwatchdog.modes.forking.classic import MarshalledRequest
from fwatchdog.modes.forking.common import ForkingMode
from fwatchdog.modes.forking.multipart import (
    Form,
    FormError,
    feed_off_loop,
    form_settings_apply,
    read_form,
)
from fwatchdog.process.pipes import PipeReader, PipeWriter
from fwatchdog.process.spawn import (
    STDIN_PREFILL_MAX,
    FunctionProcess,
    SpawnError,
    describe_exit,
    forward_to_log,
)
from fwatchdog.runtime.deadlines import Deadlines
from fwatchdog.settings.config import Config
from fwatchdog.settings.durations import format_duration
from fwatchdog.telemetry.logs import LineSplitter, Log

# After a kill, how long remaining output may take to arrive (a detached grandchild could
# hold the pipe open for ever).
DRAIN_AFTER_KILL = 1.0


class StreamingMode(ForkingMode):
    """Forks `fprocess` for every request and streams the body through it."""

    async def handle(self, request: Request, response: Response) -> None:
        if form_settings_apply(self._config, request):
            if self._config.multipart == "stream":
                await self._handle_form_stream(request, response)
            else:
                await self._handle_form(request, response)
            return
        config = self._config
        body = request.body
        # A small body that has fully arrived goes into stdin before the process starts:
        # no stdin pump, and the function finds its whole input at once.
        marshal = MarshalledRequest(request) if config.marshal_request else None
        prefill = None
        if marshal is None and not config.read_debug:
            prefill = body.take_all_if_complete(STDIN_PREFILL_MAX)
        stdin_length = None  # CONTENT_LENGTH: what stdin carries, when not the request's own
        if marshal is not None and request.content_length is not None:
            stdin_length = marshal.encoded_length(request.content_length)
        try:
            process = await self._spawner.spawn(
                self._program, self._environment.build(request, stdin_length), prefill
            )
        except SpawnError as error:
            request.body.discard()
            self._log.error(str(error))
            response.send_text(500, str(error))
            return
        run = _Run(process, request, response, config, self._log, self._deadlines, marshal)
        try:
            await run.until_done()
        finally:
            run.close()

    async def _handle_form(self, request: Request, response: Response) -> None:
        """multipart=true: the whole form decoded first, then the function, stdin empty."""
        config = self._config
        try:
            form = await read_form(request, config)
        except ClientDisconnectedError:
            raise
        except (BodyError, FormError) as error:
            self._refuse_form(request, response, error)
            return
        try:
            env = self._environment.build(request, 0)
            env.update(form.environment())
            try:
                process = await self._spawner.spawn(self._program, env, b"")
            except SpawnError as error:
                self._log.error(str(error))
                response.send_text(500, str(error))
                return
            run = _Run(process, request, response, config, self._log, self._deadlines)
            try:
                await run.until_done()
            finally:
                run.close()
        finally:
            form.close()

    async def _handle_form_stream(self, request: Request, response: Response) -> None:
        """multipart=stream: the function starts as the first file part begins, fed by it."""
        config = self._config
        body = request.body
        try:
            form = Form(
                request.header("content-type") or "",
                max_parts=config.multipart_max_parts,
                max_fields_size=config.multipart_max_fields_size,
                stream_first_file=True,
            )
        except FormError as error:
            self._refuse_form(request, response, error)
            return
        try:
            while form.stream_environment is None:
                chunk = await body.read()
                if not chunk:
                    form.finish()
                    break
                await feed_off_loop(form, chunk)
        except (BodyError, FormError) as error:
            form.close()
            if isinstance(error, ClientDisconnectedError):
                raise
            self._refuse_form(request, response, error)
            return
        except BaseException:  # cancelled: the client left, or write_timeout
            form.close()
            raise
        try:
            env = self._environment.build(request, 0)
            if form.stream_environment is None:  # no file part: as multipart=true
                env.update(form.environment())
                stdin: bytes | None = b""
            else:
                env.update(form.stream_environment)
                del env["CONTENT_LENGTH"]  # that part's length is not known in advance
                stdin = None
            try:
                process = await self._spawner.spawn(self._program, env, stdin)
            except SpawnError as error:
                body.discard()
                self._log.error(str(error))
                response.send_text(500, str(error))
                return

            async def feed(pipe: PipeWriter) -> None:
                await _feed_form(form, body, pipe, process)

            run = _Run(
                process, request, response, config, self._log, self._deadlines, feed_stdin=feed
            )
            try:
                await run.until_done()
            finally:
                run.close()
        finally:
            form.close()

    def _refuse_form(
        self, request: Request, response: Response, error: BodyError | FormError
    ) -> None:
        status = error.status if isinstance(error, FormError) else 408
        request.body.discard()
        self._log.error(f"{request.method} {request.target}: {error}")
        response.send_text(status, str(error))


class _Run:
    """One request's process and the three pumps around it."""

    def __init__(
        self,
        process: FunctionProcess,
        request: Request,
        response: Response,
        config: Config,
        log: Log,
        deadlines: Deadlines,
        marshal: MarshalledRequest | None = None,
        feed_stdin: Callable[[PipeWriter], Coroutine[Any, Any, None]] | None = None,
    ) -> None:
        self._process = process
        self._marshal = marshal
        # cgi_response: the header block is read before anything is sent.
        self._cgi = CgiHeaderParser() if config.cgi_response else None
        self._head_sent = False
        self._failed = False
        self._output_log = _debug_log(log, "stdout", config) if config.write_debug else None
        self._input_log = _debug_log(log, "stdin", config) if config.read_debug else None
        self._request = request
        self._response = response
        self._config = config
        self._log = log
        self._deadlines = deadlines
        self._loop = asyncio.get_running_loop()
        self._stdout_done = self._loop.create_future()
        self._content_type = config.content_type
        self._stdout = PipeReader(
            process.stdout_fd, self._on_output, self._on_output_end, probe_eof=True
        )
        self._stderr = forward_to_log(
            process.stderr_fd, log, "stderr", config.prefix_logs, config.log_buffer_size
        )
        self._stdin: PipeWriter | None = None
        self._feeder: asyncio.Task[None] | None = None
        if process.stdin_fd >= 0:
            self._stdin = PipeWriter(process.stdin_fd)
            feeding = (
                feed_stdin(self._stdin)
                if feed_stdin is not None
                else self._feed_stdin(self._stdin, request.body)
            )
            self._feeder = self._loop.create_task(feeding)
        # The exit is watched from the end of output on: by then most functions have exited,
        # and a waitpid spares the pidfd and its two epoll changes.
        self._exited: asyncio.Future[int] | None = None
        self._stdout.start()

    def _on_output(self, data: bytes, at_eof: bool) -> None:
        if self._output_log is not None:
            self._output_log.feed(data)
            if at_eof:
                self._output_log.close()
        response = self._response
        if not self._head_sent:
            head = self._cgi_head(data, at_eof) if self._cgi is not None else None
            if self._cgi is not None and head is None:
                return  # the header block is not complete yet (or was refused)
            self._head_sent = True
            if head is not None:
                response.start(head.status, head.headers_with_content_type(self._content_type))
                data = head.body
            else:
                response.start(200, [("Content-Type", self._content_type)])
            if at_eof:
                response.end(data)  # the whole output at once: one write, Content-Length
                return
            self._stdout.probe_eof = False
        if not response.write_nowait(data):
            self._stdout.pause()
            response.on_drain(self._stdout.resume)

    def _cgi_head(self, data: bytes, at_eof: bool) -> CgiHead | None:
        """The CGI head once complete; a refused block becomes a 502 and kills the function."""
        assert self._cgi is not None
        try:
            head = self._cgi.feed(data)
            if head is None and at_eof:
                head = self._cgi.end()
        except CgiHeaderError as error:
            self._cgi = None
            self._head_sent = True
            self._failed = True
            request = self._request
            self._log.error(f"{request.method} {request.target}: {error}")
            self._process.kill()
            self._stdout.close()
            self._on_output_end()
            request.body.discard()
            self._response.send_text(502, str(error))
            return None
        return head

    def _on_output_end(self) -> None:
        if self._output_log is not None:
            self._output_log.close()
        if not self._head_sent and self._cgi is not None and not self._stdout_done.done():
            # Output ended inside the header block: `end()` decides (the exit status may
            # still turn it into a 500 below, since nothing has been sent).
            self._on_output(b"", True)
        if not self._stdout_done.done():
            self._stdout_done.set_result(None)

    def _write_stdin(self, stdin: PipeWriter, chunk: bytes) -> bool:
        """One body chunk into stdin as the settings want it; False when drain is due."""
        if self._input_log is not None:
            self._input_log.feed(chunk)
        if self._marshal is not None:
            chunk = self._marshal.feed(chunk)
        return stdin.write(chunk)

    async def _feed_stdin(self, stdin: PipeWriter, body: RequestBody) -> None:
        transformed = self._marshal is not None or self._input_log is not None
        try:
            if self._marshal is not None and not stdin.write(self._marshal.start()):
                await stdin.drain()
            while True:
                spliced = None if transformed else await body.splice_into(stdin.fd)
                if spliced is not None:
                    if not spliced:
                        stdin.mark_broken()
                    break
                chunk = await body.read()
                if not chunk:
                    break
                if not self._write_stdin(stdin, chunk):
                    await stdin.drain()
                if stdin.broken:
                    break
            if self._marshal is not None and not stdin.write(self._marshal.end()):
                await stdin.drain()
            if self._input_log is not None:
                self._input_log.close()
            if stdin.broken:
                # The function stopped reading; the rest of the body is not wanted.
                body.discard()
        except BodyError:
            # Kill before the pipe closes: a cut-off body must never look like a whole one.
            self._process.kill()
            raise
        stdin.close()

    async def until_done(self) -> None:
        """Wait for output to end and the process to exit, within `exec_timeout`."""
        outcome = self._loop.create_future()

        def settle(_: object = None) -> None:
            if outcome.done():
                return
            feeder = self._feeder
            if (
                feeder is not None
                and feeder.done()
                and not feeder.cancelled()
                and feeder.exception() is not None
            ):
                outcome.set_exception(feeder.exception())  # type: ignore[arg-type]
            elif self._exited is not None and self._exited.done():
                outcome.set_result(self._exited.result())

        def watch_exit(_: object = None) -> None:
            self._exited = self._process.wait()
            self._exited.add_done_callback(settle)

        if self._feeder is not None:
            self._feeder.add_done_callback(settle)
        self._stdout_done.add_done_callback(watch_exit)
        exec_timeout = self._config.exec_timeout
        try:
            returncode = await self._deadlines.within(outcome, exec_timeout)
        except TimeoutError:
            self._process.kill()
            await self._drain_output()
            reason = f"exec_timeout ({format_duration(exec_timeout)}) exceeded: function killed"
            self._fail(504, reason)
            return
        except ClientDisconnectedError:
            raise
        except (BodyError, FormError) as error:
            self._process.kill()
            await self._drain_output()
            self._fail(error.status if isinstance(error, FormError) else 408, str(error))
            return
        if returncode != 0:
            self._fail(500, describe_exit(returncode))

    async def _drain_output(self) -> None:
        """After a kill, let what the function already wrote reach the client."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(DRAIN_AFTER_KILL):
                await asyncio.shield(self._stdout_done)

    def _fail(self, status: int, reason: str) -> None:
        if self._failed:
            return  # already answered (a refused CGI header block)
        request = self._request
        if self._response.started:
            self._log.error(f"{request.method} {request.target}: {reason} after output began")
        else:
            self._log.error(f"{request.method} {request.target}: {reason}")
            self._request.body.discard()
            self._response.send_text(status, reason)

    def close(self) -> None:
        """Leave nothing behind: process group, pipes, the stdin task."""
        feeder = self._feeder
        if feeder is not None:
            if not feeder.done():
                feeder.cancel()
            elif not feeder.cancelled():
                feeder.exception()  # seen: the answer was settled before the body failed
        if self._process.returncode is None:
            self._process.kill()
            self._process.wait()  # reaped whenever it goes, even if its output never ended
        if self._stdin is not None:
            self._stdin.close()
        self._stdout.close()
        # stderr closes by itself at EOF, so that the last lines are still logged.


async def _feed_form(
    form: Form, body: RequestBody, stdin: PipeWriter, process: FunctionProcess
) -> None:
    """multipart=stream: the streamed part into stdin, later parts to disk, then EOF.

    stdin closes only once the whole form has been read, so a function that reads it to the
    end finds every later part in its directory. A bad form kills the function first: a cut-off
    upload must never look like a whole one.
    """
    try:
        while True:
            for data in form.take_stdin():
                if not stdin.broken and not stdin.write(data):
                    await stdin.drain()
            chunk = await body.read()
            if not chunk:
                form.finish()
                break
            await feed_off_loop(form, chunk)
    except (BodyError, FormError):
        process.kill()
        raise
    stdin.close()


def _debug_log(log: Log, stream_name: str, config: Config) -> LineSplitter:
    """write_debug / read_debug: bytes to the log a line at a time, like stderr."""
    return LineSplitter(
        lambda line: log.function_line(stream_name, line, config.prefix_logs),
        config.log_buffer_size,
    )
