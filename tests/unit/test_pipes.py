"""read_waiting: what the pipe holds, in a buffer of exactly that size."""

import contextlib
import os
import tracemalloc
from collections.abc import Iterator

import pytest

from fwatchdog.process.pipes import read_waiting


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    read_fd, write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    yield read_fd, write_fd
    for fd in (read_fd, write_fd):
        with contextlib.suppress(OSError):
            os.close(fd)


def test_reads_what_is_waiting_up_to_the_limit(pipe: tuple[int, int]) -> None:
    read_fd, write_fd = pipe
    os.write(write_fd, b"x" * 1000)
    first = read_waiting(read_fd, 300)
    tracemalloc.start()
    try:
        rest = read_waiting(read_fd, 1 << 20)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (first, rest) == (b"x" * 300, b"x" * 700)
    # A buffer of the size it keeps, not a mebibyte shrunk to 700 bytes.
    assert peak < 64 * 1024


def test_nothing_waiting_raises_and_the_end_reads_empty(pipe: tuple[int, int]) -> None:
    read_fd, write_fd = pipe
    with pytest.raises(BlockingIOError):
        read_waiting(read_fd, 1 << 20)
    os.close(write_fd)
    assert read_waiting(read_fd, 1 << 20) == b""
