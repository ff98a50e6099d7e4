"""Running out of file descriptors: said once in the log, and no connection reset.

With too few descriptors the watchdog stops accepting for a moment, as Go's server does: the
connections it cannot take yet wait in the listen backlog and are answered once others close.
(libuv's own accept loop, under uvloop's create_server, accepted them and closed them at once:
87 of 200 connections were reset, and nothing was logged.)
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from pathlib import Path

from conftest import Watchdog, read_until

Factory = Callable[..., Watchdog]

CONNECTIONS = 200
# Enough for the watchdog's own descriptors and a few dozen connections, not for 200.
DESCRIPTOR_LIMIT = 64


def test_descriptor_exhaustion_is_logged_and_resets_no_connection(
    watchdog_factory: Factory, tmp_path: Path
) -> None:
    public = tmp_path / "public"
    public.mkdir()
    (public / "hello.txt").write_bytes(b"hello, descriptors")
    watchdog = watchdog_factory(
        mode="static",
        static_path=str(public),
        http_workers="1",  # one process, whose cache then holds the file after one read
        command_prefix=("prlimit", f"--nofile={DESCRIPTOR_LIMIT}:{DESCRIPTOR_LIMIT}", "--"),
    )
    # Read once, so that it is answered from memory: opening it needs a descriptor too.
    assert watchdog.request("GET", "/hello.txt")[0] == 200
    connected = threading.Barrier(CONNECTIONS, timeout=30)
    outcomes: list[str] = []
    lock = threading.Lock()

    def client() -> None:
        try:
            with socket.create_connection(("127.0.0.1", watchdog.port), timeout=30) as sock:
                # Every client connected before any asks: far more than the limit at once.
                connected.wait()
                sock.sendall(b"GET /hello.txt HTTP/1.1\r\nHost: test\r\n\r\n")
                reply = read_until(sock, b"descriptors")
                outcome = "200" if reply.startswith(b"HTTP/1.1 200") else repr(reply[:40])
        except (OSError, AssertionError) as error:
            outcome = f"{type(error).__name__}: {error}"
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=client) for _ in range(CONNECTIONS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    failed = [outcome for outcome in outcomes if outcome != "200"]
    assert len(outcomes) == CONNECTIONS
    assert failed == [], f"{len(failed)} of {CONNECTIONS} failed: {sorted(set(failed))[:5]}"
    log = watchdog.wait_for_log("file descriptors")
    said = [line for line in log.splitlines() if "out of file descriptors" in line]
    assert 1 <= len(said) <= 3, said
    # And it serves on.
    assert watchdog.request("GET", "/hello.txt")[0] == 200


def test_a_file_that_cannot_be_opened_for_want_of_descriptors_is_503_not_404(
    watchdog_factory: Factory, tmp_path: Path
) -> None:
    """Every descriptor held by a connection: opening a file fails with EMFILE, which says
    nothing about the file; the client gets 503 (retry), never a 404 it would believe."""
    public = tmp_path / "public"
    public.mkdir()
    (public / "hello.txt").write_bytes(b"hello, descriptors")
    watchdog = watchdog_factory(
        mode="static",
        static_path=str(public),
        http_workers="1",
        command_prefix=("prlimit", f"--nofile={DESCRIPTOR_LIMIT}:{DESCRIPTOR_LIMIT}", "--"),
    )
    connected = threading.Barrier(CONNECTIONS, timeout=30)
    statuses: list[str] = []
    lock = threading.Lock()

    def client() -> None:
        try:
            with socket.create_connection(("127.0.0.1", watchdog.port), timeout=30) as sock:
                connected.wait()  # the accepted connections take every descriptor first
                sock.sendall(b"GET /hello.txt HTTP/1.1\r\nHost: test\r\n\r\n")
                reply = read_until(sock, b"\r\n")
                status = reply.split(b" ", 2)[1].decode()
        except (OSError, AssertionError, IndexError) as error:
            status = f"{type(error).__name__}: {error}"
        with lock:
            statuses.append(status)

    threads = [threading.Thread(target=client) for _ in range(CONNECTIONS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(statuses) == CONNECTIONS
    assert set(statuses) <= {"200", "503"}, sorted(set(statuses))
    assert "503" in statuses
    assert watchdog.request("GET", "/hello.txt")[0] == 200
