"""The one routing point: what every request goes through before and after its mode (probes,
refusals, max_inflight, the request log line and the metrics), decided once per request.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fwatchdog.http.request import Request
from fwatchdog.http.response import Response
from fwatchdog.modes.base import Mode, answer_now_of
from fwatchdog.runtime.deadlines import Deadlines
from fwatchdog.settings.config import Config
from fwatchdog.settings.durations import format_duration
from fwatchdog.telemetry.logs import Log, RequestLine
from fwatchdog.telemetry.metrics import Metrics
from fwatchdog.telemetry.tracing import from_environment as tracing_from_environment

if TYPE_CHECKING:
    from fwatchdog.auth import Authenticator
    from fwatchdog.auth.outcome import AuthResult

HEALTH_PATH = "/_/health"
READY_PATH = "/_/ready"
PROBE_METHODS = ("GET", "HEAD")
FUNCTION_METHODS = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"
TEXT_PLAIN = ("Content-Type", "text/plain; charset=utf-8")
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
    """The one point every request on the function port passes: it decides the route from
    the decoded path, answers probes, refuses what must not reach the mode (CONNECT, past
    max_inflight), hands the rest to the mode, and writes the log line and the metrics of
    each function request once, from what its response actually sent."""

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
        self.passes_raw_requests: bool = getattr(mode, "passes_raw_requests", False)
        self._auth: Authenticator | None = None
        if config.jwt_auth:
            from fwatchdog.auth import Authenticator  # its JOSE library only when asked for

            self._auth = Authenticator(config, log)
        self._tracing = tracing_from_environment(config, log)  # None unless OTEL_* ask

    async def start(self) -> None:
        """Ready what the rules need before the watchdog reports healthy (jwt_auth's keys)."""
        if self._auth is not None:
            await self._auth.start()

    async def stop(self) -> None:
        if self._auth is not None:
            await self._auth.stop()
        if self._tracing is not None:
            self._tracing.shutdown()  # the spans still queued, within FLUSH_SECONDS

    def serve(self, request: Request, response: Response) -> Coroutine[Any, Any, None] | None:
        """Route and answer `request` (HttpConnection's Handler): None once answered or
        once callbacks finish the answer, else the coroutine that answers it."""
        path = request.path
        if path == HEALTH_PATH:
            self._health_probe(request, response)
            return None
        if path == READY_PATH:
            if self._config.ready_path and self._ready_checks_pass(request):
                return self._ready_function(request, response)
            self._ready_probe_now(request, response)
            return None
        started = time.perf_counter()
        if self._tracing is not None:  # before the refusals, so that they are traced too
            self._tracing.start(request)
        auth = self._auth
        if auth is not None:
            result = auth.check(request.header("authorization"))
            if result.unknown_key:  # a key the issuer may just have added: worth a wait
                return self._authenticate_then_function(request, response, started)
            if not self._authenticated(request, response, result, started):
                return None
        if not self._admit(request, response, started):
            return None
        self.in_flight += 1
        answer_now = self._mode_answer_now
        if answer_now is not None:
            try:
                answered = answer_now(request, response)
            except BaseException:
                self.in_flight -= 1
                raise
            if answered:
                if response.finished:
                    self._finish(request, response, started)
                else:  # callbacks finish it (a proxied request): in flight until then
                    response.when_done(lambda: self._finish(request, response, started))
                return None
        return self._function(request, response, started)

    async def _authenticate_then_function(
        self, request: Request, response: Response, started: float
    ) -> None:
        auth = self._auth
        assert auth is not None
        result = await auth.check_waiting(request.header("authorization"))
        if not self._authenticated(request, response, result, started):
            return
        if not self._admit(request, response, started):
            return
        self.in_flight += 1
        await self._function(request, response, started)

    def _authenticated(
        self, request: Request, response: Response, result: AuthResult, started: float
    ) -> bool:
        """Let an accepted request on with `X-Auth-Seconds` (Go sets it for the function);
        answer a refused one here, with one log line saying ACCESS DENIED and why."""
        denial = result.denial
        if denial is None:
            request.replace_headers([("X-Auth-Seconds", result.x_auth_seconds)])
            return True
        request.body.discard()
        response.send(denial.status, denial.body, list(denial.headers))
        seconds = time.perf_counter() - started
        self._record(request, response, seconds, denial.reason, f"ACCESS DENIED ({denial.reason})")
        return False

    def _admit(self, request: Request, response: Response, started: float) -> bool:
        """Whether a function request may reach the mode; if not, it is answered and
        recorded here."""
        refused = ""
        limit = self._config.max_inflight
        if request.method == "CONNECT":
            # A 2xx would tell a client or a proxy in front that a tunnel is open.
            response.send(405, b"Method Not Allowed\n", [("Allow", FUNCTION_METHODS)])
        elif limit and self.in_flight >= limit:
            refused = "max_inflight reached"
            response.send_text(
                429, f"Concurrent request limit exceeded. Max concurrent requests: {limit}"
            )
        else:
            return True
        self._record(request, response, time.perf_counter() - started, refused)
        return False

    async def _function(self, request: Request, response: Response, started: float) -> None:
        try:
            await self._handle_within_write_timeout(request, response)
            if not response.finished:
                response.end()  # so the record below sees what the client gets
        finally:
            self._finish(request, response, started)

    def _finish(self, request: Request, response: Response, started: float) -> None:
        self.in_flight -= 1
        self._record(request, response, time.perf_counter() - started)

    async def _ready_function(self, request: Request, response: Response) -> None:
        """/_/ready answered by the function at `ready_path`, once the watchdog's own
        checks pass; like a probe, it is neither counted nor logged."""
        ready_path = self._config.ready_path
        request.path = request.target = ready_path
        request.query = ""
        await self._mode.handle(request, response)

    def _health_probe(self, request: Request, response: Response) -> None:
        if request.method not in PROBE_METHODS:
            response.send(405, b"Method Not Allowed\n", [("Allow", "GET, HEAD"), TEXT_PLAIN])
        elif self._health.healthy():
            response.send(200, b"OK", [TEXT_PLAIN])
        else:
            response.send(503, b"Service Unavailable\n", [TEXT_PLAIN])

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
            response.send(405, b"Method Not Allowed\n", [("Allow", "GET, HEAD"), TEXT_PLAIN])
        elif not self._health.healthy():
            response.send(503, b"Service Unavailable\n", [TEXT_PLAIN])
        elif max_inflight and self.in_flight >= max_inflight:
            response.send(429, b"Too Many Requests: max_inflight reached\n", [TEXT_PLAIN])
        else:
            response.send(200, b"", [TEXT_PLAIN])  # empty, as Go's

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

    def _record(
        self,
        request: Request,
        response: Response,
        seconds: float,
        refused: str = "",
        note: str = "",
    ) -> None:
        """The log line, metrics and span of a function request, from what its response sent;
        `refused`: why the watchdog answered it itself, `note`: what its log line says so."""
        status = response.status if response.started else 499  # 499: the client went away
        line = self.line_of(request, note)
        tracing = self._tracing
        trace = None if tracing is None else tracing.end(request, status, refused)
        self.record(line, status, response.bytes_sent, seconds, trace)

    def line_of(self, request: Request, note: str = "") -> RequestLine:
        """What the log line and metrics of a request need from it."""
        user_agent = request.user_agent
        probe = user_agent is not None and user_agent.startswith("kube-probe")
        call_id: str | None = None
        if self._config.log_callid:
            call_id = request.header("x-call-id") or "none"
        return RequestLine(request.method, request.target, call_id, not probe, note)

    def record(
        self,
        line: RequestLine,
        status: int,
        size: int,
        seconds: float,
        trace: tuple[str, str] | None = None,
    ) -> None:
        """The metrics and the log line (none for Kubernetes' probes) of an answered request;
        `trace`: its trace and span ids, for a JSON log line."""
        self._metrics.observe(line.method, status, seconds)
        if line.logged:
            self._log.request(line, status, size, seconds, trace)
