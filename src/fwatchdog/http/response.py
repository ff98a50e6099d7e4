"""Writes one response: `start(status, headers)`, `write(chunk)`, `end()`.

Framing lives here and nowhere else. The head goes out with the first body bytes (so a mode
can still change its mind about the status until then). A Content-Length given by the mode is
honoured; otherwise HTTP/1.1 responses are chunked and HTTP/1.0 ones end with the connection.
HEAD responses carry the headers and no body.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
from collections.abc import Callable
from typing import Protocol

from fwatchdog.http.dates import date_line_ending_head
from fwatchdog.http.request import ClientDisconnectedError
from fwatchdog.process.pipes import wait_writable

NO_BODY_STATUSES = frozenset({204, 304})
# sendfile(2) refuses some files (some file systems, special files): copy those instead.
SENDFILE_UNSUPPORTED = frozenset({errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP})
COPY_CHUNK = 256 * 1024
# http.HTTPStatus's phrases, written out: building that enum costs start-up time.
_REASONS = {
    100: "Continue",
    101: "Switching Protocols",
    102: "Processing",
    103: "Early Hints",
    200: "OK",
    201: "Created",
    202: "Accepted",
    203: "Non-Authoritative Information",
    204: "No Content",
    205: "Reset Content",
    206: "Partial Content",
    207: "Multi-Status",
    208: "Already Reported",
    226: "IM Used",
    300: "Multiple Choices",
    301: "Moved Permanently",
    302: "Found",
    303: "See Other",
    304: "Not Modified",
    305: "Use Proxy",
    307: "Temporary Redirect",
    308: "Permanent Redirect",
    400: "Bad Request",
    401: "Unauthorized",
    402: "Payment Required",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    409: "Conflict",
    410: "Gone",
    411: "Length Required",
    412: "Precondition Failed",
    413: "Request Entity Too Large",
    414: "Request-URI Too Long",
    415: "Unsupported Media Type",
    416: "Requested Range Not Satisfiable",
    417: "Expectation Failed",
    418: "I'm a Teapot",
    421: "Misdirected Request",
    422: "Unprocessable Entity",
    423: "Locked",
    424: "Failed Dependency",
    425: "Too Early",
    426: "Upgrade Required",
    428: "Precondition Required",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    451: "Unavailable For Legal Reasons",
    500: "Internal Server Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
    505: "HTTP Version Not Supported",
    506: "Variant Also Negotiates",
    507: "Insufficient Storage",
    508: "Loop Detected",
    510: "Not Extended",
    511: "Network Authentication Required",
}


def reason_phrase(status: int) -> str:
    return _REASONS.get(status, "Unknown")


_status_lines: dict[int, bytes] = {}


def status_line(status: int) -> bytes:
    """`HTTP/1.1 200 OK\r\n`, encoded once per status."""
    line = _status_lines.get(status)
    if line is None:
        line = _status_lines[status] = f"HTTP/1.1 {status} {reason_phrase(status)}\r\n".encode()
    return line


def prepared_head(status: int, headers: list[tuple[str, str]]) -> bytes:
    """Encode a head once for `Response.send_prepared`: status line and `headers` as given
    (Content-Length among them), without Date, Connection or the closing blank line."""
    fields = "".join(f"{name}: {value}\r\n" for name, value in headers)
    return status_line(status) + fields.encode("latin-1")


class WriteControl(Protocol):
    """What a response needs from its connection."""

    @property
    def writable(self) -> bool: ...

    @property
    def closing(self) -> bool: ...

    def write(self, data: bytes) -> None: ...

    def write_soon(self, data: bytes) -> None: ...

    def writelines(self, parts: list[bytes]) -> None: ...

    async def drain(self) -> None: ...

    def on_drain(self, callback: Callable[[], None]) -> None: ...

    def abort(self) -> None: ...

    async def lend_socket(self) -> int: ...

    def switch_protocols(self, head: bytes, protocol: asyncio.Protocol) -> asyncio.Transport: ...


class Response:
    """The response to one request; records what was actually sent for logs and metrics."""

    __slots__ = (
        "_chunked",
        "_conn",
        "_declared_length",
        "_encoded_fields",
        "_http10",
        "_is_head",
        "_on_abandon",
        "_remaining",
        "_when_done",
        "bytes_sent",
        "finished",
        "headers",
        "keep_alive",
        "started",
        "status",
    )

    def __init__(self, conn: WriteControl, method: str, http_version: str, keep_alive: bool):
        self._conn = conn
        self._is_head = method == "HEAD"
        self._http10 = http_version == "1.0"
        self._chunked = False
        self._remaining: int | None = None
        self.keep_alive = keep_alive
        self.status = 200
        self.headers: list[tuple[str, str]] = []
        self.started = False
        self.finished = False
        self.bytes_sent = 0
        self._when_done: list[Callable[[], None]] | None = None
        self._on_abandon: Callable[[], None] | None = None
        self._encoded_fields: bytes | None = None
        self._declared_length: int | None = None

    # --- for answers completed by callbacks rather than by an awaiting handler -----------
    def when_done(self, callback: Callable[[], None]) -> None:
        """Call `callback` once the response is finished (ended, aborted or abandoned)."""
        if self.finished:
            callback()
        elif self._when_done is None:
            self._when_done = [callback]
        else:
            self._when_done.append(callback)

    def on_abandon(self, callback: Callable[[], None]) -> None:
        """What to call if the client leaves before the response is finished: the producer
        stops there (and may finish the response itself)."""
        self._on_abandon = callback

    def abandon(self) -> None:
        """The client went away: stop whoever produces the response, and finish it."""
        if self.finished:
            return
        hook, self._on_abandon = self._on_abandon, None
        if hook is not None:
            hook()
        if not self.finished:
            self.keep_alive = False
            self._finish()

    def _finish(self) -> None:
        self.finished = True
        # The hook is usually a method of the producer, which holds this response: dropping
        # it breaks that cycle, so the pair is freed at once rather than by the collector.
        self._on_abandon = None
        callbacks, self._when_done = self._when_done, None
        if callbacks is not None:
            for callback in callbacks:
                callback()

    def start(self, status: int, headers: list[tuple[str, str]] | None = None) -> None:
        """Set status and headers; they are sent with the first body bytes or at `end()`."""
        if self.started:
            raise RuntimeError("response already started")
        self.status = status
        if headers is not None:
            self.headers = headers

    def start_encoded(self, status: int, fields: bytes, content_length: int | None) -> None:
        """`start` for headers already encoded as `Name: value\r\n` lines (a proxied
        response's), without framing, Connection or Date; `content_length` is the length the
        body will have, if known."""
        if self.started:
            raise RuntimeError("response already started")
        self.status = status
        self._encoded_fields = fields
        self._declared_length = content_length

    def _head(self, body_length: int | None) -> bytes:
        """Build the status line and headers; `body_length` is known when the body is."""
        self.started = True
        status = self.status
        fields = self._encoded_fields
        content_length = self._declared_length
        if fields is None:
            lines = []
            for name, value in self.headers:
                lowered = name.lower()
                if lowered == "content-length":
                    content_length = int(value)
                    continue
                if lowered in ("transfer-encoding", "connection"):
                    continue  # framing is ours to decide
                lines.append(f"{name}: {value}\r\n")
            fields = "".join(lines).encode("latin-1")
        framing = b""
        no_body = status in NO_BODY_STATUSES or status < 200
        if no_body:
            self._remaining = 0
        elif content_length is not None:
            self._remaining = content_length
            framing = b"Content-Length: %d\r\n" % content_length
        elif body_length is not None:
            self._remaining = body_length
            framing = b"Content-Length: %d\r\n" % body_length
        elif self._is_head:
            self._remaining = 0  # length unknown: say nothing about it
        elif self._http10:
            self.keep_alive = False  # the end of the connection ends the body
        else:
            self._chunked = True
            framing = b"Transfer-Encoding: chunked\r\n"
        framing += self._connection_line()
        if self._is_head:
            self._remaining = 0  # the length is announced, never sent
        return b"".join((status_line(status), fields, framing, date_line_ending_head()))

    def _connection_line(self) -> bytes:
        """Connection, when the version's default is not what happens: close on HTTP/1.1,
        keep-alive on HTTP/1.0. A draining server keeps no connection."""
        if self.keep_alive and self._conn.closing:
            self.keep_alive = False
        if not self.keep_alive and not self._http10:
            return b"Connection: close\r\n"
        if self.keep_alive and self._http10:
            return b"Connection: keep-alive\r\n"
        return b""

    def write_nowait(self, data: bytes) -> bool:
        """Send body bytes now; returns False when the client is not keeping up."""
        if not data:
            return self._conn.writable
        head = b"" if self.started else self._head(None)
        if self._is_head or self._remaining == 0:
            if head:
                self._conn.write(head)
            return self._conn.writable
        if self._remaining is not None:
            data = data[: self._remaining]
            self._remaining -= len(data)
        self.bytes_sent += len(data)
        if self._chunked:
            self._conn.writelines([head, b"%x\r\n" % len(data), data, b"\r\n"])
        elif head:
            self._conn.writelines([head, data])
        else:
            self._conn.write(data)
        return self._conn.writable

    async def write(self, data: bytes) -> None:
        """Send body bytes, waiting while the client's socket buffer is full."""
        if not self.write_nowait(data):
            await self._conn.drain()

    async def sendfile(self, file_fd: int, offset: int, count: int) -> None:
        """Send `count` bytes of an open file from `offset` as body bytes, with sendfile(2):
        the file's pages go from the page cache to the socket without passing through Python.
        """
        if count <= 0:
            return
        head = b"" if self.started else self._head(None)
        if self._is_head or self._remaining == 0:
            if head:
                self._conn.write(head)
            return
        if self._remaining is not None:
            count = min(count, self._remaining)
            self._remaining -= count
        if self._chunked:
            head += b"%x\r\n" % count
        # The head goes out on the socket too, marked MSG_MORE, so that it leaves with the
        # file's first bytes rather than in a segment of its own.
        sock = socket.socket(fileno=await self._conn.lend_socket())
        socket_fd = sock.fileno()
        try:
            if head:
                await _send_more(sock, head)
            while count > 0:
                try:
                    sent = os.sendfile(socket_fd, file_fd, offset, count)
                except (BlockingIOError, InterruptedError):
                    waiter = asyncio.get_running_loop().create_future()
                    wait_writable(socket_fd, waiter)
                    await waiter
                    continue
                except OSError as error:
                    if error.errno in SENDFILE_UNSUPPORTED:
                        break  # this file system cannot: copy the rest through Python
                    raise ClientDisconnectedError(f"client went away: {error}") from None
                if sent == 0:  # the file shrank: the promised length cannot be kept
                    self.keep_alive = False
                    raise ClientDisconnectedError("file ended before its length")
                offset += sent
                count -= sent
                self.bytes_sent += sent
        finally:
            sock.close()
        while count > 0:
            data = os.pread(file_fd, min(count, COPY_CHUNK), offset)
            if not data:
                self.keep_alive = False
                raise ClientDisconnectedError("file ended before its length")
            offset += len(data)
            count -= len(data)
            self.bytes_sent += len(data)
            self._conn.write(data)
            if not self._conn.writable:
                await self._conn.drain()
        if self._chunked:
            self._conn.write(b"\r\n")

    def on_drain(self, callback: Callable[[], None]) -> None:
        """Call `callback` once the client can take more bytes (for protocol producers)."""
        self._conn.on_drain(callback)

    def end(self, data: bytes = b"") -> None:
        """Finish the response; with nothing sent yet, `data` is the whole body."""
        if self.finished:
            return
        if not self.started:
            head = self._head(len(data))
            if self._is_head or self._remaining == 0:
                self._conn.write(head)
            else:
                self.bytes_sent += len(data)
                self._conn.writelines([head, data])
            self._remaining = 0
        else:
            if data:
                self.write_nowait(data)
            if self._chunked:
                self._conn.write(b"0\r\n\r\n")
        if self._remaining:
            # The mode promised more bytes than it sent: the client cannot find the end.
            self.keep_alive = False
        self._finish()

    def abort(self) -> None:
        """Drop the connection: a started response that cannot be completed."""
        self.keep_alive = False
        self._conn.abort()
        self._finish()

    def switch_protocols(
        self, headers: list[tuple[str, str]], protocol: asyncio.Protocol
    ) -> asyncio.Transport:
        """Answer an upgrade request with 101 and hand the client's connection to `protocol`.

        `headers` go out as given (Connection and Upgrade included). From then on the
        connection is `protocol`'s: it gets `connection_made(transport)`, the bytes the client
        sent after its request, and every later event; the caller writes to the transport it
        gets back, and returns from the handler once it is done with it (the connection is
        closed then). Only for a request with `upgrade` set, before anything was sent.
        """
        if self.started:
            raise RuntimeError("response already started")
        self.status = 101
        self.headers = headers
        self.started = True
        self.finished = True
        self.keep_alive = False
        lines = ["HTTP/1.1 101 Switching Protocols\r\n"]
        lines.extend(f"{name}: {value}\r\n" for name, value in headers)
        lines.append("\r\n")
        return self._conn.switch_protocols("".join(lines).encode("latin-1"), protocol)

    def send(
        self, status: int, body: bytes = b"", headers: list[tuple[str, str]] | None = None
    ) -> None:
        """A complete small response in one call (probes, errors)."""
        self.start(status, headers if headers is not None else [])
        self.end(body)

    def send_prepared(self, status: int, head: bytes, body: bytes) -> None:
        """A complete response from a head encoded ahead of time (a cached file's): the status
        line and every header, Content-Length included, but neither Date nor Connection, nor
        the blank line. The cheapest way out, for responses served many times over."""
        if self.started:
            raise RuntimeError("response already started")
        self.status = status
        self.started = True
        self._remaining = 0
        end = self._connection_line() + date_line_ending_head()
        if self._is_head or not body or status in NO_BODY_STATUSES:
            self._conn.write_soon(head + end)
        else:
            self.bytes_sent = len(body)
            self._conn.write_soon(b"".join((head, end, body)))
        self._finish()

    @property
    def may_pass_through(self) -> bool:
        """Whether `send_passthrough` may answer: an HTTP/1.1 request, not HEAD, that keeps
        its connection on a server that is not draining."""
        return self.keep_alive and not self._http10 and not self._is_head and not self._conn.closing

    def send_passthrough(self, status: int, message: bytes, body_length: int) -> None:
        """A complete response passed on as bytes (http/passthrough.py made them): head and
        body, framed by Content-Length, with no Connection field (`may_pass_through`)."""
        if self.started:
            raise RuntimeError("response already started")
        connection = self._connection_line()  # none, unless a drain began meanwhile
        if connection:
            line_end = message.index(b"\r\n") + 2
            message = b"%b%b%b" % (message[:line_end], connection, message[line_end:])
        self.status = status
        self.started = True
        self._remaining = 0
        self.bytes_sent = body_length
        self._conn.write_soon(message)
        self._finish()

    def send_text(self, status: int, text: str) -> None:
        """A plain-text error or message, one line."""
        self.send(status, text.encode() + b"\n", [("Content-Type", "text/plain; charset=utf-8")])


async def _send_more(sock: socket.socket, data: bytes) -> None:
    """All of `data` on a non-blocking socket, MSG_MORE: more follows at once."""
    view = memoryview(data)
    while view:
        try:
            sent = sock.send(view, socket.MSG_MORE)
        except (BlockingIOError, InterruptedError):
            waiter = asyncio.get_running_loop().create_future()
            wait_writable(sock.fileno(), waiter)
            await waiter
            continue
        except OSError as error:
            raise ClientDisconnectedError(f"client went away: {error}") from None
        view = view[sent:]
