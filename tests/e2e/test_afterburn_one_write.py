"""Afterburn writes a request that fits in the pipe in one write: head and body together.

Functions' own stdin parsers (the published node-afterburn template's among them) take one
read of stdin as the whole request; a head written apart from its body reaches them as a
request without a body. Under load that happened to about half the small requests.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from conftest import Watchdog

Factory = Callable[..., Watchdog]

# Like the node template: a request is what one read of stdin returns. When the body is not
# all in it, answer 502 (what the watchdog's client would have seen), then read the rest of
# the body so that the next request is read in step (the template would not: it desyncs).
ONE_READ_FUNCTION = r"""
import os

def answer(status, body):
    os.write(1, b"HTTP/1.1 %d X\r\nContent-Length: %d\r\n\r\n" % (status, len(body)) + body)

while True:
    data = os.read(0, 1 << 20)
    if not data:
        break
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if len(body) == length:
        answer(200, body)
        continue
    missing = length - len(body)
    while missing > 0:
        missing -= len(os.read(0, missing))
    answer(502, b"body not in the request's read")
"""

REQUESTS = 1000
CONNECTIONS = 8


def test_afterburn_small_request_arrives_in_one_read(
    watchdog_factory: Factory, tmp_path: Path
) -> None:
    program = tmp_path / "one_read.py"
    program.write_text(ONE_READ_FUNCTION)
    watchdog = watchdog_factory(
        mode="afterburn", fprocess=f"{sys.executable} {program}", afterburn_processes="4"
    )
    failures: list[tuple[int, bytes]] = []
    answered = [0]
    lock = threading.Lock()

    def client(count: int) -> None:
        conn = watchdog.connection(timeout=30)
        try:
            for index in range(count):
                body = os.urandom(64 + (index * 997) % 8000)
                conn.request("POST", f"/one-read/{index}", body=body)
                response = conn.getresponse()
                answer = response.read()
                with lock:
                    answered[0] += 1
                    if response.status != 200 or answer != body:
                        failures.append((response.status, answer[:60]))
        finally:
            conn.close()

    threads = [
        threading.Thread(target=client, args=(REQUESTS // CONNECTIONS,)) for _ in range(CONNECTIONS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert answered[0] == REQUESTS
    assert failures == [], f"{len(failures)} of {REQUESTS} failed, first: {failures[:3]}"
