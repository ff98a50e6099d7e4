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


def starved_watchdog(watchdog_factory: Factory, tmp_path: Path) -> Watchdog:
    """Static mode in one process (whose cache then holds a file after one read) with
    DESCRIPTOR_LIMIT descriptors, serving hello.txt."""
    public = tmp_path / "public"
    public.mkdir()
    (public / "hello.txt").write_bytes(b"hello, descriptors")
    return watchdog_factory(
        mode="static",
        static_path=str(public),
        http_workers="1",
        command_prefix=("prlimit", f"--nofile={DESCRIPTOR_LIMIT}:{DESCRIPTOR_LIMIT}", "--"),
    )


def statuses_at_once(watchdog: Watchdog) -> list[str]:
    """CONNECTIONS clients, every one connected before any asks (far more than the limit at
    once), each GETting hello.txt: the status each got, or what went wrong."""
    connected = threading.Barrier(CONNECTIONS, timeout=30)
    statuses: list[str] = []
    lock = threading.Lock()

    def client() -> None:
        try:
            with socket.create_connection(("127.0.0.1", watchdog.port), timeout=30) as sock:
                connected.wait()
                sock.sendall(b"GET /hello.txt HTTP/1.1\r\nHost: test\r\n\r\n")
                head = read_until(sock, b"\r\n\r\n")
                status = head.split(b" ", 2)[1].decode()
                if status == "200":
                    read_until(sock, b"descriptors", head)  # and the whole body
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
    return statuses


def test_descriptor_exhaustion_is_logged_and_resets_no_connection(
    watchdog_factory: Factory, tmp_path: Path
) -> None:
    watchdog = starved_watchdog(watchdog_factory, tmp_path)
    # Read once, so that it is answered from memory: opening it needs a descriptor too.
    assert watchdog.request("GET", "/hello.txt")[0] == 200
    failed = [status for status in statuses_at_once(watchdog) if status != "200"]
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
    watchdog = starved_watchdog(watchdog_factory, tmp_path)
    statuses = statuses_at_once(watchdog)  # the accepted connections take every descriptor
    assert set(statuses) <= {"200", "503"}, sorted(set(statuses))
    assert "503" in statuses
    assert watchdog.request("GET", "/hello.txt")[0] == 200
