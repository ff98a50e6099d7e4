"""Small hot files kept in memory, and how we know they are still what is on disk.

Checking a cached file with stat(2) on every request cost as much as the rest of answering
it. The kernel tells us instead: inotify watches every directory from the root down to each
cached file, and any change in any of them (write, attributes, rename, delete, a symbolic link
swapped by an atomic deploy) empties the cache. Changes that inotify cannot see (a hard link
written through another directory, a network file system changed by another host) are caught
by the stat that each entry gets again once a second. Where inotify is not available, every
use is checked with stat, as before.

The event loop's reader on the inotify descriptor is not enough by itself: epoll reports ready
descriptors in no order we control (a socket still on its ready list from the previous read
comes first), so a request sent after a change can be read, and answered, in the same loop
iteration as the change's event but before its reader runs. So an entry trusted on inotify's
word is only trusted after a poll(0) of the descriptor finds no event waiting (a system call
that costs a fraction of a stat).
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import select
from collections import OrderedDict
from dataclasses import dataclass

from fwatchdog.modes.static.headers import Validators

CACHE_BYTES = 64 * 1024 * 1024
CACHE_ENTRIES = 4096
# An entry trusted on inotify's word is checked with stat again after at most this long.
RECHECK_SECONDS = 1.0

# <sys/inotify.h>
IN_MODIFY = 0x002
IN_ATTRIB = 0x004
IN_CLOSE_WRITE = 0x008
IN_MOVED_FROM = 0x040
IN_MOVED_TO = 0x080
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_DELETE_SELF = 0x400
IN_MOVE_SELF = 0x800
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC
WATCHED_EVENTS = (
    IN_MODIFY
    | IN_ATTRIB
    | IN_CLOSE_WRITE
    | IN_MOVED_FROM
    | IN_MOVED_TO
    | IN_CREATE
    | IN_DELETE
    | IN_DELETE_SELF
    | IN_MOVE_SELF
)

Identity = tuple[int, int, int, int]


def identity_of(st: os.stat_result) -> Identity:
    """What changes when a file does: inode, device, size, modification time."""
    return (st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns)


@dataclass(slots=True)
class FileFacts:
    """What a response needs to know about one version of a file."""

    validators: Validators
    content_type: str

    def headers(self) -> list[tuple[str, str]]:
        validators = self.validators
        return [
            ("Content-Type", self.content_type),
            ("Last-Modified", validators.last_modified),
            ("ETag", validators.etag),
            ("Accept-Ranges", "bytes"),
        ]

    def not_modified_headers(self) -> list[tuple[str, str]]:
        """What a 304 says of the file: its validators."""
        validators = self.validators
        return [("ETag", validators.etag), ("Last-Modified", validators.last_modified)]


@dataclass(slots=True)
class CachedFile:
    """A small file's bytes and the identity that proves they are still what is on disk."""

    path: bytes
    identity: Identity
    facts: FileFacts
    body: bytes
    head_200: bytes  # the status line and headers of a 200, Date and blank line excepted
    head_304: bytes  # the same for a 304 (a client revalidating its copy)
    checked: int = -1  # the FileCache tick of the last check (-1: check at next use)


class _Inotify:
    """The three inotify calls, through libc (the standard library has no binding)."""

    def __init__(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)  # the C library Python itself runs on
        self._add_watch = libc.inotify_add_watch
        self._add_watch.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32)
        self.fd = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")

    def add_watch(self, directory: bytes) -> bool:
        return bool(self._add_watch(self.fd, directory, WATCHED_EVENTS) >= 0)

    def drain(self) -> bool:
        """Read and drop every queued event (which one it was does not matter here); True if
        there was any."""
        drained = False
        while True:
            try:
                if not os.read(self.fd, 64 * 1024):
                    return drained
            except (BlockingIOError, InterruptedError):
                return drained
            drained = True

    def close(self) -> None:
        os.close(self.fd)


