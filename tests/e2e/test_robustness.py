"""Mangled requests from a seeded fuzzer: the server answers or closes, never crashes or leaks."""

from __future__ import annotations

import random
import socket
from collections.abc import Callable

from conftest import Watchdog

Factory = Callable[..., Watchdog]

SEEDS = (
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
    b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"GET /_/health HTTP/1.1\r\n\r\n",
    b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc",
    b"GET /a?b=c HTTP/1.0\r\n\r\n",
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


def test_mangled_requests_never_crash_the_server_or_leave_unhandled_errors(
    watchdog_factory: Factory,
) -> None:
    watchdog = watchdog_factory(fprocess="cat", read_timeout="1s")
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
    assert watchdog.request("POST", "/", body=b"still alive")[::2] == (200, b"still alive")
    log = watchdog.log()
    assert "Traceback" not in log
    assert "never retrieved" not in log
