"""A whole file sent to a client with sendfile(2), driven by the loop's callbacks: no task.

For a large file the task, the path walk and the headers of the general path cost more than
the kernel's copy of a megabyte; `StaticMode.answer_whole` sends a large file whose head it
has cached with this instead. The head goes out on a duplicate of the client's socket (the
connection's own buffer being empty) with MSG_MORE, then the file from the page cache;
when the socket is full the loop says when it can take more. The connection waits for it
(`HttpConnection.hold`) and goes on once it is done (`release`).
"""

from __future__ import annotations

import asyncio
import os
import socket
import time

from fwatchdog.http.connection import HttpConnection
from fwatchdog.modes.base import Ledger
from fwatchdog.runtime.deadlines import Deadlines
from fwatchdog.telemetry.logs import RequestLine


class FileSender:
    """One file, head first, to one client; also the connection's `Pending` and a deadline's
    target (write_timeout: the client must take it in time, or is cut off)."""

    __slots__ = (
        "_conn",
        "_count",
        "_deadlines",
        "_file_fd",
        "_head",
        "_ledger",
        "_line",
        "_loop",
        "_offset",
        "_socket",
        "_socket_fd",
        "_started",
        "_waiting",
    )

    def __init__(
        self,
        conn: HttpConnection,
        socket_fd: int,
        file_fd: int,
        head: bytes,
        count: int,
        ledger: Ledger,
        deadlines: Deadlines,
        line: RequestLine,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._conn = conn
        self._socket_fd = socket_fd
        self._socket = socket.socket(fileno=socket_fd)
        self._file_fd = file_fd
        self._head = head
        self._offset = 0  # also the body bytes sent: the file is sent from its start
        self._count = count
        self._ledger = ledger
        self._deadlines = deadlines
        self._waiting = False
        self._started = time.perf_counter()
        self._line = line

    def start(self, write_timeout: float) -> None:
        self._conn.hold(self)
        self._ledger.enter()
        self._deadlines.add(self, write_timeout)
        self._send()

    def _send(self) -> None:
        """Send what the socket takes now; wait for it to take more, or finish."""
        try:
            while self._head:
                # MSG_MORE: the head waits for the file's first bytes, in the same segment.
                written = self._socket.send(self._head, socket.MSG_MORE)
                self._head = self._head[written:]
            while self._count > 0:
                sent = os.sendfile(self._socket_fd, self._file_fd, self._offset, self._count)
                if sent == 0:  # the file shrank: the promised length cannot be kept
                    self._end(complete=False)
                    return
                self._offset += sent
                self._count -= sent
        except (BlockingIOError, InterruptedError):
            if not self._waiting:
                self._waiting = True
                self._loop.add_writer(self._socket_fd, self._send)
            return
        except OSError:
            self._end(complete=False)  # the client went away
            return
        self._end(complete=True)

    def _end(self, complete: bool) -> None:
        if self._file_fd < 0:
            return
        if self._waiting:
            self._loop.remove_writer(self._socket_fd)
        self._socket.close()
        os.close(self._file_fd)
        self._file_fd = -1
        self._deadlines.discard(self)
        status = 499 if self._head else 200  # 499: not even the head went out
        seconds = time.perf_counter() - self._started
        self._ledger.leave(self._line, status, self._offset, seconds)
        if complete:
            self._conn.release()
        else:
            self._conn.abort()  # the client cannot tell where the body ends otherwise
            self._conn.release(keep_open=False)

    # The connection's Pending, and the deadline's target
    def abandon(self) -> None:
        """The client went away."""
        self._end(complete=False)

    def cancel(self) -> None:
        """write_timeout passed with the client still taking the file: cut it off."""
        self._end(complete=False)
