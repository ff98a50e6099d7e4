"""Afterburn mode: long-lived function processes that speak HTTP/1.1 over stdin and stdout.

`afterburn_processes` copies of `fprocess` start once. Each request waits (in order, within
its exec_timeout) for an idle one, goes into its stdin as an HTTP/1.1 request with a
`Content-Length`, and its answer is parsed from stdout and relayed as it comes; one exchange
per process at a time, so bytes of two requests never interleave on a pipe. A process whose
stream can no longer be trusted (garbage, an unframed response, `exec_timeout`, a client
that left before its whole request reached the function) is killed and replaced; one whose
client left later finishes its answer into nothing and serves on. One that dies on its own
fails the request (502) and the watchdog (`failed`).
"""

from __future__ import annotations

import asyncio
import os

from fwatchdog.http.request import BodyError, Request
from fwatchdog.http.response import Response
from fwatchdog.modes.afterburn.process import AfterburnProcess, ExchangeError, ProcessExitedError
from fwatchdog.process.spawn import Program, SpawnError
from fwatchdog.settings.config import Config
from fwatchdog.settings.durations import format_duration
from fwatchdog.settings.errors import StartupError
from fwatchdog.telemetry.logs import Log

# After a process's stdout ends, how long its exit status may take to be known.
EXIT_STATUS_WAIT = 1.0


