"""A realistic function server for http mode benchmarks: Python's threading http.server.

Answers every request with a fixed 200 on 127.0.0.1:$UPSTREAM_PORT, HTTP/1.1 keep-alive,
after reading the request body.
"""

from __future__ import annotations

import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BODY = b"hello from python\n"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # One write per response and no Nagle, as real servers do: http.server's defaults (a write
    # for the head, another for the body) meet delayed ACKs and stall 40 ms per request.
    wbufsize = 64 * 1024
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    do_POST = do_GET


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # socketserver's 5 drops the SYNs of a burst of new connections

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # clients that leave mid-request (wrk at its end) are not news


if __name__ == "__main__":
    server = Server(("127.0.0.1", int(os.environ["UPSTREAM_PORT"])), Handler)
    server.serve_forever()
