"""A minimal HTTP/1.1 client on raw sockets: small requests, and large streamed uploads.

The streamed upload sends a body generated from one reused 1 MiB pattern (never held whole in
memory) with a Content-Length, while a second thread reads the response as it arrives, decodes
its framing (Content-Length, chunked or read-to-close) and checks it byte for byte against the
pattern (or collects it, when the function answers with something short like `wc -c`).
"""

from __future__ import annotations

import random
import resource
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

PATTERN_SIZE = 1 << 20
RECV_SIZE = 1 << 20
IO_TIMEOUT = 60.0

BodySink = Callable[[memoryview], None]


@dataclass
class Response:
    """A response head, and the body as decoded so far."""

    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


def simple_request(
    port: int, method: str, path: str, body: bytes = b"", timeout: float = 5.0
) -> Response:
    """One request on a new connection (`Connection: close`); the whole response."""
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    body_sink = Collect(limit=1 << 20)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head + body)
        response = read_response(sock, body_sink)
    response.body = bytes(body_sink.data)
    return response


class ChunkedDecoder:
    """Turns a chunked body, fed in arbitrary pieces, into calls of `sink` with its data."""

    def __init__(self, sink: BodySink) -> None:
        self.sink = sink
        self.state = "size"  # size -> data -> data_end -> size ... -> trailer -> done
        self.remaining = 0
        self.line = bytearray()

    @property
    def done(self) -> bool:
        return self.state == "done"

    def feed(self, data: memoryview) -> int:
        """Consume `data`; return how many bytes were used (less than all only once done)."""
        pos, end = 0, len(data)
        while pos < end and self.state != "done":
            if self.state == "data":
                take = min(self.remaining, end - pos)
                self.sink(data[pos : pos + take])
                pos += take
                self.remaining -= take
                if self.remaining == 0:
                    self.state = "data_end"
                continue
            # Line states: look for the newline in a small window, never copying the rest.
            window = bytes(data[pos : pos + 256])
            newline = window.find(b"\n")
            if newline < 0:
                self.line += window
                pos += len(window)
                continue
            self.line += window[: newline + 1]
            pos += newline + 1
            self._on_line(bytes(self.line).strip())
            self.line.clear()
        return pos

    def _on_line(self, line: bytes) -> None:
        if self.state == "size":
            size = int(line.split(b";")[0], 16)
            self.remaining = size
            self.state = "data" if size else "trailer"
        elif self.state == "data_end":
            if line:
                raise ValueError(f"chunked body: expected CRLF after data, got {line[:40]!r}")
            self.state = "size"
        elif self.state == "trailer" and not line:
            self.state = "done"


def read_response(sock: socket.socket, sink: BodySink) -> Response:
    """Read one response from `sock`, passing its body to `sink` as it arrives."""
    buffer = bytearray(RECV_SIZE)
    view = memoryview(buffer)
    head = bytearray()
    while True:
        count = sock.recv_into(buffer)
        if count == 0:
            raise ConnectionError(f"connection closed inside the response head: {bytes(head)!r}")
        head += view[:count]
        end = head.find(b"\r\n\r\n")
        if end >= 0:
            break
    response = _parse_head(bytes(head[:end]))
    rest = memoryview(bytes(head[end + 4 :]))

    length = response.headers.get("content-length")
    if "chunked" in response.headers.get("transfer-encoding", "").lower():
        decoder = ChunkedDecoder(sink)
        decoder.feed(rest)
        while not decoder.done:
            count = sock.recv_into(buffer)
            if count == 0:
                raise ConnectionError("connection closed inside a chunked body")
            decoder.feed(view[:count])
    elif length is not None:
        remaining = int(length) - len(rest)
        sink(rest)
        while remaining > 0:
            count = sock.recv_into(buffer, min(remaining, RECV_SIZE))
            if count == 0:
                raise ConnectionError(f"connection closed with {remaining} body bytes to come")
            sink(view[:count])
            remaining -= count
    else:
        sink(rest)
        while count := sock.recv_into(buffer):
            sink(view[:count])
    return response


def _parse_head(head: bytes) -> Response:
    status_line, *lines = head.decode("latin-1").split("\r\n")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/"):
        raise ValueError(f"not an HTTP response: {status_line!r}")
    headers: dict[str, str] = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Response(status=int(parts[1]), headers=headers)


