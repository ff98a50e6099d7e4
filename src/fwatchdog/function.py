"""Write afterburn functions in Python: `serve(handler)` or `serve_wsgi(app)`.

The watchdog (mode=afterburn) keeps this process running and writes each request to its stdin
as an HTTP/1.1 message with a Content-Length; the answer goes back on stdout as an HTTP/1.1
response. This module speaks that protocol with the standard library only (it never imports
the server side), so a function needs nothing else installed::

    from fwatchdog.function import serve

    def handle(request):
        return {"hello": request.query.get("name", ["world"])[0]}

    serve(handle)

While the loop runs, `sys.stdout` is the process's stderr: `print()` in a handler ends up in
the watchdog's log instead of corrupting the protocol.
"""

from __future__ import annotations

import io
import json
import sys
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import IO, Any
from urllib.parse import parse_qs, unquote

__all__ = ["Request", "Response", "serve", "serve_wsgi"]

_REASONS = {
    200: "OK",
    201: "Created",
    202: "Accepted",
    204: "No Content",
    301: "Moved Permanently",
    302: "Found",
    304: "Not Modified",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}
_NO_BODY = (204, 304)


class ProtocolError(Exception):
    """The bytes on stdin are not an HTTP/1.1 request; the stream cannot go on."""


class Headers(dict[str, str]):
    """Request headers: names kept lower-case, so look-ups ignore case (repeats joined by ,)."""

    def __getitem__(self, name: str) -> str:
        return super().__getitem__(name.lower())

    def get(self, name: str, default: Any = None) -> Any:
        return super().get(name.lower(), default)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and super().__contains__(name.lower())


@dataclass
class Request:
    """One request as the handler sees it."""

    method: str
    target: str
    path: str
    query_string: str
    headers: Headers
    body: bytes

    @property
    def query(self) -> dict[str, list[str]]:
        """The query string parsed: name -> every value given."""
        return parse_qs(self.query_string, keep_blank_values=True)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return json.loads(self.body or b"null")


@dataclass
class Response:
    """What a handler returns to set the status or headers; `body` is converted as a return
    value is (bytes as they are, str as UTF-8 text, anything else as JSON)."""

    body: Any = b""
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[Request], Any]


def serve(
    handler: Handler, stdin: IO[bytes] | None = None, stdout: IO[bytes] | None = None
) -> None:
    """Answer requests from stdin on stdout with `handler` until stdin ends.

    An exception in the handler is a 500 for that request (its traceback goes to stderr) and
    the loop goes on.
    """
    with _protocol_streams(stdin, stdout) as (inp, out):
        while (request := read_request(inp)) is not None:
            try:
                result = handler(request)
                status, headers, body = _encode_result(result)
            except Exception:
                traceback.print_exc(file=sys.stderr)
                sys.stderr.flush()
                status, headers, body = 500, {"Content-Type": "text/plain"}, b"Internal Error\n"
            write_response(out, status, headers, body)


def serve_wsgi(app: Any, stdin: IO[bytes] | None = None, stdout: IO[bytes] | None = None) -> None:
    """Run a WSGI application (Flask, Django, ...) in afterburn mode until stdin ends."""
    with _protocol_streams(stdin, stdout) as (inp, out):
        while (request := read_request(inp)) is not None:
            _run_wsgi(app, request, out)


# --- the protocol --------------------------------------------------------------------------------


class _protocol_streams:
    """stdout becomes stderr for the duration; the protocol goes to the real stdout's bytes."""

    def __init__(self, stdin: IO[bytes] | None, stdout: IO[bytes] | None) -> None:
        self._inp = stdin if stdin is not None else sys.stdin.buffer
        self._out = stdout if stdout is not None else sys.stdout.buffer
        self._saved: Any = None

    def __enter__(self) -> tuple[IO[bytes], IO[bytes]]:
        sys.stdout.flush()
        self._saved = sys.stdout
        sys.stdout = sys.stderr
        return self._inp, self._out

    def __exit__(self, *_: object) -> None:
        sys.stdout = self._saved


