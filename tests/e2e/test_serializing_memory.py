"""Serializing mode in bounded memory: bodies and outputs past a mebibyte wait in a spool file
under $TMPDIR, which is gone once the request ends, however it ends.

Bodies are generated on the fly and streamed, so the test itself holds a mebibyte at a time.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path

from conftest import Watchdog, wait_until

Factory = Callable[..., Watchdog]

MIB = 1024 * 1024
# A period that does not divide a mebibyte: a byte dropped, doubled or moved shows in the hash.
PATTERN = bytes(range(251)) * (MIB // 251 + 2)
# The watchdog's own peak: about 25 MiB at rest; the body must not add to it.
PEAK_RSS_LIMIT_KIB = 64 * 1024


def block(index: int) -> bytes:
    """The `index`th mebibyte of the test body."""
    start = (index * MIB) % 251
    return PATTERN[start : start + MIB]


def send_body(
    watchdog: Watchdog, size_mib: int, stop_after_mib: int | None = None
) -> socket.socket:
    """POST `size_mib` MiB of the pattern on a raw socket (all of it, or only `stop_after_mib`)."""
    sock = socket.create_connection(("127.0.0.1", watchdog.port), timeout=120)
    head = f"POST / HTTP/1.1\r\nHost: test\r\nContent-Length: {size_mib * MIB}\r\n\r\n"
    sock.sendall(head.encode())
    for index in range(size_mib if stop_after_mib is None else stop_after_mib):
        sock.sendall(block(index))
    return sock


def body_digest(size_mib: int) -> str:
    digest = hashlib.sha256()
    for index in range(size_mib):
        digest.update(block(index))
    return digest.hexdigest()


def read_response(sock: socket.socket) -> tuple[int, str | None, str, int]:
    """Status, Content-Length, the body's sha256 and length, read a mebibyte at a time."""
    response = http.client.HTTPResponse(sock)
    response.begin()
    digest = hashlib.sha256()
    length = 0
    while chunk := response.read(MIB):
        digest.update(chunk)
        length += len(chunk)
    return response.status, response.getheader("Content-Length"), digest.hexdigest(), length


def spool_files_open(watchdog: Watchdog) -> list[str]:
    """The watchdog's descriptors on files in its TMPDIR (a spool file shows as `(deleted)`)."""
    fd_dir = Path(f"/proc/{watchdog.process.pid}/fd")
    found = []
    for entry in fd_dir.iterdir():
        try:
            target = os.readlink(entry)
        except FileNotFoundError:
            continue
        if target.startswith(str(watchdog.tmpdir)) and not target.endswith("watchdog.log"):
            found.append(target)
    return found


def tmpdir_leftovers(watchdog: Watchdog) -> list[str]:
    return sorted(
        name for name in os.listdir(watchdog.tmpdir) if name not in (".lock", "watchdog.log")
    )


def assert_spool_gone(watchdog: Watchdog) -> None:
    assert wait_until(lambda: not spool_files_open(watchdog), timeout=10), spool_files_open(
        watchdog
    )
    assert tmpdir_leftovers(watchdog) == []


def test_serializing_counts_a_gibibyte_in_bounded_memory(watchdog_factory: Factory) -> None:
    """The issue's case: 1 GiB into `wc -c` took the watchdog to 2.1 GB resident."""
    watchdog = watchdog_factory(
        mode="serializing",
        fprocess="wc -c",
        exec_timeout="120s",
        read_timeout="120s",
        write_timeout="120s",
    )
    with send_body(watchdog, 1024) as sock:
        response = http.client.HTTPResponse(sock)
        response.begin()
        body = response.read()
    assert response.status == 200, body
    assert int(body) == 1024 * MIB
    assert response.getheader("Content-Length") == str(len(body))
    peak = watchdog.vmhwm_kib()
    assert peak < PEAK_RSS_LIMIT_KIB, f"watchdog peak RSS {peak} KiB"
    assert_spool_gone(watchdog)


def test_serializing_echoes_256_mib_exactly_in_bounded_memory(watchdog_factory: Factory) -> None:
    """Body and output both spooled: the echo is byte for byte, with its exact length."""
    watchdog = watchdog_factory(
        mode="serializing",
        fprocess="cat",
        exec_timeout="120s",
        read_timeout="120s",
        write_timeout="120s",
    )
    with send_body(watchdog, 256) as sock:
        status, content_length, digest, length = read_response(sock)
    assert status == 200
    assert content_length == str(256 * MIB) and length == 256 * MIB
    assert digest == body_digest(256)
    peak = watchdog.vmhwm_kib()
    assert peak < PEAK_RSS_LIMIT_KIB, f"watchdog peak RSS {peak} KiB"
    assert_spool_gone(watchdog)
    # And the connection's next request still works, small and in memory.
    status_small, _, small = watchdog.request("POST", "/", body=b"small")
    assert (status_small, small) == (200, b"small")