def make_pattern(size: int = PATTERN_SIZE) -> bytes:
    """A fixed pseudo-random block: a dropped, repeated or reordered byte shows up as a mismatch."""
    return random.Random(20240501).randbytes(size)


class PatternCheck:
    """A body sink that counts bytes and compares them, in order, with the repeated pattern.

    Data is copied into a window one pattern long, compared whole each time it fills: one
    memcpy and one memcmp per byte, whatever sizes the response arrives in.
    """

    def __init__(self, pattern: bytes) -> None:
        self.pattern = pattern
        self.window = bytearray(len(pattern))
        self.filled = 0
        self.compared = 0
        self.first_mismatch: int | None = None

    @property
    def received(self) -> int:
        return self.compared + self.filled

    def __call__(self, data: memoryview) -> None:
        pos, end = 0, len(data)
        while pos < end:
            take = min(end - pos, len(self.window) - self.filled)
            self.window[self.filled : self.filled + take] = data[pos : pos + take]
            self.filled += take
            pos += take
            if self.filled == len(self.window):
                self._compare()

    def finish(self) -> None:
        """Compare what is left in a partly filled window; call once the body has ended."""
        if self.filled:
            self._compare()

    def _compare(self) -> None:
        full = self.filled == len(self.window)
        got = self.window if full else self.window[: self.filled]
        expected = self.pattern if full else self.pattern[: self.filled]
        if self.first_mismatch is None and got != expected:  # bytearray != bytes: a memcmp
            differs = next(i for i in range(self.filled) if got[i] != expected[i])
            self.first_mismatch = self.compared + differs
        self.compared += self.filled
        self.filled = 0


class Collect:
    """A body sink that counts bytes and keeps the first `limit` of them."""

    def __init__(self, limit: int = 4096) -> None:
        self.limit = limit
        self.received = 0
        self.data = bytearray()

    def __call__(self, data: memoryview) -> None:
        if len(self.data) < self.limit:
            self.data += data[: self.limit - len(self.data)]
        self.received += len(data)


@dataclass
class StreamResult:
    """What one streamed upload measured."""

    sent: int
    seconds: float
    response: Response
    client_cpu_seconds: float
    error: str | None = None


def stream_upload(
    port: int, size: int, pattern: bytes, sink: BodySink, timeout: float = IO_TIMEOUT
) -> StreamResult:
    """POST `size` bytes of the repeated `pattern` to / while reading the response into `sink`.

    Times from the first byte sent to the last byte of the response read.
    """
    head = (
        f"POST / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/octet-stream\r\nContent-Length: {size}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    block = memoryview(pattern)
    outcome: dict[str, object] = {}

    def reader(sock: socket.socket) -> None:
        try:
            outcome["response"] = read_response(sock, sink)
        except Exception as exc:  # reported, not raised, from the reader thread
            outcome["error"] = f"reading: {type(exc).__name__}: {exc}"
        outcome["finished"] = time.perf_counter()

    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        thread = threading.Thread(target=reader, args=(sock,), daemon=True)
        thread.start()
        cpu_before = _cpu_seconds()
        started = time.perf_counter()
        sent = 0
        try:
            sock.sendall(head)
            while sent < size:
                piece = block[: min(len(block), size - sent)]
                sock.sendall(piece)
                sent += len(piece)
        except OSError as exc:
            outcome.setdefault("error", f"sending, after {sent} bytes: {type(exc).__name__}: {exc}")
        thread.join(timeout + 5)
        if thread.is_alive():
            sock.shutdown(socket.SHUT_RDWR)
            thread.join()
            outcome.setdefault("error", "timed out reading the response")
    cpu = _cpu_seconds() - cpu_before
    finished = outcome.get("finished", time.perf_counter())
    assert isinstance(finished, float)
    response = outcome.get("response", Response())
    assert isinstance(response, Response)
    error = outcome.get("error")
    return StreamResult(
        sent=sent,
        seconds=finished - started,
        response=response,
        client_cpu_seconds=cpu,
        error=error if isinstance(error, str) else None,
    )


def _cpu_seconds() -> float:
    """CPU time of this process (all its threads): the client's own share of a 2-core machine."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
