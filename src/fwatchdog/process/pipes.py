"""Moving bytes between the event loop and a function's pipes, with back-pressure.

Raw non-blocking file descriptors watched by the loop, rather than pipe transports: we own
each descriptor from `pipe2()` to `close()`, there is no second buffer in between, and a
reader can be paused the moment the client's socket is full.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import termios
from array import array
from collections.abc import Callable

DEFAULT_PIPE_SIZE = 64 * 1024
PIPE_SIZE = 1024 * 1024
# Reads of a default pipe's size at first: most functions' whole output, without allocating
# more. Once output fills the pipe, it is enlarged and read whole: each read then moves up to
# a mebibyte, and the loop's per-read costs (pausing and resuming readers when the client is
# full, a few system calls each) are paid four times less often than with 256 KiB reads.
READ_CHUNK = DEFAULT_PIPE_SIZE
BULK_READ_CHUNK = PIPE_SIZE
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


# FIONREAD's answer; one for the whole process, since only the loop's thread reads pipes.
_waiting = array("i", [0])


def read_waiting(fd: int, limit: int) -> bytes:
    """Up to `limit` bytes of what the pipe holds, in a buffer of exactly the size read.

    `os.read(fd, limit)` allocates `limit` bytes, then shrinks the buffer to what came. On a
    long stream the pieces that shrinking frees break glibc's heap into holes too small for
    the next mebibyte: a 2 GiB echo through `cat` now and then ended with 20-50 MiB of free,
    fragmented heap resident (2 MiB in use). Asking the pipe how much it holds first
    (FIONREAD, one system call) gives every buffer the size it keeps.
    """
    try:
        fcntl.ioctl(fd, termios.FIONREAD, _waiting, True)
        waiting = _waiting[0]
    except OSError:
        waiting = 0
    return os.read(fd, min(waiting, limit) if waiting > 0 else limit)


def enlarge_pipe(fd: int) -> None:
    """Fewer, larger reads and writes: the default 64 KiB pipe costs throughput."""
    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, F_SETPIPE_SZ, PIPE_SIZE)


class PipeReader:
    """Reads a non-blocking pipe and hands each chunk to `on_data`; `on_eof` at the end.

    With `probe_eof` set, a short read is followed by a second one, so that output that is
    already complete is delivered with `at_eof=True` (a small response can then go out in
    one write, with a Content-Length). A pipe that fills up is enlarged once.
    """

    __slots__ = (
        "_chunk",
        "_fd",
        "_grown",
        "_loop",
        "_on_data",
        "_on_eof",
        "_reading",
        "closed",
        "probe_eof",
    )

    def __init__(
        self,
        fd: int,
        on_data: Callable[[bytes, bool], None],
        on_eof: Callable[[], None],
        probe_eof: bool = False,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._fd = fd
        self._on_data = on_data
        self._on_eof = on_eof
        self._reading = False
        self._grown = False
        self._chunk = READ_CHUNK
        self.closed = False
        self.probe_eof = probe_eof

    def start(self) -> None:
        self.resume()

    def pause(self) -> None:
        if self._reading:
            self._reading = False
            self._loop.remove_reader(self._fd)

    def resume(self) -> None:
        if not self._reading and not self.closed:
            self._reading = True
            self._loop.add_reader(self._fd, self._on_readable)

    def _on_readable(self) -> None:
        try:
            data = read_waiting(self._fd, self._chunk)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            on_eof = self._on_eof
            self.close()
            on_eof()
            return
        if len(data) >= DEFAULT_PIPE_SIZE and not self._grown:
            self._grown = True
            enlarge_pipe(self._fd)
            self._chunk = BULK_READ_CHUNK
        at_eof = False
        if self.probe_eof and len(data) < self._chunk:
            try:
                more = read_waiting(self._fd, self._chunk)
            except (BlockingIOError, InterruptedError):
                more = None
            except OSError:
                more = b""
            if more == b"":
                at_eof = True
            elif more:
                data += more
        self._on_data(data, at_eof)
        if at_eof and not self.closed:
            on_eof = self._on_eof
            self.close()
            on_eof()

    def close(self) -> None:
        if not self.closed:
            self.pause()
            self.closed = True
            os.close(self._fd)
            # The callbacks are usually methods of the reader's owner, which holds the
            # reader: dropping them frees both at once rather than by the cycle collector.
            self._on_data = _ignore_data
            self._on_eof = _ignore_eof


def _ignore_data(data: bytes, at_eof: bool) -> None:
    return None


def _ignore_eof() -> None:
    return None


class PipeWriter:
    """Writes to a non-blocking pipe; `write` says when the caller must `drain` first.

    When the reader has gone (EPIPE) the writer is `broken` and further bytes are dropped:
    a function may legitimately stop reading its input early.
    """

    __slots__ = ("_fd", "_loop", "_pending", "_waiter", "broken", "closed")

    @property
    def fd(self) -> int:
        return self._fd

    def mark_broken(self) -> None:
        """The reader went away while bytes reached the pipe another way (splice)."""
        self._break()

    def __init__(self, fd: int) -> None:
        self._loop = asyncio.get_running_loop()
        self._fd = fd
        self._pending: memoryview | None = None
        self._waiter: asyncio.Future[None] | None = None
        self.broken = False
        self.closed = False

    def write(self, data: bytes | memoryview) -> bool:
        """Write what the pipe takes now; False when the rest waits and `drain` is due."""
        if self.broken or self.closed:
            return True
        try:
            written = os.write(self._fd, data)
        except (BlockingIOError, InterruptedError):
            written = 0
        except OSError:
            self._break()
            return True
        if written == len(data):
            return True
        self._pending = memoryview(data)[written:]
        self._loop.add_writer(self._fd, self._on_writable)
        return False

    def _on_writable(self) -> None:
        pending = self._pending
        if pending is None:
            return
        try:
            written = os.write(self._fd, pending)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._break()
            return
        if written < len(pending):
            self._pending = pending[written:]
            return
        self._pending = None
        self._loop.remove_writer(self._fd)
        self._wake()

    def _break(self) -> None:
        self.broken = True
        if self._pending is not None:
            self._pending = None
            self._loop.remove_writer(self._fd)
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def drain(self) -> None:
        """Wait until everything written so far has entered the pipe (or it broke)."""
        if self._pending is None:
            return
        self._waiter = self._loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self._pending is not None:
                self._pending = None
                self._loop.remove_writer(self._fd)
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._wake()


SPLICE_CHUNK = 1024 * 1024
SPLICE_FLAGS = os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK


class SpliceBlocked(Exception):
    """Neither end could move a byte right now; wait for readiness and retry."""


def splice_once(source_fd: int, target_fd: int, count: int) -> int:
    """One non-blocking splice of at most `count` bytes; 0 means the source reached its end.

    Raises SpliceBlocked when it would block and BrokenPipeError when the reader has gone.
    """
    try:
        return os.splice(source_fd, target_fd, min(count, SPLICE_CHUNK), flags=SPLICE_FLAGS)
    except (BlockingIOError, InterruptedError):
        raise SpliceBlocked from None


def wait_readable(fd: int, waiter: asyncio.Future[None]) -> None:
    """Resolve `waiter` once `fd` is readable (one shot)."""
    loop = waiter.get_loop()

    def ready() -> None:
        loop.remove_reader(fd)
        if not waiter.done():
            waiter.set_result(None)

    loop.add_reader(fd, ready)
    waiter.add_done_callback(lambda _: loop.remove_reader(fd))


def wait_writable(fd: int, waiter: asyncio.Future[None]) -> None:
    """Resolve `waiter` once `fd` is writable (one shot)."""
    loop = waiter.get_loop()

    def ready() -> None:
        loop.remove_writer(fd)
        if not waiter.done():
            waiter.set_result(None)

    loop.add_writer(fd, ready)
    waiter.add_done_callback(lambda _: loop.remove_writer(fd))


async def splice_file_into(file_fd: int, offset: int, count: int, writer: PipeWriter) -> bool:
    """Move `count` bytes of a file from `offset` into the writer's pipe, in the kernel.

    For a spooled request body: no byte passes through Python. Returns False when the pipe's
    reader went away first (a function may stop reading early; the writer is then broken).
    """
    pipe_fd = writer.fd
    loop = asyncio.get_running_loop()
    while count > 0 and not writer.closed:
        try:
            moved = os.splice(
                file_fd, pipe_fd, min(count, SPLICE_CHUNK), offset_src=offset, flags=SPLICE_FLAGS
            )
        except (BlockingIOError, InterruptedError):
            waiter: asyncio.Future[None] = loop.create_future()
            wait_writable(pipe_fd, waiter)
            await waiter
            continue
        except OSError:  # EPIPE: the reader is gone
            writer.mark_broken()
            return False
        if moved == 0:
            break  # the file is shorter than it was said to be
        offset += moved
        count -= moved
    return not writer.broken
