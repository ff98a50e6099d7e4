"""Bytes of any size, held in memory while small and in an unlinked file under $TMPDIR past that.

Serializing mode must have a whole request body before it starts the function, and the whole
output before it can answer: held in memory, a 1 GiB body and its echo took the watchdog to
2 GiB resident. Past `SPOOL_THRESHOLD` the bytes go to a file that has no name from the moment
it exists (O_TMPFILE, or a random name unlinked at once), so it is gone when its descriptor is
closed, whatever ends the request: the client leaving, exec_timeout, even the watchdog killed.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator

# Bodies and outputs up to this size stay in memory: a file costs a few system calls.
SPOOL_THRESHOLD = 1024 * 1024
READ_CHUNK = 1024 * 1024


def spool_directory() -> str:
    """Where spool files go: $TMPDIR, as for the lock file and multipart uploads."""
    return os.environ.get("TMPDIR") or "/tmp"


class SpoolError(Exception):
    """The spool file could not be made or written; the message names TMPDIR."""


class Spool:
    """Write bytes in; read them back in chunks, or hand the file to `sendfile`/`splice`."""

    __slots__ = ("_directory", "_fd", "_parts", "_threshold", "size")

    def __init__(self, directory: str, threshold: int = SPOOL_THRESHOLD) -> None:
        self._directory = directory
        self._threshold = threshold
        self._parts: list[bytes] = []
        self._fd = -1
        self.size = 0

    @property
    def in_memory(self) -> bool:
        return self._fd < 0

    def fileno(self) -> int:
        """The spool file's descriptor (only once it has one: not `in_memory`)."""
        return self._fd

    def write(self, data: bytes) -> None:
        """Keep `data`; raises SpoolError when the file cannot take it (a full disk)."""
        if not data:
            return
        self.size += len(data)
        if self._fd < 0:
            self._parts.append(data)
            if self.size <= self._threshold:
                return
            self._fd = _open_unlinked(self._directory)
            parts, self._parts = self._parts, []
            for part in parts:
                self._write_file(part)
            return
        self._write_file(data)

    def _write_file(self, data: bytes) -> None:
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError as error:
            raise SpoolError(
                f"cannot write a spool file in TMPDIR {self._directory}: {error.strerror}"
            ) from None

    def getvalue(self) -> bytes:
        """Everything written, as one bytes object (only while `in_memory`)."""
        if self._fd >= 0:
            raise RuntimeError("spool is in a file: read it in chunks")
        parts = self._parts
        if len(parts) != 1:
            parts[:] = [b"".join(parts)]
        return parts[0]

    def chunks(self, offset: int = 0, chunk: int = READ_CHUNK) -> Iterator[bytes]:
        """What was written from `offset` on, a chunk at a time."""
        if self._fd < 0:
            data = self.getvalue()
            for start in range(offset, len(data), chunk):
                yield data[start : start + chunk]
            return
        while offset < self.size:
            data = os.pread(self._fd, min(chunk, self.size - offset), offset)
            if not data:
                return
            offset += len(data)
            yield data

    def close(self) -> None:
        """Free the bytes: the file, having no name, goes with its descriptor."""
        self._parts = []
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)


def _open_unlinked(directory: str) -> int:
    """A new read-write file in `directory` that no path leads to."""
    flags = os.O_RDWR | os.O_CLOEXEC
    try:
        return os.open(directory, flags | os.O_TMPFILE, 0o600)
    except OSError as error:
        if not isinstance(error, (IsADirectoryError, NotADirectoryError)) and error.errno not in (
            errno.EOPNOTSUPP,  # this file system has no O_TMPFILE: fall through to a name
            errno.EINVAL,  # nor does this kernel
        ):
            raise SpoolError(
                f"cannot make a spool file in TMPDIR {directory}: {error.strerror}"
            ) from None
    for _ in range(100):
        path = os.path.join(directory, f".fwatchdog-spool-{os.urandom(8).hex()}")
        try:
            fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            continue
        except OSError as error:
            raise SpoolError(
                f"cannot make a spool file in TMPDIR {directory}: {error.strerror}"
            ) from None
        os.unlink(path)
        return fd
    raise SpoolError(f"cannot make a spool file in TMPDIR {directory}: every name was taken")
