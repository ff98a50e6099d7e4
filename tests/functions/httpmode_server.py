"""A function's own HTTP server for http mode tests (started by the watchdog as `fprocess`).

Listens on 127.0.0.1:$UPSTREAM_PORT after $STARTUP_DELAY seconds. Each path is one behaviour
a test needs; see `Handler.do_GET` for the list. Prints a line to stdout and one to stderr at
start, and `SIGTERM received` to stderr when terminated (it then exits 0 unless
$IGNORE_SIGTERM is set, in which case only SIGKILL ends it).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import socket
import struct
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

WEBSOCKET_GUID = "258EAFA5-E914-47CA-C5AB-0DC85B11B5DB"
RELEASES: dict[str, threading.Event] = {}
RELEASES_LOCK = threading.Lock()
SERVER: ThreadingHTTPServer | None = None


def release_event(key: str) -> threading.Event:
    with RELEASES_LOCK:
        return RELEASES.setdefault(key, threading.Event())


COUNTED: list[None] = []  # one entry per /count request answered


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Per connection: answer the next request by closing, after its head ("head") or after
    # its head and the first line of its body ("body"); "" for no.
    drop_next_request = ""

    def log_message(self, format: str, *args: object) -> None:
        pass  # keep the watchdog's log for the tests' own lines

    # --- helpers ---
    def query(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(urlsplit(self.path).query).items()}

    def read_body(self) -> tuple[bytes, str]:
        """The request body and how it was framed."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts = []
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(parts), "chunked"
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        length = self.headers.get("Content-Length")
        if length is not None:
            return self.rfile.read(int(length)), f"length {length}"
        return b"", "none"

    def reply(self, status: int, body: bytes, headers: list[tuple[str, str]] | None = None) -> None:
        self.send_response(status)
        for name, value in headers or []:
            self.send_header(name, value)
        if status in (204, 304):
            self.end_headers()  # no body, whatever was asked
            return
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def write_chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    # --- routes ---
    def handle_one_request(self) -> None:
        if self.drop_next_request:
            # Close when the next request arrives, without answering: what a pooled connection
            # looks like when the server timed it out just as it was reused.
            request_line = self.rfile.readline(65537)
            while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                pass
            if self.drop_next_request == "body":
                self.rfile.readline()
            if request_line:
                print(f"dropped {request_line.decode().strip()}", file=sys.stderr, flush=True)
            self.close_connection = True
            return
        super().handle_one_request()

    def do_GET(self) -> None:
        self.route()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_GET

    def route(self) -> None:
        path = urlsplit(self.path).path
        query = self.query()
        if path == "/echo":
            body, framing = self.read_body()
            info = {
                "method": self.command,
                "target": self.path,
                "headers": [[name, value] for name, value in self.headers.items()],
                "framing": framing,
                "peer_port": self.client_address[1],
                "body": body.decode("latin-1"),
            }
            self.reply(200, json.dumps(info).encode(), [("Content-Type", "application/json")])
        elif path == "/whole":
            # A whole answer in one write, as fast servers send small ones.
            self.read_body()
            self.wfile.write(
                b"HTTP/1.1 200 OK\r\nServer: whole\r\nDate: Sat, 28 Nov 2026 03:00:00 GMT\r\n"
                b"Content-Length: 6\r\nConnection: keep-alive\r\nSet-Cookie: a=1\r\n"
                b"Set-Cookie: b=2\r\n\r\nwhole\n"
            )
        elif path == "/node":
            # As Node's http server answers (Express): Connection and Keep-Alive, in one write.
            self.read_body()
            self.wfile.write(
                b"HTTP/1.1 200 OK\r\nX-Powered-By: Express\r\nContent-Length: 5\r\n"
                b"Date: Sat, 28 Nov 2026 03:00:00 GMT\r\nConnection: keep-alive\r\n"
                b"Keep-Alive: timeout=5\r\n\r\nnode\n"
            )
        elif path == "/count":
            # How many requests for /count this server has answered, in one write.
            self.read_body()
            COUNTED.append(None)
            body = b"%d\n" % len(COUNTED)
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body))
        elif path == "/sleep":
            self.read_body()
            print(f"sleeping {query.get('s', '1')}", file=sys.stderr, flush=True)
            time.sleep(float(query.get("s", "1")))
            self.reply(200, b"slept\n")
        elif path == "/status":
            self.read_body()
            code = int(query.get("code", "200"))
            headers = [("Location", "/elsewhere")] if 300 <= code < 400 else []
            self.reply(code, f"status {code}\n".encode(), headers)
        elif path == "/cookies":
            self.reply(200, b"", [("Set-Cookie", "a=1"), ("Set-Cookie", "b=2; Path=/")])
        elif path == "/hop":
            self.reply(
                200,
                b"hop\n",
                [
                    ("Connection", "X-Secret"),
                    ("X-Secret", "hidden"),
                    ("Keep-Alive", "timeout=5"),
                    ("Proxy-Authenticate", "Basic"),
                    ("Trailer", "X-Checksum"),
                    ("Upgrade", "h2c"),
                    ("X-Visible", "shown"),
                    ("X-Duration-Seconds", "99"),
                ],
            )
        elif path == "/sse":
            # One event, then wait for /release?key=... before each of the next ones.
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            key = query.get("key", "sse")
            count = int(query.get("n", "3"))
            for number in range(1, count + 1):
                if number > 1:
                    event = release_event(f"{key}-{number}")
                    if not event.wait(10):
                        self.write_chunk(b"data: gave up\n\n")
                        break
                self.write_chunk(f"data: event {number}\n\n".encode())
            self.wfile.write(b"0\r\n\r\n")
        elif path == "/bytes":
            # n bytes of a repeating pattern, in 64 KiB writes.
            total = int(query["n"])
            self.send_response(200)
            self.send_header("Content-Length", str(total))
            self.end_headers()
            block = bytes(range(256)) * 256
            sent = 0
            while sent < total:
                piece = block[: total - sent]
                self.wfile.write(piece)
                sent += len(piece)
        elif path == "/sink":
            # Reads the body in pieces and answers its length and digest.
            digest = hashlib.sha256()
            size = 0
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                body, _ = self.read_body()
                digest.update(body)
                size = len(body)
            else:
                remaining = int(self.headers.get("Content-Length", "0"))
                while remaining:
                    piece = self.rfile.read(min(remaining, 65536))
                    digest.update(piece)
                    size += len(piece)
                    remaining -= len(piece)
            self.reply(200, f"{size} {digest.hexdigest()}\n".encode())
        elif path == "/release":
            release_event(query["key"]).set()
            self.reply(200, b"released\n")
        elif path == "/stream-echo":
            # Answers each body chunk with a line as it arrives (the body must stream in).
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    break
                data = self.rfile.read(size)
                self.rfile.readline()
                self.write_chunk(b"got " + data + b"\n")
            self.wfile.write(b"0\r\n\r\n")
        elif path == "/until-eof":
            # An HTTP/1.0-style body: no length, ended by closing the connection.
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it\n")
            self.close_connection = True
        elif path == "/cut-chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.write_chunk(b"first part\n")
            time.sleep(0.2)
            self.close_connection = True
        elif path == "/cut-length":
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.end_headers()
            self.wfile.write(b"only ten b")
            self.wfile.flush()
            time.sleep(0.2)
            self.close_connection = True
        elif path == "/garbage":
            self.read_body()
            self.wfile.write(b"THIS IS NOT HTTP\r\n\r\n")
            self.close_connection = True
        elif path == "/reset":
            self.read_body()
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
        elif path == "/then-drop":
            # Answer, keep the connection, and drop the next request that comes on it.
            self.read_body()
            self.reply(200, f"pid {os.getpid()}\n".encode())
            self.drop_next_request = query.get("after", "head")
        elif path == "/pid":
            self.reply(200, f"{os.getpid()}\n".encode())
        elif path == "/stop-listening":
            assert SERVER is not None
            # shutdown() stops a listening socket at once on Linux; close() alone waits for
            # serve_forever's poll to let go of it.
            SERVER.socket.shutdown(socket.SHUT_RDWR)
            threading.Thread(target=SERVER.shutdown, daemon=True).start()
            self.reply(200, b"stopped listening\n", [("Connection", "close")])
            self.close_connection = True
        elif path == "/exit":
            # Exit at once, without answering.
            code = int(query.get("code", "3"))
            print(f"exiting with {code}", file=sys.stderr)
            sys.stderr.flush()
            os._exit(code)
        elif path == "/websocket":
            self.websocket_echo()
        else:
            self.reply(404, b"no such path\n")

    def websocket_echo(self) -> None:
        key = self.headers.get("Sec-WebSocket-Key", "")
        accept = base64.b64encode(hashlib.sha1((key + WEBSOCKET_GUID).encode()).digest())
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept.decode())
        self.end_headers()
        self.wfile.flush()
        while True:
            head = self.rfile.read(2)
            if len(head) < 2:
                break
            opcode, length = head[0] & 0x0F, head[1] & 0x7F
            if length == 126:
                length = struct.unpack("!H", self.rfile.read(2))[0]
            elif length == 127:
                length = struct.unpack("!Q", self.rfile.read(8))[0]
            mask = self.rfile.read(4) if head[1] & 0x80 else b"\0\0\0\0"
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(self.rfile.read(length)))
            if opcode == 0x8:  # close: answer it and stop
                self.wfile.write(b"\x88\x00")
                break
            frame = bytes([0x80 | opcode])
            if len(payload) < 126:
                frame += bytes([len(payload)])
            else:
                frame += bytes([126]) + struct.pack("!H", len(payload))
            self.wfile.write(frame + payload)
            self.wfile.flush()
        self.close_connection = True


def on_sigterm(signum: int, frame: object) -> None:
    print("SIGTERM received", file=sys.stderr)
    sys.stderr.flush()
    if not os.environ.get("IGNORE_SIGTERM"):
        os._exit(0)


def main() -> None:
    global SERVER
    signal.signal(signal.SIGTERM, on_sigterm)
    time.sleep(float(os.environ.get("STARTUP_DELAY", "0")))
    port = int(os.environ["UPSTREAM_PORT"])
    ThreadingHTTPServer.daemon_threads = True
    SERVER = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print(f"listening on {port}", flush=True)
    print("ready on stderr too", file=sys.stderr, flush=True)
    SERVER.serve_forever()
    # /stop-listening stopped accepting; connections already open are still served.
    while True:
        time.sleep(1)


if __name__ == "__main__":
    main()
