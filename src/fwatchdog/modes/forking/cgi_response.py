"""Reading the header block a CGI program writes before its body (RFC 3875 section 6).

With `cgi_response=true` the function's stdout starts with header lines (LF or CRLF), then an
empty line, then the body. `CgiHeaderParser` takes the output as it arrives and says, after each
piece, whether it needs more, or what the response head is and which bytes already belong to the
body. Each line is checked as soon as it is complete, so output that is not a header block (a
function that forgot its headers) is refused at once, not after 64 KiB.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

HEADER_BLOCK_LIMIT = 64 * 1024

# RFC 9110 token characters: what a field name may be made of.
_FIELD_NAME = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# Visible characters, space and tab, and obs-text; no other control characters.
_FIELD_VALUE = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")

# Framing is the HTTP layer's to decide, and it writes its own Date.
_DROPPED = frozenset(
    {b"connection", b"content-length", b"date", b"keep-alive", b"transfer-encoding"}
)


class CgiHeaderError(ValueError):
    """The function's output does not start with a usable CGI header block; says why, in a line."""


@dataclass(frozen=True, slots=True)
class CgiHead:
    """The response head a CGI program asked for, and the first bytes of its body.

    `headers` are in the order written, without `Status` and without the fields the HTTP layer
    owns (Content-Length, Transfer-Encoding, Connection, Keep-Alive, Date). `content_length` is
    the Content-Length the program declared, if any (already checked to be a number).
    """

    status: int
    headers: list[tuple[str, str]]
    body: bytes
    content_length: int | None = None

    def headers_with_content_type(self, default: str) -> list[tuple[str, str]]:
        """`headers`, plus `Content-Type: default` when the program set none."""
        if any(name.lower() == "content-type" for name, _ in self.headers):
            return list(self.headers)
        return [("Content-Type", default), *self.headers]


class CgiHeaderParser:
    """Incremental parser: `feed(data)` until it returns a `CgiHead`, then `end()` at EOF.

    `feed` returns None while the header block is incomplete and raises `CgiHeaderError` as
    soon as a line is malformed or the block passes `limit` bytes. After the head is returned,
    the parser is done: later output is body and goes straight to the client.
    """

    __slots__ = ("_buffer", "_content_length", "_headers", "_limit", "_scanned", "_status")

    def __init__(self, limit: int = HEADER_BLOCK_LIMIT) -> None:
        self._limit = limit
        self._buffer = bytearray()
        self._scanned = 0  # where the line being read starts in `_buffer`
        self._headers: list[tuple[str, str]] = []
        self._status: int | None = None
        self._content_length: int | None = None

    def feed(self, data: bytes) -> CgiHead | None:
        """Take more output; the head once the empty line has arrived, else None."""
        buffer = self._buffer
        buffer += data
        while True:
            newline = buffer.find(b"\n", self._scanned)
            if newline < 0:
                break
            line = bytes(buffer[self._scanned : newline])
            if line.endswith(b"\r"):
                line = line[:-1]
            self._scanned = newline + 1
            if self._scanned > self._limit:
                break
            if not line:
                return self._head(bytes(buffer[self._scanned :]))
            self._parse_line(line)
        if len(buffer) > self._limit:
            raise CgiHeaderError(
                f"function's CGI header block is larger than {self._limit // 1024} KiB"
            )
        return None

    def end(self) -> CgiHead:
        """The output ended before an empty line: the head if every line so far was a header.

        Lenient on purpose: `Status: 204` followed by EOF is a complete answer. Output with no
        header line at all is an error: a CGI program must say something about its response.
        """
        rest = bytes(self._buffer[self._scanned :])
        if rest:
            if rest.endswith(b"\r"):
                rest = rest[:-1]
            self._parse_line(rest)
            self._scanned = len(self._buffer)
        if not self._headers and self._status is None:
            raise CgiHeaderError("function wrote no CGI header block (cgi_response is on)")
        return self._head(b"")

    def _parse_line(self, line: bytes) -> None:
        if line[:1] in (b" ", b"\t"):
            raise CgiHeaderError(
                f"function's CGI header line {_show(line)} is folded onto the previous one"
            )
        name, colon, value = line.partition(b":")
        if not colon or not _FIELD_NAME.fullmatch(name):
            raise CgiHeaderError(
                f"function's output line {_show(line)} is not a CGI header (Name: value)"
            )
        if not _FIELD_VALUE.fullmatch(value):
            raise CgiHeaderError(f"function's CGI header {_show(line)} has a control character")
        value = value.strip(b" \t")
        lowered = name.lower()
        if lowered == b"status":
            if self._status is not None:
                raise CgiHeaderError("function's CGI header block has two Status lines")
            self._status = _parse_status(value)
        elif lowered in _DROPPED:
            if lowered == b"content-length":
                self._content_length = _parse_content_length(value)
        else:
            self._headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def _head(self, body: bytes) -> CgiHead:
        status = self._status
        if status is None:
            has_location = any(name.lower() == "location" for name, _ in self._headers)
            status = 302 if has_location else 200
        self._buffer = bytearray()
        return CgiHead(status, self._headers, body, self._content_length)


def _parse_status(value: bytes) -> int:
    code, _, _ = value.partition(b" ")
    if len(code) == 3 and code.isdigit() and 200 <= int(code) <= 599:
        return int(code)
    raise CgiHeaderError(
        f"function's CGI Status {_show(value)} is not a status code from 200 to 599"
    )


def _parse_content_length(value: bytes) -> int:
    if value.isdigit() and len(value) <= 18:
        return int(value)
    raise CgiHeaderError(f"function's CGI Content-Length {_show(value)} is not a number")


def _show(text: bytes, limit: int = 60) -> str:
    """A short printable quotation of the offending bytes for an error line."""
    shown = text[:limit].decode("latin-1")
    quoted = repr(shown)
    return quoted + ("..." if len(text) > limit else "")
