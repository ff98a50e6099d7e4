"""Accepting connections ourselves, so that running out of descriptors loses none of them.

uvloop's `create_server` leaves accepting to libuv, which meets EMFILE by closing a spare
descriptor, accepting every waiting connection and closing each at once: 152 of 200 clients
were reset, and nothing was logged. Here, as in Go's `http.Server`, accepting pauses instead
(5 ms, doubling up to 1 s) and the connections wait in the listen backlog until descriptors
are free again; the log says so once per burst, and once more when the burst is over.
Accepted sockets go to uvloop as transports (`connect_accepted_socket`), as before.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import time
from collections.abc import Callable

# Out of a resource that frees itself as connections close (any other error pauses too).
_OUT_OF_DESCRIPTORS = frozenset((errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM))
FIRST_PAUSE = 0.005
LONGEST_PAUSE = 1.0
# Connections taken per readiness event before other work gets its turn (libuv takes all).
ACCEPT_BATCH = 128
# A burst of shortages ends after this long without one: one log line at each end of it.
BURST_GAP = 1.0


class Acceptor:
    """The accept loop of one listening socket; `close()` stops it and closes the socket."""

    def __init__(
        self,
        sock: socket.socket,
        protocol_factory: Callable[[], asyncio.Protocol],
        log_error: Callable[[str], None],
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._sock = sock
        self._factory = protocol_factory
        self._log_error = log_error
        self._pause = 0.0  # the current pause while out of descriptors; 0 when accepting
        self._burst_started: float | None = None  # the first shortage of a burst
        self._last_shortage = 0.0
        self._pauses = 0
        self._resume_handle: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[object]] = set()
        self.closed = False
        sock.setblocking(False)
        self._loop.add_reader(sock.fileno(), self._accept_waiting)

    def _accept_waiting(self) -> None:
        accept = self._sock.accept
        for _ in range(ACCEPT_BATCH):
            try:
                conn, _address = accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as error:
                # Whatever it is, retrying at once would spin on a socket that stays readable.
                self._pause_accepting(error)
                return
            self._pause = 0.0
            self._start(conn)

    def _start(self, conn: socket.socket) -> None:
        """Give the socket to uvloop: everything happens in the coroutine's first step, but
        it must run as a task to finish."""
        task = self._loop.create_task(self._loop.connect_accepted_socket(self._factory, conn))
        self._tasks.add(task)
        task.add_done_callback(self._started)

    def _started(self, task: asyncio.Task[object]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self._log_error(f"accept: cannot serve a connection: {task.exception()}")

    def _pause_accepting(self, error: OSError) -> None:
        now = time.monotonic()
        if self._burst_started is None:
            self._burst_started = now
            self._pauses = 0
            if error.errno in _OUT_OF_DESCRIPTORS:
                self._log_error(
                    f"accept: out of file descriptors ({error.strerror}): new connections wait "
                    "in the backlog until some close; raise the limit (ulimit -n, RLIMIT_NOFILE)"
                )
            else:
                self._log_error(f"accept: {error}; retrying, new connections wait in the backlog")
            self._loop.call_later(BURST_GAP, self._end_of_burst)
        self._last_shortage = now
        self._pauses += 1
        self._pause = min(self._pause * 2, LONGEST_PAUSE) if self._pause else FIRST_PAUSE
        self._loop.remove_reader(self._sock.fileno())
        self._resume_handle = self._loop.call_later(self._pause, self._resume)

    def _resume(self) -> None:
        self._resume_handle = None
        if not self.closed:
            self._loop.add_reader(self._sock.fileno(), self._accept_waiting)
            self._accept_waiting()

    def _end_of_burst(self) -> None:
        """One line when a burst is over: BURST_GAP without running short."""
        started = self._burst_started
        if started is None:
            return
        quiet_since = time.monotonic() - self._last_shortage
        if quiet_since < BURST_GAP and not self.closed:
            self._loop.call_later(BURST_GAP - quiet_since, self._end_of_burst)
            return
        self._log_error(
            f"accept: descriptors sufficed again after {self._last_shortage - started:.2f}s "
            f"({self._pauses} pauses)"
        )
        self._burst_started = None

    def close(self) -> None:
        """Stop accepting; connections already accepted go on, and so do those waiting in
        the backlog (closing the socket would reset them after their clients had sent)."""
        if self.closed:
            return
        if self._resume_handle is not None:
            self._resume_handle.cancel()
        else:
            self._loop.remove_reader(self._sock.fileno())
            while self._accept_one():
                pass
        self.closed = True
        self._sock.close()

    def _accept_one(self) -> bool:
        try:
            conn, _address = self._sock.accept()
        except OSError:
            return False
        self._start(conn)
        return True
