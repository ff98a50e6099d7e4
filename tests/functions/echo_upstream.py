"""An http mode upstream on raw sockets that says what it saw (started by the watchdog as
`fprocess`), for tests that must control exactly when it reads and answers.

Listens on 127.0.0.1:$UPSTREAM_PORT. $BEHAVIOUR chooses what it does with each request:
- `echo` (default): reads the request whole and answers 200 with JSON of what it saw: method,
  target, header fields in order, body, and how the body was framed.
- `drop-second`: as echo, except that the second request read on a connection is read whole
  and then the connection is closed without a byte of answer (a function that crashed).
- `answer-at-head`: answers 200 `early` as soon as it has a request's head, then reads and
  discards the body (as express does for a type it has no parser for).
Every request read is appended as a JSON line to $SEEN_LOG when that is set.
"""

from __future__ import annotations

import json
import os
import socket
import threading

BEHAVIOUR = os.environ.get("BEHAVIOUR", "echo")
SEEN_LOG = os.environ.get("SEEN_LOG", "")
SEEN_LOCK = threading.Lock()


class Closed(Exception):
    """The watchdog closed the connection between requests."""


class Reader:
    """Buffered reads of lines and exact sizes from one connection."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def fill(self) -> None:
        data = self.sock.recv(1 << 20)
        if not data:
            raise Closed
        self.buffer += data

    def line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            self.fill()
        line, _, self.buffer = self.buffer.partition(b"\r\n")
        return line

    def exact(self, size: int) -> bytes:
        while len(self.buffer) < size:
            self.fill()
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def discard(self, size: int) -> None:
        """Read `size` bytes without keeping them (a 32 MiB body)."""
        while size:
            if not self.buffer:
                self.fill()
            taken = min(size, len(self.buffer))
            self.buffer = self.buffer[taken:]
            size -= taken


def read_body(reader: Reader, fields: list[tuple[str, str]], keep: bool) -> tuple[bytes, str]:
    """The body (or b"" when not `keep`) and its framing."""
    names = {name.lower(): value for name, value in fields}
    if "chunked" in names.get("transfer-encoding", "").lower():
        parts = []
        while size := int(reader.line().split(b";")[0], 16):
            parts.append(reader.exact(size))
            reader.line()
        while reader.line():
            pass  # trailers
        return (b"".join(parts) if keep else b""), "chunked"
    if "content-length" in names:
        length = int(names["content-length"])
        if keep:
            return reader.exact(length), f"length {length}"
        reader.discard(length)
        return b"", f"length {length}"
    return b"", "none"


def answer(sock: socket.socket, status: int, body: bytes, close: bool, head_only: bool) -> None:
    """An answer with a Content-Length; to a HEAD, without the body."""
    head = f"HTTP/1.1 {status} OK\r\nContent-Type: application/json\r\n"
    head += f"Content-Length: {len(body)}\r\n" + ("Connection: close\r\n" if close else "")
    sock.sendall(head.encode() + b"\r\n" + (b"" if head_only else body))


def note(seen: dict[str, object]) -> None:
    if SEEN_LOG:
        with SEEN_LOCK, open(SEEN_LOG, "a") as log:
            log.write(json.dumps(seen) + "\n")


def serve_connection(sock: socket.socket) -> None:
    reader = Reader(sock)
    number = 0
    with sock:
        try:
            while True:
                method, target, _ = reader.line().decode("latin-1").split(" ", 2)
                fields = []
                while line := reader.line():
                    name, _, value = line.decode("latin-1").partition(":")
                    fields.append((name, value.strip()))
                number += 1
                close = any(n.lower() == "connection" and "close" in v.lower() for n, v in fields)
                if BEHAVIOUR == "answer-at-head":
                    answer(sock, 200, b"early", close, method == "HEAD")
                    read_body(reader, fields, keep=False)
                    note({"method": method, "target": target, "connection_request": number})
                    if close:
                        return
                    continue
                body, framing = read_body(reader, fields, keep=True)
                seen = {
                    "method": method,
                    "target": target,
                    "fields": fields,
                    "body": body.decode("latin-1"),
                    "framing": framing,
                }
                note({**seen, "connection_request": number})
                if BEHAVIOUR == "drop-second" and number == 2:
                    return  # closed without a byte of answer
                answer(sock, 200, json.dumps(seen).encode(), close, method == "HEAD")
                if close:
                    return
        except (Closed, ConnectionError):
            return


def main() -> None:
    listener = socket.create_server(("127.0.0.1", int(os.environ["UPSTREAM_PORT"])))
    while True:
        sock, _ = listener.accept()
        threading.Thread(target=serve_connection, args=(sock,), daemon=True).start()


if __name__ == "__main__":
    main()