def test_spool_file_gone_when_client_leaves_mid_body(watchdog_factory: Factory) -> None:
    watchdog = watchdog_factory(mode="serializing", fprocess="cat")
    sock = send_body(watchdog, 64, stop_after_mib=16)
    # The body is past the threshold: it is in a spool file now.
    assert wait_until(lambda: bool(spool_files_open(watchdog)), timeout=10)
    sock.close()
    assert_spool_gone(watchdog)
    assert watchdog.request("POST", "/", body=b"after")[2] == b"after"


def test_spool_files_gone_when_client_leaves_mid_answer(watchdog_factory: Factory) -> None:
    watchdog = watchdog_factory(mode="serializing", fprocess="cat")
    with send_body(watchdog, 64) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        assert sock.recv(16).startswith(b"HTTP/1.1 200")
        # The answer is being sent from its spool file, and the client stops reading.
        assert spool_files_open(watchdog)
    assert_spool_gone(watchdog)
    assert watchdog.request("POST", "/", body=b"after")[2] == b"after"


def test_spool_files_gone_after_exec_timeout(watchdog_factory: Factory, tmp_path: Path) -> None:
    """A function that writes 8 MiB and then hangs: body and output spooled, then killed."""
    program = tmp_path / "write_then_hang.py"
    program.write_text(
        "import sys, time\n"
        "data = sys.stdin.buffer.read()\n"
        "sys.stdout.buffer.write(data[: 8 * 1024 * 1024]); sys.stdout.flush()\n"
        "time.sleep(60)\n"
    )
    watchdog = watchdog_factory(
        mode="serializing", fprocess=f"{sys.executable} {program}", exec_timeout="2s"
    )
    started = time.monotonic()
    with send_body(watchdog, 16) as sock:
        status, _, _, _ = read_response(sock)
    assert status == 500
    assert time.monotonic() - started < 30
    assert_spool_gone(watchdog)


def test_combine_output_past_the_threshold_follows_the_exit_status(
    watchdog_factory: Factory, tmp_path: Path
) -> None:
    """A failing function's large combined output comes after Go's line, from the spool file."""
    program = tmp_path / "fail_loudly.py"
    program.write_text(
        "import sys\n"
        "sys.stdout.buffer.write(b'o' * (3 * 1024 * 1024)); sys.stdout.flush()\n"
        "sys.exit(3)\n"
    )
    watchdog = watchdog_factory(
        mode="serializing", fprocess=f"{sys.executable} {program}", combine_output="true"
    )
    status, headers, body = watchdog.request("POST", "/", body=b"x")
    assert status == 500
    assert body == b"exit status 3\n" + b"o" * (3 * MIB)
    assert headers["Content-Length"] == str(len(body))
    assert_spool_gone(watchdog)


def test_cgi_response_past_the_threshold_keeps_its_head(
    watchdog_factory: Factory, tmp_path: Path
) -> None:
    program = tmp_path / "cgi_large.py"
    program.write_text(
        "import sys\n"
        "data = sys.stdin.buffer.read()\n"
        "sys.stdout.buffer.write(b'Status: 201 Created\\r\\nX-Size: %d\\r\\n\\r\\n' % len(data))\n"
        "sys.stdout.buffer.write(data)\n"
    )
    watchdog = watchdog_factory(
        mode="serializing", fprocess=f"{sys.executable} {program}", cgi_response="true"
    )
    body = os.urandom(5 * MIB)
    status, headers, answer = watchdog.request("POST", "/", body=body)
    assert status == 201
    assert headers["X-Size"] == str(len(body))
    assert headers["Content-Length"] == str(len(body))
    assert answer == body
    assert_spool_gone(watchdog)


def test_marshal_request_streams_a_spooled_body(watchdog_factory: Factory) -> None:
    """marshal_request's JSON of a body past the threshold, base64 across chunk boundaries."""
    import base64
    import json

    watchdog = watchdog_factory(mode="serializing", fprocess="cat", marshal_request="true")
    body = os.urandom(3 * MIB + 1)
    status, _, answer = watchdog.request("POST", "/", body=body)
    assert status == 200
    assert base64.b64decode(json.loads(answer)["body"]["raw"]) == body
    assert_spool_gone(watchdog)
