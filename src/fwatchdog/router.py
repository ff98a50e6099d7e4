"""What every request goes through before and after its mode: probes, max_inflight, the
request log line and the metrics, each written once here from what the response actually sent.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass

from fwatchdog.http.connection import HttpConnection
from fwatchdog.http.request import Request, header_value
from fwatchdog.http.response import Response
from fwatchdog.modes.base import Mode, answer_known_of, answer_now_of, answer_whole_of
from fwatchdog.runtime.deadlines import Deadlines
from fwatchdog.settings.config import Config
from fwatchdog.settings.durations import format_duration
from fwatchdog.telemetry.logs import Log, RequestLine
from fwatchdog.telemetry.metrics import Metrics

HEALTH_PATH = "/_/health"
READY_PATH = "/_/ready"
PROBE_METHODS = ("GET", "HEAD")
WRITE_TIMEOUT_TICK = 0.05  # write_timeout fires at most this late


@dataclass(slots=True)
class Health:
    """Whether the watchdog should receive traffic: the lock file's and shutdown's view."""

    lock_path: str
    suppress_lock: bool
    started: bool = False
    shutting_down: bool = False

    def healthy(self) -> bool:
        if self.shutting_down or not self.started:
            return False
        return self.suppress_lock or os.path.exists(self.lock_path)


class Router:
    """Routes a request to a probe or to the mode, counting and logging function requests."""

    def __init__(self, config: Config, mode: Mode, health: Health, log: Log, metrics: Metrics):
        self._config = config
        self._mode = mode
        self._health = health
        self._log = log
        self._metrics = metrics
        self.in_flight = 0
        metrics.count_in_flight(lambda: self.in_flight)
        self._write_deadlines: Deadlines | None = None  # made on the loop, at first use
        self._mode_answer_now = answer_now_of(mode)
        self._mode_answer_whole = answer_whole_of(mode)
        self._mode_answer_known = answer_known_of(mode)

    def answer_whole(
        self,
        conn: HttpConnection,
        method: str,
        target: str,
        headers: list[tuple[str, str]],
        raw: bytes,
        content_length: int | None,
    ) -> bool:
        """The cheapest path (see HttpConnection): a whole request the mode can answer from
        bytes ready to go, before any Request or Response exists. Probes and requests past
        max_inflight go the usual way."""
        answer = self._mode_answer_whole
        if answer is None or target.startswith("/_/"):
            return False
        max_inflight = self._config.max_inflight
        if max_inflight and self.in_flight >= max_inflight:
            return False
        return answer(conn, method, target, headers, raw, content_length, self)

    def answer_known(self, conn: HttpConnection, data: bytes) -> bool:
        """The mode's answer again to a request it answered whole before, byte for byte
        (see HttpConnection); past max_inflight it goes the usual way."""
        answer = self._mode_answer_known
        if answer is None:
            return False
        max_inflight = self._config.max_inflight
        if max_inflight and self.in_flight >= max_inflight:
            return False
        return answer(conn, data, self)

    # Ledger, for modes answering whole requests
    def enter(self) -> None:
        self.in_flight += 1

    def leave(self, line: RequestLine, status: int, size: int, seconds: float) -> None:
        self.in_flight -= 1
        self.record(line, status, size, seconds)

    def answer_now(self, request: Request, response: Response) -> bool:
        """The synchronous path (see HttpConnection): probes, 429 and what the mode can
        answer without waiting; False sends the request down `__call__` instead."""
        path = request.path
        if path == HEALTH_PATH:
            self._health_probe(request, response)
            return True
        if path == READY_PATH:
            if self._config.ready_path:
                return False  # the function answers it
            self._ready_probe_now(request, response)
            return True
        max_inflight = self._config.max_inflight
        if max_inflight and self.in_flight >= max_inflight:
            started = time.perf_counter()
            self._refuse_past_max_inflight(response)
            self._record(request, response, time.perf_counter() - started)
            return True
        answer = self._mode_answer_now
        if answer is None:
            return False
        started = time.perf_counter()
        if not answer(request, response):
            return False
        if response.finished:
            self._record(request, response, time.perf_counter() - started)
            return True
        # Callbacks will finish it (a proxied request): in flight until then.
        self.in_flight += 1

        def finished() -> None:
            self.in_flight -= 1
            self._record(request, response, time.perf_counter() - started)

        response.when_done(finished)
        return True

    async def __call__(self, request: Request, response: Response) -> None:
        path = request.path
        if path == HEALTH_PATH:
            self._health_probe(request, response)
        elif path == READY_PATH:
            await self._ready_probe(request, response)
        else:
            await self._function(request, response)

    def _health_probe(self, request: Request, response: Response) -> None:
        if request.method not in PROBE_METHODS:
            response.send(405, b"Method Not Allowed\n", [("Allow", "GET, HEAD")])
        elif self._health.healthy():
            response.send(200, b"OK")
        else:
            response.send(503, b"Service Unavailable\n")

    async def _ready_probe(self, request: Request, response: Response) -> None:
        if self._config.ready_path and self._ready_checks_pass(request):
            request.path = self._config.ready_path
            request.target = self._config.ready_path
            request.query = ""
            await self._mode.handle(request, response)
        else:
            self._ready_probe_now(request, response)

    def _ready_checks_pass(self, request: Request) -> bool:
        max_inflight = self._config.max_inflight
        return (
            request.method in PROBE_METHODS
            and self._health.healthy()
            and not (max_inflight and self.in_flight >= max_inflight)
        )

    def _ready_probe_now(self, request: Request, response: Response) -> None:
        """/_/ready answered by the watchdog itself (no ready_path, or a check failed)."""
        max_inflight = self._config.max_inflight
        if request.method not in PROBE_METHODS:
            response.send(405, b"Method Not Allowed\n", [("Allow", "GET, HEAD")])
        elif not self._health.healthy():
            response.send(503, b"Service Unavailable\n")
        elif max_inflight and self.in_flight >= max_inflight:
            response.send(429, b"Too Many Requests: max_inflight reached\n")
        else:
            response.send(200, b"OK")

    async def _function(self, request: Request, response: Response) -> None:
        started = time.perf_counter()
        max_inflight = self._config.max_inflight
        self.in_flight += 1
        try:
            if max_inflight and self.in_flight > max_inflight:
                self._refuse_past_max_inflight(response)
            else:
                await self._handle_within_write_timeout(request, response)
            if not response.finished:
                response.end()  # so the record below sees what the client gets
        finally:
            self.in_flight -= 1
            self._record(request, response, time.perf_counter() - started)

    def _refuse_past_max_inflight(self, response: Response) -> None:
        limit = self._config.max_inflight
        response.send_text(429, f"Too Many Requests: max_inflight ({limit}) reached")

    async def _handle_within_write_timeout(self, request: Request, response: Response) -> None:
        """`write_timeout` bounds the whole response, as Go's http.Server.WriteTimeout does."""
        write_timeout = self._config.write_timeout
        task = asyncio.current_task()
        assert task is not None
        deadlines = self._write_deadlines
        if deadlines is None:
            deadlines = self._write_deadlines = Deadlines(tick=WRITE_TIMEOUT_TICK)
        deadlines.add(task, write_timeout)
        try:
            await self._mode.handle(request, response)
        except asyncio.CancelledError:
            if not deadlines.expired(task) or task.uncancel() > 0:
                raise  # not (only) ours: the client left
            reason = f"write_timeout ({format_duration(write_timeout)}) exceeded"
            self._log.error(f"{request.method} {request.target}: {reason}")
            if response.started:
                response.abort()  # the client cannot be told any more
            else:
                request.body.discard()
                response.keep_alive = False
                response.send_text(504, reason)
        finally:
            deadlines.discard(task)

    def _record(self, request: Request, response: Response, seconds: float) -> None:
        status = response.status if response.started else 499  # 499: the client went away
        line = self.line_of(request.method, request.target, request.headers)
        self.record(line, status, response.bytes_sent, seconds)

    def line_of(self, method: str, target: str, headers: list[tuple[str, str]]) -> RequestLine:
        """What the log line and metrics of a request need from it."""
        user_agent = header_value(headers, "user-agent")
        probe = user_agent is not None and user_agent.startswith("kube-probe")
        call_id: str | None = None
        if self._config.log_callid:
            call_id = header_value(headers, "x-call-id") or "none"
        return RequestLine(method, target, call_id, logged=not probe)

    def record(self, line: RequestLine, status: int, size: int, seconds: float) -> None:
        """The metrics and the log line (none for Kubernetes' probes) of an answered request."""
        self._metrics.observe(line.method, status, seconds)
        if line.logged:
            self._log.request(line, status, size, seconds)
