"""A strict HTTP/1.1 client for raw sockets, shared by the tests and independent of the server.

Tests send requests byte for byte (pipelined, malformed, half-sent) and read the answers with
`ResponseReader`, which checks the framing as a careful client would: the status line, header
lines ending in CRLF, the body by Content-Length, chunked or the connection's end, no body for
HEAD, 204 and 304, interim 1xx answers kept apart, and no bytes after a response unless the
caller says more responses are coming (pipelining).
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

MiB = 1024 * 1024
_STATUS_LINE = re.compile(r"HTTP/1\.[01] (\d{3})(?: (.*))?")
_FIELD_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


class ProtocolError(AssertionError):
    """The server sent something no HTTP/1.1 client should accept (fails the test)."""


@dataclass
class Interim:
    """A 1xx answer that came before the final one (100 Continue, 103 Early Hints)."""

    status: int
    fields: list[tuple[str, str]]


@dataclass
class Head:
    """A final response's head: its fields in the order sent, and the 1xx answers before it."""

    status: int
    reason: str
    fields: list[tuple[str, str]]  # (name as sent, value), in order, repeats kept
    raw_head: bytes  # the status line and fields, without the blank line
    interim: list[Interim]

    @property
    def headers(self) -> dict[str, str]:
        """Lower-cased names; the last value wins (what most assertions need)."""
        return {name.lower(): value for name, value in self.fields}

    def values(self, name: str) -> list[str]:
        """Every value of field `name`, in order."""
        return [value for own, value in self.fields if own.lower() == name.lower()]


@dataclass
class Response(Head):
    """One final response and its whole body."""

    body: bytes = b""
    trailers: list[tuple[str, str]] = field(default_factory=list)


def _parse_fields(lines: list[str], what: str) -> list[tuple[str, str]]:
    fields = []
    for line in lines:
        name, colon, value = line.partition(":")
        if not colon or not _FIELD_NAME.fullmatch(name):
            raise ProtocolError(f"bad {what} line {line!r}")
        fields.append((name, value.strip(" \t")))
    return fields


def _body_is_chunked(fields: list[tuple[str, str]]) -> bool:
    """Whether the body is chunked; another coding last (a body to the close) is refused, as
    no watchdog answer should have one."""
    codings = [v.strip().lower() for n, v in fields if n.lower() == "transfer-encoding"]
    codings = [c.strip() for value in codings for c in value.split(",")]
    if codings and codings[-1] != "chunked":
        raise ProtocolError(f"Transfer-Encoding without chunked last: {codings}")
    return bool(codings)


def _content_length(fields: list[tuple[str, str]]) -> int | None:
    values = [v.strip() for n, v in fields if n.lower() == "content-length"]
    parts = {part.strip() for value in values for part in value.split(",")}
    if not parts:
        return None
    if len(parts) > 1 or not next(iter(parts)).isdigit():
        raise ProtocolError(f"bad Content-Length: {values}")
    return int(parts.pop())