class FileCache:
    """Hot files by request path (small ones with their bytes, large ones with their head only),
    oldest dropped first; trusted while nothing changed."""

    def __init__(self, max_bytes: int = CACHE_BYTES, max_entries: int = CACHE_ENTRIES) -> None:
        self._entries: OrderedDict[str, CachedFile] = OrderedDict()
        self._bytes = 0
        self._max_bytes = max_bytes
        self._max_entries = max_entries
        self._root = b""
        self._inotify: _Inotify | None = None
        # Asked, on every hit, whether inotify has an event the loop has not read yet: an epoll
        # of its own costs less per call than poll(2).
        self._pending: select.epoll | None = None
        self._watched: set[bytes] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tick = 0
        self._ticker: asyncio.TimerHandle | None = None

    def watch(self, root: bytes) -> bool:
        """Have inotify vouch for entries under `root` (call on the loop); False where the
        kernel or its limits refuse, and every use is checked with stat instead."""
        try:
            inotify = _Inotify()
        except (OSError, AttributeError):
            return False
        if not inotify.add_watch(root):
            inotify.close()
            return False
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(inotify.fd, self._on_change)
        self._inotify = inotify
        self._pending = select.epoll()
        self._pending.register(inotify.fd, select.EPOLLIN)
        self._root = root.rstrip(b"/") or b"/"
        self._watched = {self._root}
        return True

    def close(self) -> None:
        """Stop watching; entries are checked with stat on every use from now on."""
        self._tick += 1  # what inotify vouched for is vouched for no longer
        inotify, self._inotify = self._inotify, None
        if self._pending is not None:
            self._pending.close()
            self._pending = None
        if inotify is not None and self._loop is not None:
            self._loop.remove_reader(inotify.fd)
            inotify.close()
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None

    def get(self, key: str) -> CachedFile | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.checked == self._tick:
            # Trusted on inotify's word: unless an event waits that the loop has not read yet.
            pending = self._pending
            if pending is None or not pending.poll(0):
                return entry
            self._on_change()
            return None
        try:
            current = identity_of(os.stat(entry.path))
        except OSError:
            current = None
        if current != entry.identity:
            self._drop(key)
            return None
        if self._inotify is not None:
            entry.checked = self._tick
        return entry

    def put(self, key: str, entry: CachedFile) -> None:
        if self._inotify is not None and not self._watch_up_to(entry.path):
            self.close()  # out of watches: check every use from now on
        self._drop(key)
        self._entries[key] = entry
        self._bytes += len(entry.body or b"")
        while self._bytes > self._max_bytes or len(self._entries) > self._max_entries:
            self._drop(next(iter(self._entries)))
        if self._inotify is not None and self._ticker is None and self._loop is not None:
            self._ticker = self._loop.call_later(RECHECK_SECONDS, self._next_tick)

    def _watch_up_to(self, path: bytes) -> bool:
        """Watch each directory between the root and `path`'s own."""
        inotify = self._inotify
        assert inotify is not None
        root = self._root
        directory = os.path.dirname(path)
        while directory.startswith(root) and directory not in self._watched:
            if not inotify.add_watch(directory):
                return False
            self._watched.add(directory)
            if directory == root:
                break
            directory = os.path.dirname(directory)
        return True

    def _on_change(self) -> None:
        """Something changed under a watched directory: forget everything."""
        if self._inotify is not None and not self._inotify.drain():
            return  # read already, and the cache emptied, by `get`
        self._entries.clear()
        self._bytes = 0
        # Watches stay in the kernel; a directory replaced since is watched again when next
        # needed (adding a watch twice is harmless).
        self._watched = {self._root}

    def _next_tick(self) -> None:
        self._tick += 1
        self._ticker = None
        if self._entries and self._loop is not None:
            self._ticker = self._loop.call_later(RECHECK_SECONDS, self._next_tick)

    def _drop(self, key: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._bytes -= len(entry.body or b"")
