"""Static mode: the files under `static_path`, served like Go's http.FileServer, and safer.

A request goes: method check -> the in-memory cache of small files (one `stat` proves an entry
is still the file on disk) -> the URL made safe (`static_paths`) -> open and check the file
under the root -> redirects, index.html or a listing -> preconditions and ranges
(`static_headers`) -> the body, from memory or with sendfile(2) from the descriptor, at the
client's pace. Anything that must not be served is a plain 404, whatever the reason; a file
that cannot be opened for want of descriptors or memory is a 503.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from fwatchdog.http.request import Request
from fwatchdog.http.response import Response, prepared_head
from fwatchdog.modes.static.cache import CachedFile, FileCache, FileFacts, identity_of
from fwatchdog.modes.static.headers import (
    TEXT_HTML,
    Conditions,
    Unsatisfiable,
    Validators,
    conditions_of,
    content_range,
    content_type_for,
    multipart_layout,
    precondition_status,
    requested_ranges,
    sniff_content_type,
)
from fwatchdog.modes.static.listing import directory_listing
from fwatchdog.modes.static.paths import (
    INDEX_NAME,
    Forbidden,
    OpenedFile,
    StaticRoot,
    StaticRootError,
    Unavailable,
    UrlPath,
    parse_url_path,
    raw_path_of,
)
from fwatchdog.settings.config import Config
from fwatchdog.settings.errors import StartupError
from fwatchdog.telemetry.logs import Log

ALLOWED_METHODS = ("GET", "HEAD")
NOT_FOUND = b"404 page not found\n"
FORBIDDEN = b"403 Forbidden\n"
UNAVAILABLE = b"503 Service Unavailable: out of file descriptors or memory\n"
PRECONDITION_FAILED = b"412 Precondition Failed\n"
RANGE_NOT_SATISFIABLE = b"416 Requested Range Not Satisfiable\n"
TEXT_PLAIN = [("Content-Type", "text/plain; charset=utf-8")]
# Files up to this size are kept in memory once served; the cache holds at most CACHE_BYTES.
CACHE_FILE_MAX = 256 * 1024


class StaticMode:
    """Serves `static_path`; needs no function process."""

    def __init__(self, config: Config, log: Log, worker: bool = False) -> None:
        self._config = config
        self._log = log
        self._worker = worker  # one of http_workers' processes: the primary says what it serves
        self._root: StaticRoot | None = None
        self._cache = FileCache()

    async def start(self) -> None:
        try:
            self._root = StaticRoot(self._config.static_path, self._config.static_dotfiles)
        except StaticRootError as error:
            raise StartupError(str(error)) from None
        if not self._worker:
            self._log.info(f"Serving files at: {os.fsdecode(self._root.real)}")
        self._cache.watch(self._root.real)

    async def stop(self) -> None:
        self._cache.close()

    def answer_now(self, request: Request, response: Response) -> bool:
        """A hot file straight from the cache; anything else goes through `handle`."""
        if request.method not in ALLOWED_METHODS:
            return False
        cached = self._cache.get(_raw_path(request))
        if cached is None:
            return False
        self._send_cached(request, response, cached)
        return True

    async def handle(self, request: Request, response: Response) -> None:
        if not request.body.complete:
            request.body.discard()
        method = request.method
        if method not in ALLOWED_METHODS:
            response.send(405, b"Method Not Allowed\n", [*TEXT_PLAIN, ("Allow", "GET, HEAD")])
            return
        raw_path = _raw_path(request)
        cached = self._cache.get(raw_path)
        if cached is not None:
            self._send_cached(request, response, cached)
            return
        root = self._root
        assert root is not None, "start() was not called"
        url = parse_url_path(raw_path, root.dotfiles)
        if url is None:
            response.send(404, NOT_FOUND, TEXT_PLAIN)
            return
        try:
            opened = root.open(root.path_of(url.segments))
            if opened is None:
                response.send(404, NOT_FOUND, TEXT_PLAIN)
                return
            try:
                await self._serve_opened(request, response, url, raw_path, opened)
            finally:
                opened.close()
        except Forbidden:
            response.send(403, FORBIDDEN, TEXT_PLAIN)
        except Unavailable:  # raised by the opening of a file or of a directory's index.html
            response.send(503, UNAVAILABLE, [*TEXT_PLAIN, ("Retry-After", "1")])

    async def _serve_opened(
        self,
        request: Request,
        response: Response,
        url: UrlPath,
        raw_path: str,
        opened: OpenedFile,
    ) -> None:
        root = self._root
        assert root is not None
        if opened.is_dir:
            if not url.trailing_slash and url.segments:
                self._redirect(request, response, url, directory=True)
                return
            index = root.open_index(opened)
            if index is None:
                self._send_listing(request, response, opened)
                return
            opened.close()
            opened = index
        elif url.trailing_slash:
            self._redirect(request, response, url, directory=False)
            return
        elif url.segments and url.segments[-1] == INDEX_NAME:
            # As Go does: /dir/index.html is known by its directory's name.
            parent = UrlPath(url.segments[:-1], True)
            self._redirect(request, response, parent, directory=True)
            return
        try:
            await self._send_file(request, response, raw_path, opened)
        finally:
            opened.close()

    def _redirect(
        self, request: Request, response: Response, url: UrlPath, directory: bool
    ) -> None:
        _, _, query = request.target.partition("?")
        location = url.location(directory, query.split("#", 1)[0])
        body = f'<a href="{location}">Moved Permanently</a>.\n'.encode()
        response.send(301, body, [("Location", location), ("Content-Type", TEXT_HTML)])

    def _send_listing(self, request: Request, response: Response, directory: OpenedFile) -> None:
        root = self._root
        assert root is not None
        validators = Validators(0, directory.stat.st_mtime_ns)
        conditions = conditions_of(request)
        if conditions.if_modified_since is not None and conditions.if_none_match is None:
            # Only If-Modified-Since applies: a listing has no ETag and ignores Range.
            only_since = Conditions(if_modified_since=conditions.if_modified_since)
            if precondition_status(only_since, validators) == 304:
                response.send(304, b"", [("Last-Modified", validators.last_modified)])
                return
        body = directory_listing(directory.fd, directory.path, root.dotfiles, root.lists)
        response.send(
            200,
            body,
            [("Content-Type", TEXT_HTML), ("Last-Modified", validators.last_modified)],
        )

    def _send_cached(self, request: Request, response: Response, cached: CachedFile) -> None:
        conditions = conditions_of(request)
        if not conditions.any:
            response.send_prepared(200, cached.head_200, cached.body)
        elif precondition_status(conditions, cached.facts.validators) == 304:
            response.send_prepared(304, cached.head_304, b"")
        else:
            _Outcome.decide(conditions, cached.facts).send_from_memory(response, cached.body)

    async def _send_file(
        self, request: Request, response: Response, raw_path: str, opened: OpenedFile
    ) -> None:
        st = opened.stat
        size = st.st_size
        head = b""
        if size <= CACHE_FILE_MAX:
            head = os.pread(opened.fd, size, 0)
            if len(head) != size:
                # The file changed while we read it; say what was read, and do not keep it.
                size = len(head)
        content_type = content_type_for(opened.path.rsplit(b"/", 1)[-1])
        if content_type is None:
            if not head and size:
                head = os.pread(opened.fd, 512, 0)
            content_type = sniff_content_type(head)
        facts = FileFacts(Validators(size, st.st_mtime_ns), content_type)
        if size <= CACHE_FILE_MAX:
            entry = CachedFile(
                opened.path,
                identity_of(st),
                facts,
                head,
                prepared_head(200, [*facts.headers(), ("Content-Length", str(size))]),
                prepared_head(304, facts.not_modified_headers()),
            )
            if size == st.st_size:
                self._cache.put(raw_path, entry)
            self._send_cached(request, response, entry)
            return
        outcome = _Outcome.decide(conditions_of(request), facts)
        if request.method == "HEAD":
            outcome.send_body = False
        await outcome.send_from_file(response, opened.fd)


def _raw_path(request: Request) -> str:
    """The request's still-encoded path (the cache's key): its target itself when the
    decoded path is the same string, so nothing was cut off or decoded, else parsed again."""
    target = request.target
    return target if request.path == target else raw_path_of(target)


@dataclass(slots=True)
class _Outcome:
    """The status, headers and byte ranges one request gets for one file."""

    status: int
    headers: list[tuple[str, str]]
    ranges: list[tuple[int, int]]  # (start, length) of the file, in order
    part_heads: tuple[bytes, ...] = ()
    tail: bytes = b""
    send_body: bool = True

    @classmethod
    def decide(cls, conditions: Conditions, facts: FileFacts) -> _Outcome:
        validators = facts.validators
        size = validators.size
        status = precondition_status(conditions, validators)
        if status == 304:
            return cls(304, facts.not_modified_headers(), [], send_body=False)
        if status == 412:
            headers = [*TEXT_PLAIN, ("Content-Length", str(len(PRECONDITION_FAILED)))]
            return cls(412, headers, [], tail=PRECONDITION_FAILED)
        headers = facts.headers()
        try:
            ranges = requested_ranges(conditions, validators)
        except Unsatisfiable:
            headers = [
                *TEXT_PLAIN,
                ("Content-Range", f"bytes */{size}"),
                ("Content-Length", str(len(RANGE_NOT_SATISFIABLE))),
            ]
            return cls(416, headers, [], tail=RANGE_NOT_SATISFIABLE)
        if not ranges:
            headers.append(("Content-Length", str(size)))
            return cls(200, headers, [(0, size)] if size else [])
        if len(ranges) == 1:
            start, length = ranges[0]
            headers.append(("Content-Range", content_range(start, length, size)))
            headers.append(("Content-Length", str(length)))
            return cls(206, headers, ranges)
        layout = multipart_layout(ranges, facts.content_type, size)
        headers[0] = ("Content-Type", layout.content_type)
        headers.append(("Content-Length", str(layout.length)))
        return cls(206, headers, ranges, layout.heads, layout.tail)

    def send_from_memory(self, response: Response, body: bytes) -> None:
        response.start(self.status, self.headers)
        if not self.send_body:
            response.end()
            return
        parts: list[bytes] = []
        for index, (start, length) in enumerate(self.ranges):
            if self.part_heads:
                parts.append(self.part_heads[index])
            parts.append(body[start : start + length] if length != len(body) else body)
        parts.append(self.tail)
        response.end(b"".join(parts))

    async def send_from_file(self, response: Response, fd: int) -> None:
        response.start(self.status, self.headers)
        if not self.send_body:
            response.end()
            return
        for index, (start, length) in enumerate(self.ranges):
            if self.part_heads:
                await response.write(self.part_heads[index])
            # sendfile(2): from the page cache to the socket, at the client's pace. A file that
            # shrinks under us ends the connection: the promised length cannot be kept.
            await response.sendfile(fd, start, length)
        response.end(self.tail)