def read_request(inp: IO[bytes]) -> Request | None:
    """The next request from `inp`; None at the end of the stream."""
    line = inp.readline()
    while line in (b"\r\n", b"\n"):  # tolerate blank lines between messages
        line = inp.readline()
    if not line:
        return None
    parts = line.decode("latin-1").rstrip("\r\n").split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        raise ProtocolError(f"not an HTTP request line: {line[:100]!r}")
    method, target, _version = parts
    headers = Headers()
    while True:
        line = inp.readline()
        if not line:
            raise ProtocolError("the stream ended inside a request head")
        if line in (b"\r\n", b"\n"):
            break
        name, sep, value = line.decode("latin-1").partition(":")
        if not sep:
            raise ProtocolError(f"not a header line: {line[:100]!r}")
        key = name.strip().lower()
        value = value.strip()
        previous = dict.get(headers, key)
        dict.__setitem__(headers, key, value if previous is None else f"{previous}, {value}")
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = _read_chunked(inp)
    else:
        body = _read_exactly(inp, _content_length(headers.get("content-length", "")))
    raw_path, _, query = target.partition("?")
    return Request(method, target, unquote(raw_path) or "/", query, headers, body)


_READ_PIECE = 1 << 20


def _content_length(text: str) -> int:
    """Content-Length: ASCII digits only (int() would take "-1", " 1_0" or Unicode digits)."""
    if not text:
        return 0
    if not (text.isascii() and text.isdigit()):
        raise ProtocolError(f"not a Content-Length: {text[:100]!r}")
    return int(text)


def _read_exactly(inp: IO[bytes], length: int) -> bytes:
    """`length` bytes, read a mebibyte at most at a time: a bogus length then ends in a
    ProtocolError at the end of the stream, not in an allocation of that size."""
    if length <= _READ_PIECE:
        data = inp.read(length) if length else b""
        if len(data) == length:
            return data
        parts, left = [data], length - len(data)
    else:
        parts, left = [], length
    while left > 0:
        piece = inp.read(min(left, _READ_PIECE))
        if not piece:
            raise ProtocolError(f"the stream ended {left} bytes before the body did")
        parts.append(piece)
        left -= len(piece)
    return b"".join(parts)


def _read_chunked(inp: IO[bytes]) -> bytes:
    parts: list[bytes] = []
    while True:
        size_line = inp.readline()
        if not size_line:
            raise ProtocolError("the stream ended inside a chunked body")
        size = _chunk_size(size_line)
        if size == 0:
            break
        parts.append(_read_exactly(inp, size))
        inp.readline()
    # Trailers, skipped. (After the loop, not in it: atheris 2.3 on Python 3.11 miscompiles
    # an inner loop that returns, and fuzz/ runs this code instrumented.)
    while inp.readline() not in (b"\r\n", b"\n", b""):
        pass
    return b"".join(parts)


def _chunk_size(line: bytes) -> int:
    text = line.split(b";", 1)[0].strip()
    if not text or text.strip(b"0123456789abcdefABCDEF"):
        raise ProtocolError(f"not a chunk size line: {line[:100]!r}")
    return int(text, 16)


def write_response(out: IO[bytes], status: int, headers: dict[str, str], body: bytes) -> None:
    """One response with a Content-Length, flushed."""
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}"]
    for name, value in headers.items():
        if name.lower() not in ("content-length", "transfer-encoding", "connection"):
            lines.append(f"{name}: {value}")
    if status in _NO_BODY:
        body = b""
    else:
        lines.append(f"Content-Length: {len(body)}")
    out.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    if body:
        out.write(body)
    out.flush()


