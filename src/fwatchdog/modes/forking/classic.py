"""The classic watchdog's `marshal_request` stdin: the request's headers and body as JSON.

The format is Go's `json.Marshal` of `{"header": http.Header, "body": {"raw": []byte}}`:
header names in Go's canonical form with every value in a list, keys sorted, no Host or
Transfer-Encoding (Go keeps those out of `http.Header`), and the body base64-encoded. The encoder
works on a stream of chunks so that a mode can marshal a body it never holds whole.
"""

from __future__ import annotations

import base64

from fwatchdog.http.request import Request
from fwatchdog.modes.forking.cgi_env import canonical_mime_name

_NOT_IN_HEADER = frozenset({"host", "transfer-encoding"})
# Go's encoder escapes these for safe embedding in HTML; functions parsing JSON do not care,
# but byte-for-byte sameness costs nothing.
_GO_ESCAPES = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026"})


def _go_string(value: str) -> str:
    """A header value as Go would read its bytes: UTF-8 (invalid bytes become U+FFFD)."""
    if value.isascii():
        return value
    return value.encode("latin-1", "replace").decode("utf-8", "replace")


def marshal_header(request: Request) -> str:
    """The `"header"` object as Go's encoder writes it."""
    header: dict[str, list[str]] = {}
    for name, value in request.headers:
        if name.lower() in _NOT_IN_HEADER:
            continue
        header.setdefault(canonical_mime_name(name), []).append(_go_string(value))
    import json  # here: only marshal_request needs it, and its import stays for good

    text = json.dumps(header, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    return text.translate(_GO_ESCAPES)


class MarshalledRequest:
    """Encodes one request as the classic watchdog's JSON, chunk by chunk.

    `start()`, then `feed(chunk)` for each body chunk, then `end()`; the concatenation of what
    they return is the whole document. Base64 works on 3-byte groups, so up to two bytes wait
    for the next chunk.
    """

    __slots__ = ("_carry", "_request")

    def __init__(self, request: Request) -> None:
        self._request = request
        self._carry = b""

    def start(self) -> bytes:
        return self._prefix().encode()

    def _prefix(self) -> str:
        return '{"header":' + marshal_header(self._request) + ',"body":{"raw":"'

    def encoded_length(self, body_length: int) -> int:
        """The document's length for a body of `body_length` bytes (for CONTENT_LENGTH)."""
        return len(self._prefix().encode()) + 4 * ((body_length + 2) // 3) + len('"}}')

    def feed(self, chunk: bytes) -> bytes:
        data = self._carry + chunk if self._carry else chunk
        whole = len(data) - len(data) % 3
        self._carry = data[whole:]
        return base64.b64encode(data[:whole])

    def end(self) -> bytes:
        tail = base64.b64encode(self._carry)
        self._carry = b""
        return tail + b'"}}'

    @classmethod
    def encode(cls, request: Request, body: bytes) -> bytes:
        """The whole document for a body already in memory."""
        encoder = cls(request)
        return b"".join((encoder.start(), encoder.feed(body), encoder.end()))
