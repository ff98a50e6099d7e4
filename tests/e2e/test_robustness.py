"""Mangled requests from a seeded fuzzer: the server answers or closes, never crashes or leaks.

Run against three modes, so that both ways a request is answered are shaken: by a task
(streaming), and at once or by callbacks from the parser's read (cached static files, probes,
http mode's pooled connections).
"""

from __future__ import annotations

import random
import socket
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import Watchdog, http_mode_settings, wait_until

Factory = Callable[..., Watchdog]

SEEDS = (
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
    b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"GET /_/health HTTP/1.1\r\n\r\n",
    b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc",
    b"GET /a?b=c HTTP/1.0\r\n\r\n",
    b"GET /hello.txt HTTP/1.1\r\nHost: x\r\n\r\n",
    b"HEAD /hello.txt HTTP/1.1\r\nRange: bytes=0-2\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi",
)


def mutate(rng: random.Random, data: bytes) -> bytes:
    """Flip, insert and delete bytes, or glue another request on (pipelining)."""
    mangled = bytearray(data)
    for _ in range(rng.randint(1, 6)):
        operation = rng.randint(0, 3)
        at = rng.randrange(len(mangled)) if mangled else 0
        if operation == 0 and mangled:
            mangled[at] = rng.randrange(256)
        elif operation == 1:
            mangled[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif operation == 2 and mangled:
            del mangled[at : at + rng.randint(1, 8)]
        else:
            mangled += rng.choice(SEEDS)
    return bytes(mangled)


def start_mode(factory: Factory, mode: str, tmp_path: Path) -> Watchdog:
    if mode == "static":
        (tmp_path / "hello.txt").write_bytes(b"hello\n")
        return factory(mode="static", static_path=str(tmp_path), read_timeout="1s")
    if mode == "http":
        watchdog = factory(**http_mode_settings(read_timeout="1s"))
        assert wait_until(lambda: watchdog.request("GET", "/_/health")[0] == 200, timeout=10)
        return watchdog
    return factory(fprocess="cat", read_timeout="1s")


def still_serving(watchdog: Watchdog, mode: str) -> None:
    if mode == "static":
        assert watchdog.request("GET", "/hello.txt")[::2] == (200, b"hello\n")
    elif mode == "http":
        status, _, body = watchdog.request("POST", "/echo", body=b"still alive")
        assert status == 200 and b'"body": "still alive"' in body
    else:
        assert watchdog.request("POST", "/", body=b"still alive")[::2] == (200, b"still alive")


@pytest.mark.parametrize("mode", ["streaming", "static", "http"])
def test_mangled_requests_never_crash_the_server_or_leave_unhandled_errors(
    watchdog_factory: Factory, tmp_path: Path, mode: str
) -> None:
    watchdog = start_mode(watchdog_factory, mode, tmp_path)
    still_serving(watchdog, mode)  # warm: the file cached, a pooled upstream connection
    rng = random.Random(20261127)
    for _ in range(300):
        data = mutate(rng, rng.choice(SEEDS))
        with socket.create_connection(("127.0.0.1", watchdog.port), timeout=2) as sock:
            sock.sendall(data)
            if rng.random() < 0.5:
                sock.shutdown(socket.SHUT_WR)
            try:
                while sock.recv(65536):
                    pass
            except (TimeoutError, ConnectionResetError):
                pass
        assert watchdog.process.poll() is None, f"died on {data!r}"
    still_serving(watchdog, mode)
    # The watchdog's own lines: http mode's test server may print tracebacks of its own (a
    # mangled request it chokes on, a connection we dropped under it); those are the function's.
    log = "\n".join(
        line
        for line in watchdog.log().splitlines()
        if " stderr: " not in line and " stdout: " not in line
    )
    assert "Traceback" not in log
    assert "never retrieved" not in log
    assert "error serving" not in log  # a mode raised: the HTTP layer's last resort
