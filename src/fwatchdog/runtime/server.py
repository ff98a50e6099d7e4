"""The watchdog's life, top to bottom: bind, start the mode, write the lock file, serve,
drain on SIGTERM/SIGINT, exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import signal
import socket
import time

import uvloop

from fwatchdog.http.connection import Handler, HttpConnection, Limits, ServerState
from fwatchdog.modes import make_mode
from fwatchdog.modes.base import Mode
from fwatchdog.process.reaper import start_reaper
from fwatchdog.router import Health, Router
from fwatchdog.runtime.accept import Acceptor
from fwatchdog.runtime.primary_link import PRIMARY_GONE, PrimaryLink
from fwatchdog.runtime.workers import Workers, worker_count
from fwatchdog.settings.config import Config
from fwatchdog.settings.durations import format_duration
from fwatchdog.settings.errors import StartupError
from fwatchdog.telemetry.logs import Log
from fwatchdog.telemetry.metrics import Metrics

BACKLOG = 1024
# After a mode failed, how long requests in flight get to write their error responses.
FAIL_GRACE = 2.0
DEFAULT_IDLE_TIMEOUT = 60.0
# How long the primary waits for its workers to listen before it turns healthy without them.
WORKER_START_TIMEOUT = 10.0


def run(config: Config, log: Log, control_fd: int | None = None) -> int:
    """Serve until told to stop; returns the process exit code.

    `control_fd`: this process is a worker (workers.py), and this its socket to the primary.
    """
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            log.attach(runner.get_loop())
            try:
                return runner.run(Watchdog(config, log, control_fd).serve())
            finally:
                log.attach(None)
    except StartupError as error:
        log.error(f"fwatchdog: {error}")
        return 1
    except KeyboardInterrupt:
        return 130


def listening_socket(port: int, setting: str, group: str = "") -> socket.socket:
    """A dual-stack socket on all interfaces (IPv4 only where IPv6 is absent), like Go's `:port`.

    `group`: one of several sockets on the port (http_workers, SO_REUSEPORT), among which the
    kernel spreads connections by their addresses: "start" for the first, which needs the
    port free as a lone socket does (another watchdog's group would take it in otherwise),
    "join" for the others.
    """
    if group == "start":
        listening_socket(port, setting).close()
    try:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        address: tuple[str, int] = ("::", port)
    except OSError:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        address = ("0.0.0.0", port)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if group:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind(address)
    except OSError as error:
        sock.close()
        reason = "already in use" if error.errno == errno.EADDRINUSE else error.strerror
        raise StartupError(f"{setting}: cannot listen on port {port}: {reason}") from None
    sock.listen(BACKLOG)
    sock.setblocking(False)
    return sock


def _limits(config: Config) -> Limits:
    return Limits(
        read_timeout=config.read_timeout,
        idle_timeout=config.read_timeout or DEFAULT_IDLE_TIMEOUT,
    )


def _say_nothing(msg: str, /, **fields: object) -> None:
    pass


class Watchdog:
    """One run of the server, from bind to exit."""

    def __init__(self, config: Config, log: Log, control_fd: int | None) -> None:
        self.config = config
        self.log = log
        self.health = Health(config.lock_path, config.suppress_lock)
        self.metrics = Metrics()
        self._stop = asyncio.Event()
        self._hurry = asyncio.Event()
        self._stop_reason = ""
        self._control_fd = control_fd
        # A worker leaves the lifecycle's lines to the primary: one set per watchdog.
        self._say = log.info if control_fd is None else _say_nothing
        self._workers: Workers | None = None

    async def serve(self) -> int:
        if self._control_fd is not None:
            return await self._serve_as_worker(self._control_fd)
        config, log = self.config, self.log
        mode = make_mode(config, log)
        router = Router(config, mode, self.health, log, self.metrics)
        limits = _limits(config)
        function_state = ServerState()
        processes = worker_count(config)
        listener = listening_socket(config.port, "port", "start" if processes > 1 else "")
        function_server = await self._serve_on(listener, router, limits, function_state)
        metrics_state = ServerState()
        metrics_server = await self._serve_on(
            listening_socket(config.metrics_port, "metrics_port"),
            self.metrics,
            limits,
            metrics_state,
        )
        log.info(f"Watchdog mode: {config.mode}\tfprocess: {config.function_process!r}")
        log.info(
            f"Timeouts: read: {format_duration(config.read_timeout)} "
            f"write: {format_duration(config.write_timeout)} "
            f"hard: {format_duration(config.exec_timeout)} "
            f"health: {format_duration(config.healthcheck_interval)}"
        )
        log.info(f"Listening on port: {config.port}")
        start_reaper()  # orphaned grandchildren: PID 1's duty, or a subreaper's
        self._install_signal_handlers()
        try:
            exit_code = await self._serve_with_workers(
                processes, mode, router, function_server, function_state
            )
        finally:
            if self._workers is not None:
                self._workers.kill()
        metrics_server.close()
        metrics_state.closing = True
        metrics_state.close_idle()
        await router.stop()
        log.info(f"Exiting. Active connections: {router.in_flight}")
        return exit_code

    async def _serve_with_workers(
        self,
        processes: int,
        mode: Mode,
        router: Router,
        server: Acceptor,
        state: ServerState,
    ) -> int:
        """Start the workers (http_workers), the mode; serve; stop in order: the workers
        drain (or fail) with this process, and the mode (the child) stops after them."""
        if processes > 1:
            self.log.shared = True
            self._workers = Workers(processes - 1, self.log)
            self.metrics.add_peers(self._workers.snapshots)
            await self._workers.start()
            self.log.info(f"Serving in {processes} processes (http_workers)")
        workers = self._workers
        if not await self._start_mode(mode, router):
            if workers is not None:
                await workers.wait(self.config.write_timeout)
            await mode.stop()  # SIGTERM while the mode was still getting ready
            return 0
        if workers is not None:
            # Healthy means every process accepts: a client's keep-alive connections made
            # at once would otherwise all stay with the processes that were up.
            await workers.listening(WORKER_START_TIMEOUT)
        self._mark_healthy()
        if workers is not None:
            workers.ready()

        failure = await self._wait_for_stop(getattr(mode, "failed", None))
        if failure is not None:
            if workers is not None:
                workers.fail(failure)
            exit_code = await self._fail(failure, mode, router, server, state)
            if workers is not None:
                await workers.wait(FAIL_GRACE)
            return exit_code
        await self._drain(router, server, state)
        if workers is not None:
            # They drain on the same clock; a little longer for their last requests.
            await workers.wait(self.config.write_timeout + FAIL_GRACE)
        await mode.stop()
        return 0

    async def _serve_as_worker(self, control_fd: int) -> int:
        """A worker: serve the port beside the primary with the same mode, told by the
        primary when the upstream is ready or gone; drain on SIGTERM as the primary does."""
        config = self.config
        self.log.shared = True
        primary = PrimaryLink(socket.socket(fileno=control_fd), self.metrics.snapshot)
        mode = make_mode(config, self.log, primary)
        router = Router(config, mode, self.health, self.log, self.metrics)
        state = ServerState()
        # Ready to judge requests (jwt_auth's keys) before saying it listens: the primary
        # reports healthy once every process listens.
        await router.start()
        try:
            listener = listening_socket(config.port, "port", "join")
        except StartupError:
            await primary.listen(listening=False)
            raise
        server = await self._serve_on(listener, router, _limits(config), state)
        await primary.listen(listening=True)
        self._install_signal_handlers()
        if not await self._start_mode(mode):  # its router started before it listened
            await mode.stop()
            return 0
        self.health.started = True
        # What ends a worker comes from the primary: the child's exit, or its own.
        failure = await self._wait_for_stop(primary.failed)
        if failure is not None:
            if failure == PRIMARY_GONE:  # the primary cannot say it any more
                self.log.error(f"fwatchdog: worker process {os.getpid()}: {failure}; stopping")
            return await self._fail(failure, mode, router, server, state)
        await self._drain(router, server, state)
        await mode.stop()
        await router.stop()  # as the primary does: tracing's queued spans, jwt_auth's refresh
        return 0

    async def _start_mode(self, mode: Mode, router: Router | None = None) -> bool:
        """`mode.start()`, then the router's if given (jwt_auth's keys), unless SIGTERM/SIGINT
        comes first (False then)."""

        async def start_both() -> None:
            await mode.start()
            if router is not None:
                await router.start()

        starting = asyncio.ensure_future(start_both())
        stop = asyncio.ensure_future(self._stop.wait())
        await asyncio.wait({starting, stop}, return_when=asyncio.FIRST_COMPLETED)
        if starting.done():
            stop.cancel()
            starting.result()  # a StartupError goes on up
            return True
        starting.cancel()
        with contextlib.suppress(asyncio.CancelledError, StartupError):
            await starting
        return False

    async def _wait_for_stop(self, failed: asyncio.Future[str] | None) -> str | None:
        """Wait for a signal, or for the mode to fail (its reason); a signal wins a tie.

        Once shutdown has begun, a mode's failure (http mode's child exiting) no longer
        matters: the drain goes on for the requests in flight.
        """
        stop = asyncio.ensure_future(self._stop.wait())
        waits: set[asyncio.Future[object]] = {stop}  # type: ignore[arg-type]
        if failed is not None:
            waits.add(failed)  # type: ignore[arg-type]
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        if stop.done() or failed is None:
            return None
        stop.cancel()
        return failed.result()

    async def _fail(
        self,
        reason: str,
        mode: Mode,
        router: Router,
        server: Acceptor,
        state: ServerState,
    ) -> int:
        """The mode cannot serve any more (its long-lived process died): unhealthy at once,
        stop the mode, let requests in flight end, exit 1."""
        if self._control_fd is None:
            self.log.error(f"fwatchdog: stopping: {reason}")
        self.health.shutting_down = True
        self._remove_lock_file()
        server.close()
        state.closing = True
        state.close_idle()
        # Stopping the mode ends what the requests in flight wait for (http mode: the child's
        # process group), so they get their 502 now rather than at their timeout.
        await mode.stop()
        deadline = time.monotonic() + min(self.config.write_timeout, FAIL_GRACE)
        while router.in_flight > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        state.close_idle()
        if self._control_fd is None:
            self.log.error(f"fwatchdog: exiting: {reason}")
        return 1

    async def _serve_on(
        self, sock: socket.socket, handler: Handler, limits: Limits, state: ServerState
    ) -> Acceptor:
        def on_error(message: str) -> None:
            self.log.error(message)

        # Our own accept loop, not create_server's: see accept.py (descriptors running out).
        return Acceptor(sock, lambda: HttpConnection(handler, limits, state, on_error), on_error)

    def _mark_healthy(self) -> None:
        if self.config.suppress_lock:
            self.log.info(
                'Warning: "suppress_lock" is enabled. '
                "No automated health-checks will be in place for your function."
            )
        else:
            path = self.config.lock_path
            self.log.info(f"Writing lock-file to: {path}")
            try:
                os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
                with open(path, "w"):
                    pass
            except OSError as error:
                raise StartupError(
                    f"cannot write the lock file {path}: {error.strerror}; "
                    "set TMPDIR to a writable directory or suppress_lock=true"
                ) from None
        self.health.started = True

    def _install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._on_signal, signum)

    def _on_signal(self, signum: int) -> None:
        if self._stop.is_set():
            # A second signal (Ctrl-C twice): stop waiting out the interval and the drain.
            if self._workers is not None:
                self._workers.terminate()
            if not self._hurry.is_set():
                self._say(f"{signal.Signals(signum).name} again: exiting without draining")
                self._hurry.set()
            return
        self._stop_reason = signal.Signals(signum).name
        if self._workers is not None:
            self._workers.terminate()
        self.health.shutting_down = True
        self._remove_lock_file()
        self._stop.set()

    def _remove_lock_file(self) -> None:
        if self.config.suppress_lock or self._control_fd is not None:
            return
        self.log.info(f"Removing lock-file : {self.config.lock_path}")
        with contextlib.suppress(FileNotFoundError):
            os.remove(self.config.lock_path)

    async def _drain(self, router: Router, server: Acceptor, state: ServerState) -> None:
        """Serve on through `healthcheck_interval`, then stop accepting and let requests end."""
        config = self.config
        interval = config.healthcheck_interval
        self._say(f"{self._stop_reason}: no new connections in {format_duration(interval)}")
        # Serve on while the orchestrator's probe sees 503 and stops routing to us; every
        # answer says Connection: close, so keep-alive clients move to other replicas now
        # and none is left idle on a connection for the listener's close to cut.
        state.closing = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._hurry.wait(), interval)
        self._say(f"No new connections allowed, draining: {router.in_flight} requests")
        server.close()
        state.close_idle()
        deadline = time.monotonic() + config.write_timeout
        while time.monotonic() < deadline and not self._hurry.is_set():
            # First a turn of the loop: connections taken from the backlog start in it.
            await asyncio.sleep(0.02)
            state.close_idle()  # answers given while draining closed theirs already
            if router.in_flight == 0 and not state.settling():
                break
        state.close_idle()
