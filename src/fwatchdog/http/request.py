"""One parsed HTTP request and its body, delivered as a stream with back-pressure.

The body never accumulates beyond a small window: when more than `HIGH_WATER` bytes wait
unread, the connection stops reading the socket until the consumer catches up.
"""

from __future__ import annotations

import asyncio
import os
from collections import deque
from collections.abc import Sequence, Set
from typing import TYPE_CHECKING, AnyStr, Protocol

from fwatchdog.http.headers import dropped_raw_names
from fwatchdog.process.pipes import SpliceBlocked, splice_once, wait_readable, wait_writable

if TYPE_CHECKING:
    from fwatchdog.telemetry.otlp import SpanRecord

HIGH_WATER = 256 * 1024
LOW_WATER = 64 * 1024


class BodyError(Exception):
    """Reading the request body failed; the message says why."""


class ReadTimeoutError(BodyError):
    """The client did not send the whole request within `read_timeout`."""


class ClientDisconnectedError(BodyError):
    """The client went away before the request body was complete."""


class ReadControl(Protocol):
    """What a body needs from its connection: to stop and restart reading the socket."""

    def update_reading(self) -> None: ...

    def send_continue(self) -> None: ...

    def detach_for_splice(self, body: RequestBody) -> int | None: ...

    def reattach_after_splice(self, body: RequestBody, complete: bool) -> None: ...


class RequestBody:
    """The request body as an async stream of chunks; `read()` returns b"" at the end."""

    __slots__ = (
        "_chunks",
        "_control",
        "_error",
        "_waiter",
        "buffered",
        "complete",
        "content_length",
        "discarding",
        "expect_continue",
        "received",
    )

    def __init__(
        self,
        control: ReadControl,
        expect_continue: bool = False,
        content_length: int | None = None,
    ) -> None:
        self._control = control
        self._chunks: deque[bytes] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._error: BodyError | None = None
        self.buffered = 0
        self.received = 0
        self.complete = False
        self.discarding = False
        self.expect_continue = expect_continue
        self.content_length = content_length

    # Producer side, called by the connection.
    def feed(self, data: bytes) -> None:
        self.received += len(data)
        if self.discarding:
            return
        self._chunks.append(data)
        self.buffered += len(data)
        self._wake()

    def finish(self) -> None:
        self.complete = True
        self._wake()

    def fail(self, error: BodyError) -> None:
        if not self.complete:
            self._error = error
            self._wake()

    @property
    def failed(self) -> bool:
        """Whether it ended in an error (read_timeout, the client gone)."""
        return self._error is not None

    @property
    def over_high_water(self) -> bool:
        return self.buffered > HIGH_WATER

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # Consumer side, called by the mode.
    async def read(self) -> bytes:
        """The next chunk of the body, b"" once it is complete; raises BodyError on failure."""
        if self.expect_continue:
            self.expect_continue = False
            self._control.send_continue()
        while not self._chunks:
            if self._error is not None:
                raise self._error
            if self.complete:
                return b""
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        chunk = self._chunks.popleft()
        was_high = self.buffered > LOW_WATER
        self.buffered -= len(chunk)
        if was_high and self.buffered <= LOW_WATER:
            self._control.update_reading()
        return chunk

    async def read_all(self, limit: int | None = None) -> bytes:
        """The whole body in memory (for buffering modes); BodyError past `limit` bytes."""
        parts: list[bytes] = []
        size = 0
        while chunk := await self.read():
            size += len(chunk)
            if limit is not None and size > limit:
                raise BodyError(f"request body larger than {limit} bytes")
            parts.append(chunk)
        return b"".join(parts)

    async def splice_into(self, pipe_fd: int) -> bool | None:
        """Move the rest of a Content-Length body into a pipe in the kernel (`splice`).

        Returns None when it cannot apply (chunked, complete, or bytes already buffered: read
        those first), True once the body has been moved, False when the pipe's reader went
        away first. Raises BodyError as `read()` does.
        """
        if (
            self.complete
            or self._chunks
            or self.content_length is None
            or self.discarding
            or self._error is not None
        ):
            return None
        if self.expect_continue:
            self.expect_continue = False
            self._control.send_continue()
        socket_fd = self._control.detach_for_splice(self)
        if socket_fd is None:
            return None
        remaining = self.content_length - self.received
        loop = asyncio.get_running_loop()
        wait_for_socket = True
        try:
            while remaining > 0:
                if self._error is not None:
                    raise self._error
                try:
                    moved = splice_once(socket_fd, pipe_fd, remaining)
                except SpliceBlocked:
                    # Either end may be the one that blocks: alternate which one we wait for.
                    self._waiter = loop.create_future()
                    if wait_for_socket:
                        wait_readable(socket_fd, self._waiter)
                    else:
                        wait_writable(pipe_fd, self._waiter)
                    wait_for_socket = not wait_for_socket
                    try:
                        await self._waiter
                    finally:
                        self._waiter = None
                    continue
                except BrokenPipeError:
                    return False
                if moved == 0:
                    raise ClientDisconnectedError("client closed the connection mid-body")
                wait_for_socket = True
                remaining -= moved
                self.received += moved
            return True
        finally:
            os.close(socket_fd)
            self._control.reattach_after_splice(self, complete=remaining == 0)

    def take_all_if_complete(self, limit: int) -> bytes | None:
        """The whole body, if it has all arrived and is at most `limit` bytes; else None."""
        if not self.complete or self.buffered > limit or self._error is not None:
            return None
        if self.discarding:
            return b""
        chunks = self._chunks
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self.buffered = 0
        self.expect_continue = False
        return data

    def discard(self) -> None:
        """Drop what is buffered and whatever still arrives (the mode will not read it)."""
        self.discarding = True
        self.expect_continue = False
        self._chunks.clear()
        self.buffered = 0
        self._control.update_reading()


