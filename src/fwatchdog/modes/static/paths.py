"""From a request-target to an open file under `static_path`, and never anywhere else.

Two independent fences. First, the URL: its path is split on `/` *before* percent-decoding, and
decoded exactly once, so `%2f`, `%5c`, `%00` and `%2e%2e` can only ever produce a segment that
is refused (`/`, `\\` or NUL inside it, or `..`); double-encoded forms decode to harmless literal
names. Second, the file system: after `open`, the kernel's own name for the descriptor
(`/proc/self/fd/N`) must lie under the real root, which catches symbolic links pointing
outside however they are chained, with no window between the check and the use.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from dataclasses import dataclass
from urllib.parse import quote, unquote_to_bytes

_BAD_ESCAPE = re.compile(rb"%(?![0-9A-Fa-f]{2})")
_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
INDEX_NAME = b"index.html"


class Forbidden(Exception):
    """A file under the root that the watchdog may not read: 403, as from Go's file server."""


class Unavailable(Exception):
    """The watchdog is short of descriptors or memory to open a file that may well exist: 503,
    which a client retries, not a 404 it would believe."""


# Errors of open(2) that say nothing about the file, only about the server's resources.
_SHORT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})


class StaticRootError(Exception):
    """`static_path` cannot be served; the message names it and says why."""


@dataclass(frozen=True, slots=True)
class UrlPath:
    """A request path made safe: decoded segments (none empty, `.`, `..`, or holding `/`)."""

    segments: tuple[bytes, ...]
    trailing_slash: bool

    def location(self, directory: bool, query: str) -> str:
        """An absolute, re-encoded path for a redirect: never `//host`, whatever was asked."""
        path = "/" + "/".join(quote(segment, safe="!$&'()*+,;=:@-._~") for segment in self.segments)
        if directory and not path.endswith("/"):
            path += "/"
        return path + ("?" + query if query else "")


def raw_path_of(target: str) -> str:
    """The still-encoded path of a request-target (origin or absolute form), without query."""
    if not target.startswith("/") and "://" in target:
        after_scheme = target.split("://", 1)[1]
        slash = after_scheme.find("/")
        target = after_scheme[slash:] if slash >= 0 else "/"
    query = target.find("?")
    if query >= 0:
        target = target[:query]
    fragment = target.find("#")
    return target if fragment < 0 else target[:fragment]


def _decode_segment(raw: str) -> bytes | None:
    """Percent-decode one segment, once; None for a malformed escape such as `%zz`."""
    data = raw.encode("latin-1")  # the request line's own bytes
    if b"%" not in data:
        return data
    if _BAD_ESCAPE.search(data):
        return None
    return unquote_to_bytes(data)


def parse_url_path(raw_path: str, dotfiles: bool) -> UrlPath | None:
    """The safe form of an encoded path, or None when it must be answered 404."""
    if not raw_path.startswith("/") or "\\" in raw_path or "\x00" in raw_path:
        return None
    segments: list[bytes] = []
    for raw in raw_path.split("/"):
        if not raw:
            continue
        segment = _decode_segment(raw)
        if segment is None or b"/" in segment or b"\\" in segment or b"\x00" in segment:
            return None
        if segment == b".":
            continue
        if segment == b".." or (segment.startswith(b".") and not dotfiles):
            return None
        segments.append(segment)
    return UrlPath(tuple(segments), raw_path.endswith("/"))


@dataclass(slots=True)
class OpenedFile:
    """An open descriptor that was checked to lie under the root, and its `fstat`."""

    fd: int
    stat: os.stat_result
    path: bytes  # the path it was opened by (symbolic links and all), for revalidation

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.stat.st_mode)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class StaticRoot:
    """The directory `static_path` names, resolved once at start-up."""

    def __init__(self, configured: str, dotfiles: bool) -> None:
        self.configured = configured
        self.dotfiles = dotfiles
        real = os.path.realpath(configured)
        self.real = os.fsencode(real)
        self._prefix = self.real.rstrip(b"/") + b"/"
        self._check(real)

    def _check(self, real: str) -> None:
        name = f"static_path: {self.configured!r}"
        try:
            st = os.stat(real)
        except FileNotFoundError:
            raise StaticRootError(
                f"{name} does not exist; set static_path to the directory to serve"
            ) from None
        except OSError as error:
            raise StaticRootError(f"{name} cannot be read: {error.strerror}") from None
        if not stat.S_ISDIR(st.st_mode):
            raise StaticRootError(f"{name} is not a directory; set static_path to a directory")
        try:
            fd = os.open(real, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                os.listdir(fd)
            finally:
                os.close(fd)
        except OSError as error:
            raise StaticRootError(f"{name} cannot be read: {error.strerror}") from None
        if not os.access(real, os.R_OK | os.X_OK):
            raise StaticRootError(f"{name} cannot be read: Permission denied")

    def path_of(self, segments: tuple[bytes, ...]) -> bytes:
        return self._prefix + b"/".join(segments) if segments else self.real

    def open(self, path: bytes) -> OpenedFile | None:
        """Open `path` if it is a regular file or directory that really lies under the root;
        raises Forbidden for one under the root that we may not read, Unavailable when out of
        descriptors or memory."""
        try:
            fd = os.open(path, _OPEN_FLAGS)
        except PermissionError:
            # Say so only for a name that resolves under the root: elsewhere it is not ours.
            if self.contains_real(os.fsencode(os.path.realpath(path))):
                raise Forbidden from None
            return None
        except OSError as error:
            if error.errno in _SHORT_OF_RESOURCES:
                raise Unavailable from None
            return None
        except ValueError:  # a NUL in the name
            return None
        try:
            st = os.fstat(fd)
            servable = stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)
            if servable and self._contains_fd(fd, path):
                opened = OpenedFile(fd, st, path)
                fd = -1
                return opened
            return None
        finally:
            if fd >= 0:
                os.close(fd)

    def open_index(self, directory: OpenedFile) -> OpenedFile | None:
        """The directory's `index.html`, if it is a regular file under the root (one we may not
        read is passed over, as Go does: the directory is listed instead)."""
        try:
            opened = self.open(directory.path.rstrip(b"/") + b"/" + INDEX_NAME)
        except Forbidden:
            return None
        if opened is not None and opened.is_dir:
            opened.close()
            return None
        return opened

    def _contains_fd(self, fd: int, path: bytes) -> bool:
        """Whether the kernel's name for `fd` is the root or under it (and not a dot-file)."""
        try:
            real = os.readlink(b"/proc/self/fd/%d" % fd)
        except OSError:
            # No /proc (rare in a container): resolve the name instead, which leaves a window
            # between this check and the open above for someone able to swap links under us.
            real = os.fsencode(os.path.realpath(path))
        return self.contains_real(real)

    def contains_real(self, real: bytes) -> bool:
        if real == self.real:
            return True
        if not real.startswith(self._prefix):
            return False
        if self.dotfiles:
            return True
        return not any(part.startswith(b".") for part in real[len(self._prefix) :].split(b"/"))

    def lists(self, path: bytes) -> bool:
        """Whether a directory entry may appear in a listing: it resolves under the root."""
        return self.contains_real(os.fsencode(os.path.realpath(path)))