class AfterburnMode:
    """A pool of long-lived processes, each carrying one request at a time.

    `failed` resolves with a one-line reason when a process dies on its own (or cannot be
    replaced); the server then turns unhealthy, drains and exits 1.
    """

    def __init__(self, config: Config, log: Log) -> None:
        self._config = config
        self._log = log
        self._program = Program(config.function_argv)
        self._idle: asyncio.Queue[AfterburnProcess] = asyncio.Queue()
        self._processes: set[AfterburnProcess] = set()
        self._unwatched: set[asyncio.Task[None]] = set()  # exchanges whose client has gone
        self._stopping = False
        self.failed: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    # --- life ------------------------------------------------------------------------------
    async def start(self) -> None:
        for _ in range(self._config.afterburn_processes):
            try:
                process = self._spawn()
            except SpawnError as error:
                await self.stop()
                raise StartupError(f"fprocess: {error}") from None
            self._log.info(
                f"Started fprocess (pid {process.pid}): {' '.join(self._config.function_argv)}"
            )
            self._idle.put_nowait(process)

    def _spawn(self) -> AfterburnProcess:
        config = self._config
        process = AfterburnProcess.spawn(
            self._program, os.environ, self._log, config.prefix_logs, config.log_buffer_size
        )
        self._processes.add(process)
        process.exited.add_done_callback(lambda _: self._on_exit(process))
        return process

    def _on_exit(self, process: AfterburnProcess) -> None:
        self._processes.discard(process)
        if process.retired or self._stopping:
            return
        self._fail(f"afterburn function (pid {process.pid}) exited: {process.exit_description()}")

    def _fail(self, reason: str) -> None:
        if not self.failed.done():
            self._log.error(reason)
            self.failed.set_result(reason)

    async def stop(self) -> None:
        self._stopping = True
        processes = list(self._processes)
        await asyncio.gather(*(process.terminate() for process in processes))

    # --- requests --------------------------------------------------------------------------
    async def handle(self, request: Request, response: Response) -> None:
        body: bytes | None = None
        if request.content_length is None and request.chunked:
            try:
                body = await request.body.read_all()  # de-chunked: the function needs a length
            except BodyError as error:
                self._refuse(request, response, 408, str(error))
                return
        # exec_timeout counts from here: waiting for an idle process is part of the request's
        # time, so a queued request never waits longer than exec_timeout for its answer.
        exec_timeout = self._config.exec_timeout
        loop = asyncio.get_running_loop()
        deadline = loop.time() + exec_timeout if exec_timeout > 0 else None
        try:
            async with asyncio.timeout_at(deadline):
                process = await self._idle.get()
        except TimeoutError:
            reason = (
                f"exec_timeout ({format_duration(exec_timeout)}) exceeded "
                "waiting for an idle function process"
            )
            self._refuse(request, response, 504, reason)
            return
        if process.dead or process.desynced:
            replaced = self._replace(process)
            if replaced is None:
                self._refuse(request, response, 502, "afterburn function process is not running")
                return
            process = replaced
        returned = False
        exchange = asyncio.ensure_future(process.exchange(request, response, body))
        try:
            async with asyncio.timeout_at(deadline):
                await asyncio.shield(exchange)
            if not process.desynced:
                self._idle.put_nowait(process)
                returned = True
        except asyncio.CancelledError:
            if process.request_delivered:
                # The client left (or write_timeout passed) once its whole request had reached
                # the function, often just as the answer ended: the rest of the answer, if any,
                # is read into nothing, and the process serves on instead of being replaced.
                process.drop_client()
                self._finish_unwatched(process, exchange, deadline)
                returned = True
            raise
        except TimeoutError:
            reason = f"exec_timeout ({format_duration(exec_timeout)}) exceeded: function killed"
            self._answer_failure(request, response, 504, reason)
        except ProcessExitedError as error:
            await self._wait_for_exit(process)
            reason = f"{error}: {process.exit_description()}"
            self._answer_failure(request, response, 502, reason)
            if not process.retired:
                self._fail(f"afterburn function (pid {process.pid}) died mid-request: {reason}")
                self._idle.put_nowait(process)  # dead: every waiting request gets its 502
                returned = True
        except ExchangeError as error:
            self._answer_failure(request, response, 502, str(error))
        except BodyError as error:
            self._answer_failure(request, response, 408, str(error))
        finally:
            if not returned:
                # A failed or timed-out exchange, or one abandoned before the function had the
                # whole request, leaves the stream in an unknown state: start over.
                if not exchange.done():
                    exchange.cancel()
                fresh = self._replace(process)
                if fresh is not None:
                    self._idle.put_nowait(fresh)

    def _finish_unwatched(
        self, process: AfterburnProcess, exchange: asyncio.Future[None], deadline: float | None
    ) -> None:
        """Let an exchange whose client has gone end (within its deadline), then give the
        process back, or replace it if the exchange failed."""

        async def finish() -> None:
            try:
                async with asyncio.timeout_at(deadline):
                    await asyncio.shield(exchange)
                healthy = not process.desynced
            except (TimeoutError, ExchangeError, BodyError):
                healthy = False
            if healthy:
                self._idle.put_nowait(process)
                return
            if not exchange.done():
                exchange.cancel()
            fresh = self._replace(process)
            if fresh is not None:
                self._idle.put_nowait(fresh)

        task = asyncio.get_running_loop().create_task(finish())
        self._unwatched.add(task)
        task.add_done_callback(self._unwatched.discard)

    def _replace(self, process: AfterburnProcess) -> AfterburnProcess | None:
        """Kill `process` and start another in its place.

        None when that is not possible (it died on its own, the watchdog is stopping or has
        failed): the dead process then goes back to the queue, so that every request waiting
        for one is answered 502 at once instead of waiting out write_timeout.
        """
        fresh = None
        if process.retired or not process.dead:
            process.kill()
            if not self._stopping and not self.failed.done():
                try:
                    fresh = self._spawn()
                except SpawnError as error:
                    self._fail(f"afterburn: cannot start a fresh function process: {error}")
        if fresh is None:
            self._idle.put_nowait(process)
            return None
        self._log.info(f"Started fprocess (pid {fresh.pid}) in place of pid {process.pid}")
        return fresh

    async def _wait_for_exit(self, process: AfterburnProcess) -> None:
        try:
            async with asyncio.timeout(EXIT_STATUS_WAIT):
                await asyncio.shield(process.exited)
        except TimeoutError:
            pass

    def _answer_failure(
        self, request: Request, response: Response, status: int, reason: str
    ) -> None:
        self._log.error(f"{request.method} {request.target}: {reason}")
        if response.started:
            response.abort()  # the client cannot be told any more
        else:
            request.body.discard()
            response.send_text(status, reason)

    def _refuse(self, request: Request, response: Response, status: int, reason: str) -> None:
        self._log.error(f"{request.method} {request.target}: {reason}")
        request.body.discard()
        response.send_text(status, reason)