class Request:
    """A request as the modes see it: no framing details beyond what they need.

    Its fields are decoded from the parser's bytes only when something reads `headers`: a
    request passed on as it came never needs them as text."""

    __slots__ = (
        "_headers",
        "_raw_headers",
        "body",
        "chunked",
        "content_length",
        "has_host",
        "hop_by_hop",
        "http_version",
        "keep_alive",
        "method",
        "path",
        "query",
        "raw",
        "remote_addr",
        "span",
        "target",
        "upgrade",
        "user_agent",
    )

    def __init__(
        self,
        method: str,
        target: str,
        path: str,
        query: str,
        headers: list[tuple[str, str]] | None,
        http_version: str,
        keep_alive: bool,
        body: RequestBody,
        chunked: bool = False,
        content_length: int | None = None,
        remote_addr: tuple[str, int] = ("", 0),
        upgrade: bool = False,
        raw: bytes | None = None,
        user_agent: str | None = None,
        has_host: bool = False,
        hop_by_hop: bool = False,
        raw_headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        self.method = method
        self.target = target
        self.path = path
        self.query = query
        self._headers = headers
        self._raw_headers = raw_headers
        self.http_version = http_version
        self.keep_alive = keep_alive
        self.body = body
        self.chunked = chunked
        self.content_length = content_length
        self.remote_addr = remote_addr
        # Asks to switch protocols (Upgrade with Connection: upgrade): Response.switch_protocols.
        self.upgrade = upgrade
        # The whole message as it arrived, when it came alone in one read with a Content-Length
        # body or none: a proxy may pass it on as it is.
        self.raw = raw
        # Noted while the head was parsed: its User-Agent, whether it has a Host, and whether
        # any field stops at this hop (http/headers.py's policy) or is an Expect.
        self.user_agent = user_agent
        self.has_host = has_host
        self.hop_by_hop = hop_by_hop
        self.span: SpanRecord | None = None  # its trace span while it is answered (tracing on)

    @property
    def headers(self) -> list[tuple[str, str]]:
        """The fields in order, as text (latin-1, as HTTP/1.1 fields are octets)."""
        headers = self._headers
        if headers is None:
            raw_headers = self._raw_headers or []
            headers = self._headers = [
                (name.decode("latin-1"), value.decode("latin-1")) for name, value in raw_headers
            ]
            self._raw_headers = None
        return headers

    @headers.setter
    def headers(self, headers: list[tuple[str, str]]) -> None:
        self._headers = headers
        self._raw_headers = None

    def replace_headers(self, fields: list[tuple[str, str | None]]) -> None:
        """Put each `(name, value)` in place of every field of that name (a value of None
        takes it out), at the end of the head; `raw` stays true to the fields."""
        names = {name.lower().encode("latin-1") for name, _ in fields}
        added: list[tuple[str, str]] = [
            (name, value) for name, value in fields if value is not None
        ]
        raw_headers = self._raw_headers
        if raw_headers is not None:
            kept = [field for field in raw_headers if field[0].lower() not in names]
            removed = len(raw_headers) - len(kept)
            kept.extend((name.encode("latin-1"), value.encode("latin-1")) for name, value in added)
            self._raw_headers = kept
        else:
            headers = self.headers
            kept_text = [
                field for field in headers if field[0].lower().encode("latin-1") not in names
            ]
            removed = len(headers) - len(kept_text)
            kept_text.extend(added)
            self._headers = kept_text
        if self.raw is not None and (removed or added):
            self.raw = _respliced(self.raw, names, removed, added)

    def add_headers(self, fields: list[tuple[str, str]]) -> None:
        """Add fields at the end of the head, keeping `raw`, the bytes a proxy may pass on as
        they came, true to the fields."""
        if self._raw_headers is not None:
            self._raw_headers.extend(
                (name.encode("latin-1"), value.encode("latin-1")) for name, value in fields
            )
        else:
            self.headers.extend(fields)
        if self.raw is not None and fields:
            self.raw = _respliced(self.raw, _NO_NAMES, 0, fields)

    def raw_end_to_end(self, also_drop: frozenset[bytes]) -> bytes | None:
        """`raw` without the fields a proxy does not pass on (http/headers.py's policy) and
        `also_drop`; None when there is no `raw` or those lines cannot be cut out."""
        raw = self.raw
        if raw is None:
            return None
        fields = self._raw_headers
        if fields is None:
            fields = [(n.encode("latin-1"), v.encode("latin-1")) for n, v in self.headers]
        names, count = dropped_raw_names(fields, also_drop)
        return _respliced(raw, names, count, ()) if count else raw

    def header_values(self, name: str) -> list[str]:
        """Every value of a field sent on several lines, in order; without decoding the
        others when they are still bytes."""
        raw_headers = self._raw_headers
        if raw_headers is None:
            lowered = name.lower()
            return [value for key, value in self.headers if key.lower() == lowered]
        wanted = name.lower().encode("latin-1")
        size = len(wanted)
        return [
            value.decode("latin-1")
            for key, value in raw_headers
            if len(key) == size and key.lower() == wanted
        ]

    def header(self, name: str) -> str | None:
        """The first value of a header, matched without regard to case; without decoding the
        others when they are still bytes."""
        raw_headers = self._raw_headers
        if raw_headers is None:
            return header_value(self.headers, name.lower())
        value = header_value(raw_headers, name.lower().encode("latin-1"))
        return None if value is None else value.decode("latin-1")

    def headers_named(self, wanted: FieldNames) -> list[str | None]:
        """The first value of each field `wanted` names, in its order, in one pass, for a
        caller that needs several on every request."""
        index, sizes = wanted.index, wanted.sizes
        found: list[str | None] = [None] * len(index)
        raw_headers = self._raw_headers
        if raw_headers is None:
            for key, value in self.headers:
                if len(key) in sizes:
                    place = index.get(key.lower().encode("latin-1"))
                    if place is not None and found[place] is None:
                        found[place] = value
        else:
            for raw_key, raw_value in raw_headers:
                if len(raw_key) in sizes:  # lengths first: lowering every name costs more
                    place = index.get(raw_key.lower())
                    if place is not None and found[place] is None:
                        found[place] = raw_value.decode("latin-1")
        return found


_NO_NAMES: frozenset[bytes] = frozenset()


def _respliced(
    raw: bytes, names: Set[bytes], removed: int, added: Sequence[tuple[str, str]]
) -> bytes | None:
    """A whole message's bytes without the `removed` lines of the fields `names` (in lower
    case) and with the `added` fields at the end of its head; None when the lines to take
    out are not all found (then the request is written from its fields). llhttp takes only
    CRLF lines without folding, so a field's line is a CRLF, its name and a colon, up to the
    next CRLF."""
    end = raw.find(b"\r\n\r\n") + 2  # raw is a whole message: its head ends
    pieces = []
    start = 0
    if removed:
        head = raw[:end].lower()
        cuts = []
        for name in names:
            marker = b"\r\n" + name + b":"
            at = head.find(marker)
            while at >= 0:
                line_end = head.find(b"\r\n", at + 2)
                cuts.append((at, line_end))
                at = head.find(marker, line_end)
        if len(cuts) != removed:
            return None
        cuts.sort()
        for at, line_end in cuts:
            pieces.append(raw[start:at])
            start = line_end
    pieces.append(raw[start:end])
    pieces.append("".join([f"{name}: {value}\r\n" for name, value in added]).encode("latin-1"))
    pieces.append(raw[end:])
    return b"".join(pieces)


class FieldNames:
    """Field names `Request.headers_named` looks up together: each one's place in its
    answer, by lower-case name, and the names' lengths."""

    __slots__ = ("index", "sizes")

    def __init__(self, *names: str) -> None:
        self.index = {name.lower().encode("latin-1"): place for place, name in enumerate(names)}
        self.sizes = frozenset(len(name) for name in self.index)


def header_value(headers: list[tuple[AnyStr, AnyStr]], lowered: AnyStr) -> AnyStr | None:
    """The first value of the header named `lowered` (in lower case), in any case; the fields
    as text or as the parser's bytes."""
    size = len(lowered)
    for key, value in headers:
        # Comparing lengths first spares lowering most names (this runs per request).
        if len(key) == size and key.lower() == lowered:
            return value
    return None
