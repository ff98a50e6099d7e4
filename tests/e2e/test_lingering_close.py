"""An answer given before the request body was read still reaches the client (issue 15, item 7).

When the function, the upstream or the watchdog itself (max_inflight's 429) answers before a
32 MiB upload has been read, closing with unread bytes makes the kernel reset the connection
and the answer is lost. Two kinds of client must get it: one that reads while it sends (curl,
and a thread here that does the same) and one that sends the whole body before it reads
(Python's http.client, many SDKs). In every mode. The answer expected is the one a small
upload gets from the same watchdog.
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import Watchdog, free_port, function, health, wait_until
from raw_http import ResponseReader, connect, exchange_while_sending

Factory = Callable[..., Watchdog]
MiB = 1024 * 1024
UPLOAD_MIB = 32
BLOCK = bytes(range(256)) * (MiB // 256)
# How long a client waits on a stalled send or read before the test fails (not hangs).
PATIENCE = 30.0


def upload_head(target: str, method: str = "POST") -> bytes:
    return (
        f"{method} {target} HTTP/1.1\r\nHost: fwatchdog\r\n"
        f"Content-Type: application/octet-stream\r\nContent-Length: {UPLOAD_MIB * MiB}\r\n\r\n"
    ).encode()


def upload_pieces(target: str, method: str) -> Iterator[bytes]:
    yield upload_head(target, method)
    for _ in range(UPLOAD_MIB):
        yield BLOCK


def send_first(watchdog: Watchdog, target: str, method: str) -> tuple[int, bytes]:
    """Send the whole request, then read the answer, as http.client does."""
    with connect(watchdog.port, timeout=PATIENCE) as sock:
        try:
            for piece in upload_pieces(target, method):
                sock.sendall(piece)
        except TimeoutError:
            raise AssertionError("the watchdog stopped reading the body and never closed") from None
        except (BrokenPipeError, ConnectionResetError) as error:
            raise AssertionError(f"the connection was reset while sending: {error!r}") from None
        response = ResponseReader(sock).read_response()
    return response.status, response.body


def read_while_sending(watchdog: Watchdog, target: str, method: str) -> tuple[int, bytes]:
    """Send from a thread while reading the answer, as curl does."""
    with connect(watchdog.port, timeout=PATIENCE) as sock:
        response = exchange_while_sending(sock, upload_pieces(target, method))
    return response.status, response.body


def real_curl(
    watchdog: Watchdog, target: str, method: str, expect: bool = False
) -> tuple[int, bytes]:
    """curl itself, its status and output; exit 55 or 56 is the reset the issue found.
    Without `expect`, "Expect:" unset: curl sends the body at once, as for smaller uploads;
    with it, curl's own way for a large one (Expect: 100-continue, the body after 100 or 1 s)."""
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed")
    body_file = watchdog.tmpdir / "upload.bin"
    with open(body_file, "wb") as out:
        for _ in range(UPLOAD_MIB):
            out.write(BLOCK)
    command = [curl, "-sS", "-X", method, "--data-binary", f"@{body_file}"]
    command += [] if expect else ["-H", "Expect:"]
    command += ["-H", "Content-Type: application/octet-stream", "-w", "\n%{http_code}"]
    process = subprocess.run(
        [*command, f"http://127.0.0.1:{watchdog.port}{target}"],
        capture_output=True,
        timeout=PATIENCE,
        check=False,
    )
    output, errors = process.stdout, process.stderr
    assert process.returncode == 0, f"curl exit {process.returncode}: {errors.decode()}"
    body, _, code = output.rpartition(b"\n")
    return int(code), body


CLIENTS = {
    "send-first": send_first,
    "read-while-sending": read_while_sending,
    "curl": real_curl,
    "curl with Expect": functools.partial(real_curl, expect=True),
}


def small_upload(watchdog: Watchdog, target: str, method: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", watchdog.port, timeout=PATIENCE)
    try:
        conn.request(method, target, body=b"small", headers={"Content-Type": "text/plain"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def hold_the_only_slot(watchdog: Watchdog) -> socket.socket:
    """Keep one request in flight (a function that sleeps) so that the next gets 429; closing
    the socket returned ends it."""
    sock = socket.create_connection(("127.0.0.1", watchdog.port), timeout=PATIENCE)
    sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
    assert wait_until(lambda: "http_requests_in_flight 1" in watchdog.metrics(), timeout=10)
    return sock


def http_settings(port: int) -> dict[str, str]:
    return {
        "mode": "http",
        "fprocess": f"{sys.executable} {function('echo_upstream.py')}",
        "BEHAVIOUR": "answer-at-head",
        "upstream_url": f"http://127.0.0.1:{port}",
        "UPSTREAM_PORT": str(port),
    }


# name: (settings given the static root, target, method)
CASES: dict[str, tuple[Callable[[Path], dict[str, str]], str, str]] = {
    "streaming, function that never reads": (lambda _: {"fprocess": "echo hi"}, "/", "POST"),
    "serializing, function that never reads": (
        lambda _: {"mode": "serializing", "fprocess": function("ser_ignore_stdin.sh")},
        "/",
        "POST",
    ),
    "afterburn, handler that ignores the body": (
        lambda _: {
            "mode": "afterburn",
            "fprocess": f"{sys.executable} {function('request_report_afterburn.py')}",
        },
        "/early",
        "POST",
    ),
    "http, upstream that answers at the head": (
        lambda _: http_settings(free_port()),
        "/",
        "POST",
    ),
    "static, 405 for a POST": (
        lambda root: {"mode": "static", "static_path": str(root)},
        "/file.txt",
        "POST",
    ),
    "static, GET with a body": (
        lambda root: {"mode": "static", "static_path": str(root)},
        "/file.txt",
        "GET",
    ),
    "max_inflight 429": (
        lambda _: {"fprocess": "sleep 20", "max_inflight": "1"},
        "/",
        "POST",
    ),
}


@pytest.mark.parametrize("client", list(CLIENTS))
@pytest.mark.parametrize("case", list(CASES))
def test_an_early_answer_to_a_32_mib_upload_reaches_the_client(
    watchdog_factory: Factory, tmp_path: Path, case: str, client: str
) -> None:
    settings, target, method = CASES[case]
    root = tmp_path / "site"
    root.mkdir()
    (root / "file.txt").write_text("a static file\n")
    watchdog = watchdog_factory(exec_timeout="30s", write_timeout="30s", **settings(root))
    assert wait_until(lambda: health(watchdog) == 200, timeout=10)
    with contextlib.ExitStack() as held:
        if case == "max_inflight 429":
            held.enter_context(hold_the_only_slot(watchdog))
        expected = small_upload(watchdog, target, method)
        assert expected[0] == (429 if case == "max_inflight 429" else expected[0])
        assert CLIENTS[client](watchdog, target, method) == expected