class ResponseReader:
    """Reads responses, one after another, from the bytes a socket delivers."""

    def __init__(self, sock: socket.socket, received: bytes = b"") -> None:
        self.sock = sock
        self.buffer = bytearray(received)

    def _fill(self) -> bool:
        data = self.sock.recv(MiB)
        self.buffer += data
        return bool(data)

    def _take(self, size: int) -> bytes:
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data

    def read_line(self) -> bytes:
        """One line without its CRLF; a bare LF is refused."""
        while (end := self.buffer.find(b"\n")) < 0:
            if not self._fill():
                raise EOFError(f"connection closed inside a line: {bytes(self.buffer)!r}")
        line = self._take(end + 1)
        if not line.endswith(b"\r\n"):
            raise ProtocolError(f"line not ended by CRLF: {line!r}")
        return line[:-2]

    def read_exact(self, size: int) -> bytes:
        while len(self.buffer) < size:
            if not self._fill():
                raise EOFError(f"connection closed {size - len(self.buffer)} bytes early")
        return self._take(size)

    def read_any_head(self) -> Head:
        """The next head, 1xx or final, as it comes."""
        lines = [self.read_line().decode("latin-1")]
        while line := self.read_line():
            lines.append(line.decode("latin-1"))
        match = _STATUS_LINE.fullmatch(lines[0])
        if not match:
            raise ProtocolError(f"bad status line {lines[0]!r}")
        raw_head = "\r\n".join(lines).encode("latin-1")
        return Head(int(match[1]), match[2] or "", _parse_fields(lines[1:], "header"), raw_head, [])

    def read_interim(self) -> Interim:
        """A 1xx answer that must come next (100 Continue before the body is sent)."""
        head = self.read_any_head()
        if not 100 <= head.status < 200:
            raise ProtocolError(f"expected a 1xx answer, got {head.raw_head!r}")
        return Interim(head.status, head.fields)

    def read_head(self) -> Head:
        """The final response's head, after any 1xx interim answers (101 is final)."""
        interim = []
        while True:
            head = self.read_any_head()
            if 100 <= head.status < 200 and head.status != 101:
                interim.append(Interim(head.status, head.fields))
                continue
            head.interim = interim
            return head

    def body_chunks(
        self,
        head: Head,
        head_request: bool = False,
        trailers: list[tuple[str, str]] | None = None,
    ) -> Iterator[bytes]:
        """The body's bytes as they arrive, framed as RFC 9112 section 6.3 says."""
        if head_request or head.status in (101, 204, 304):
            return
        if _body_is_chunked(head.fields):
            if _content_length(head.fields) is not None:
                raise ProtocolError("both Transfer-Encoding and Content-Length (RFC 9112 6.2)")
            while True:
                size_line = self.read_line().split(b";")[0].strip()
                if not re.fullmatch(rb"[0-9A-Fa-f]+", size_line):
                    raise ProtocolError(f"bad chunk size line {size_line!r}")
                if not (size := int(size_line, 16)):
                    break
                yield self.read_exact(size)
                if self.read_line() != b"":
                    raise ProtocolError("chunk data not followed by CRLF")
            lines = []
            while line := self.read_line():
                lines.append(line.decode("latin-1"))
            if trailers is not None:
                trailers += _parse_fields(lines, "trailer")
        elif (remaining := _content_length(head.fields)) is not None:
            while remaining:
                if not self.buffer and not self._fill():
                    raise EOFError(f"connection closed {remaining} bytes early")
                piece = self._take(min(remaining, len(self.buffer)))
                remaining -= len(piece)
                yield piece
        else:  # the body ends with the connection
            while self.buffer or self._fill():
                yield self._take(len(self.buffer))

    def read_response(self, head_request: bool = False, more: bool = False) -> Response:
        """The next response; unless `more` (more answers are expected, as when pipelining),
        bytes already received after it fail the test, as a client would lose them."""
        head = self.read_head()
        trailers: list[tuple[str, str]] = []
        body = b"".join(self.body_chunks(head, head_request, trailers))
        if not more and self.buffer and head.status != 101:
            raise ProtocolError(f"bytes after the response: {bytes(self.buffer[:200])!r}")
        return Response(
            head.status, head.reason, head.fields, head.raw_head, head.interim, body, trailers
        )

    def closed_by_server(self) -> bool:
        """True when the server closes (or resets) with nothing more to say."""
        try:
            return not self.buffer and not self._fill()
        except ConnectionResetError:
            return True


def read_response(sock: socket.socket, head_request: bool = False) -> Response:
    """The one response to the one request sent on `sock`; no bytes may follow it."""
    return ResponseReader(sock).read_response(head_request)


def read_to_end(sock: socket.socket) -> bytes:
    """Every byte until the server closes the connection."""
    chunks = []
    while chunk := sock.recv(MiB):
        chunks.append(chunk)
    return b"".join(chunks)


def connect(port: int, timeout: float = 10.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=timeout)


def request_bytes(
    method: str,
    target: str | bytes,
    headers: Iterable[tuple[str, str]] = (("Host", "fwatchdog"),),
    body: bytes | None = None,
    chunked: bool = False,
) -> bytes:
    """A request's bytes, the target as given; a body gets its Content-Length, or is sent in
    two chunks when `chunked`."""
    if isinstance(target, str):
        target = target.encode("latin-1")
    lines = [method.encode() + b" " + target + b" HTTP/1.1"]
    lines += [f"{name}: {value}".encode("latin-1") for name, value in headers]
    payload = b""
    if body is not None and chunked:
        lines.append(b"Transfer-Encoding: chunked")
        half = len(body) // 2
        for piece in (body[:half], body[half:]):
            if piece:
                payload += b"%x\r\n" % len(piece) + piece + b"\r\n"
        payload += b"0\r\n\r\n"
    elif body is not None:
        lines.append(b"Content-Length: %d" % len(body))
        payload = body
    return b"\r\n".join(lines) + b"\r\n\r\n" + payload


def exchange(port: int, data: bytes, head_request: bool = False, timeout: float = 10.0) -> Response:
    """Send `data` (one request) on a new connection and read its one response."""
    with connect(port, timeout) as sock:
        sock.sendall(data)
        return read_response(sock, head_request)


def send_ignoring_reset(sock: socket.socket, data: bytes | Iterable[bytes]) -> None:
    """Send what the server takes; it may stop reading and close half-way, which is fine."""
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        for piece in [data] if isinstance(data, bytes) else data:
            sock.sendall(piece)


def exchange_while_sending(
    sock: socket.socket, data: bytes | Iterable[bytes], head_request: bool = False
) -> Response:
    """Send from a thread while reading the answer, as curl does: the answer may come before
    the request is all sent."""
    sender = threading.Thread(target=send_ignoring_reset, args=(sock, data), daemon=True)
    sender.start()
    try:
        return ResponseReader(sock).read_response(head_request)
    finally:
        sender.join(30)