def _encode_result(result: Any) -> tuple[int, dict[str, str], bytes]:
    """A handler's return value as status, headers (with a Content-Type) and body bytes."""
    status, headers = 200, {}
    if isinstance(result, Response):
        status, headers, result = result.status, dict(result.headers), result.body
    if result is None:
        body, content_type = b"", "text/plain; charset=utf-8"
    elif isinstance(result, (bytes, bytearray, memoryview)):
        body, content_type = bytes(result), "application/octet-stream"
    elif isinstance(result, str):
        body, content_type = result.encode("utf-8"), "text/plain; charset=utf-8"
    else:
        body, content_type = json.dumps(result).encode("utf-8"), "application/json"
    if not any(name.lower() == "content-type" for name in headers):
        headers["Content-Type"] = content_type
    return status, headers, body


# --- WSGI ----------------------------------------------------------------------------------------


def _wsgi_environ(request: Request) -> dict[str, Any]:
    host = request.headers.get("host", "localhost")
    server_name, _, server_port = host.partition(":")
    environ: dict[str, Any] = {
        "REQUEST_METHOD": request.method,
        "SCRIPT_NAME": "",
        "PATH_INFO": request.path.encode("utf-8").decode("latin-1"),
        "QUERY_STRING": request.query_string,
        "SERVER_NAME": server_name or "localhost",
        "SERVER_PORT": server_port or "8080",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "CONTENT_LENGTH": str(len(request.body)),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": request.headers.get("x-forwarded-proto", "http"),
        "wsgi.input": io.BytesIO(request.body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    for name, value in request.headers.items():
        key = name.upper().replace("-", "_")
        if key == "CONTENT_TYPE":
            environ["CONTENT_TYPE"] = value
        elif key not in ("CONTENT_LENGTH", "TRANSFER_ENCODING"):
            environ[f"HTTP_{key}"] = value
    return environ


def _run_wsgi(app: Any, request: Request, out: IO[bytes]) -> None:
    """Call the app; its body goes out chunked as it is produced unless it set a length."""
    state: dict[str, Any] = {}

    def start_response(
        status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Callable[[bytes], None]:
        if exc_info is not None and state.get("sent"):
            raise exc_info[1].with_traceback(exc_info[2])
        state["status"], state["headers"] = status, headers
        return write

    def write(data: bytes) -> None:  # WSGI's legacy write(): before or during iteration
        emit_now = state.get("emit")
        if emit_now is not None:
            emit_now(data)
        else:
            body_parts.append(data)

    body_parts: list[bytes] = []
    try:
        result: Iterable[bytes] = app(_wsgi_environ(request), start_response)
    except Exception:
        traceback.print_exc(file=sys.stderr)
        write_response(out, 500, {"Content-Type": "text/plain"}, b"Internal Error\n")
        return
    try:
        iterator = iter(result)
        first = b""
        try:
            for chunk in iterator:  # up to the first non-empty chunk: the head may change
                if chunk:
                    first = chunk
                    break
        except Exception:
            traceback.print_exc(file=sys.stderr)
            write_response(out, 500, {"Content-Type": "text/plain"}, b"Internal Error\n")
            return
        status_text = state.get("status", "500 Internal Server Error")
        headers = state.get("headers", [])
        code, _, reason = status_text.partition(" ")
        has_length = any(name.lower() == "content-length" for name, _ in headers)
        lines = [f"HTTP/1.1 {code} {reason or 'Unknown'}"]
        for name, value in headers:
            if name.lower() not in ("transfer-encoding", "connection"):
                lines.append(f"{name}: {value}")
        no_body = int(code) in _NO_BODY
        if not has_length and not no_body:
            lines.append("Transfer-Encoding: chunked")
        out.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        state["sent"] = True
        chunked = not has_length and not no_body

        def emit(data: bytes) -> None:
            if not data or no_body:
                return
            if chunked:
                out.write(b"%x\r\n%s\r\n" % (len(data), data))
            else:
                out.write(data)

        state["emit"] = emit
        for data in body_parts:
            emit(data)
        emit(first)
        try:
            for chunk in iterator:
                emit(chunk)
        except Exception:
            # The head is out: the stream cannot carry an error any more; end the body short
            # would desynchronise it, so finish the framing and log.
            traceback.print_exc(file=sys.stderr)
        if chunked:
            out.write(b"0\r\n\r\n")
        out.flush()
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
