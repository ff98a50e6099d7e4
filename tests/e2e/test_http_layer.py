"""The HTTP/1.1 server of the real `python -m fwatchdog`, with streaming mode behind it.

Framing is checked on raw sockets: keep-alive and close, pipelining, chunked bodies both
ways, 100-continue, HEAD, malformed and oversized heads, the read and write timeouts, client
disconnects, and back-pressure that keeps the watchdog's memory bounded whatever the size.
"""

from __future__ import annotations

import hashlib
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import Watchdog, function, process_gone, wait_for_pid, wait_until
from raw_http import Response, ResponseReader, send_ignoring_reset

MiB = 1024 * 1024
# The watchdog starts at about 30 MiB; streaming any body must not take it much further.
MEMORY_BOUND_KIB = 60 * 1024

WatchdogFactory = Callable[..., Watchdog]


def connect(watchdog: Watchdog, timeout: float = 5.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", watchdog.port), timeout=timeout)


def post(
    body: bytes, extra_headers: str = "", path: str = "/", content_length: int | None = None
) -> bytes:
    """A POST request's bytes; `content_length` announces more than `body` when given."""
    length = len(body) if content_length is None else content_length
    head = f"POST {path} HTTP/1.1\r\nHost: fwatchdog\r\nContent-Length: {length}\r\n"
    return head.encode() + extra_headers.encode() + b"\r\n" + body


def exchange_large(watchdog: Watchdog, data: bytes) -> Response:
    """Send a request too large for the socket buffers while reading the answer."""
    with connect(watchdog) as sock:
        sender = threading.Thread(target=send_ignoring_reset, args=(sock, data))
        sender.start()
        try:
            return ResponseReader(sock).read_response()
        finally:
            sender.join(10)


def assert_still_serving(watchdog: Watchdog) -> None:
    status, _, body = watchdog.request("POST", "/", b"still here", timeout=5)
    assert (status, body) == (200, b"still here")


def assert_health_ok(watchdog: Watchdog) -> None:
    """The server still answers, for functions too slow to ask for an echo."""
    status, _, _ = watchdog.request("GET", "/_/health", timeout=5)
    assert status == 200


def in_flight(watchdog: Watchdog) -> float:
    match = re.search(r"^http_requests_in_flight (\S+)$", watchdog.metrics(), re.MULTILINE)
    assert match, "no http_requests_in_flight gauge"
    return float(match.group(1))


def wait_for_in_flight_zero(watchdog: Watchdog, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while (value := in_flight(watchdog)) != 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    return value


# Large bodies: a deterministic pattern, sent from a thread, hashed at both ends.


def pattern_block(index: int) -> bytes:
    """1 MiB that differs from every other block, so a lost or repeated block shows."""
    return index.to_bytes(8, "big") * (MiB // 8)


@dataclass
class Upload:
    """A body being sent from a thread; `sent` and `digest` are filled in as it goes."""

    thread: threading.Thread
    total: int
    sent: int = 0
    digest: str = ""
    error: BaseException | None = None


def start_upload(sock: socket.socket, total_mib: int) -> Upload:
    total = total_mib * MiB
    upload = Upload(threading.Thread(target=lambda: None), total)

    def send_body() -> None:
        sha = hashlib.sha256()
        try:
            sock.sendall(post(b"", content_length=total))
            for index in range(total_mib):
                block = pattern_block(index)
                sha.update(block)
                sock.sendall(block)
                upload.sent += len(block)
        except OSError as error:
            upload.error = error
        upload.digest = sha.hexdigest()

    upload.thread = threading.Thread(target=send_body, daemon=True)
    upload.thread.start()
    return upload


def read_echo(reader: ResponseReader) -> tuple[int, int, str]:
    """Status, size and SHA-256 of a response body, without holding it in memory."""
    head = reader.read_head()
    sha = hashlib.sha256()
    size = 0
    for piece in reader.body_chunks(head):
        sha.update(piece)
        size += len(piece)
    return head.status, size, sha.hexdigest()


def wait_until_stalled(upload: Upload, timeout: float = 10.0, quiet: float = 1.0) -> None:
    """Wait until the upload has made no progress for `quiet` seconds."""
    deadline = time.monotonic() + timeout
    last, last_change = upload.sent, time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.1)
        if upload.sent != last:
            last, last_change = upload.sent, time.monotonic()
        elif time.monotonic() - last_change >= quiet:
            return
    raise AssertionError(f"the upload never stalled ({upload.sent} bytes sent)")


# 1. Keep-alive and closing


def test_keep_alive_answers_several_requests_on_one_connection(
    watchdog_factory: WatchdogFactory,
) -> None:
    watchdog = watchdog_factory(fprocess="cat")
    conn = watchdog.connection(timeout=5)
    try:
        local_ports = set()
        for body in (b"first", b"second", b"third"):
            conn.request("POST", "/", body=body)
            response = conn.getresponse()
            assert (response.status, response.read()) == (200, body)
            assert response.getheader("Connection") is None
            assert conn.sock is not None
            local_ports.add(conn.sock.getsockname()[1])
        assert len(local_ports) == 1, "http.client had to reconnect"
    finally:
        conn.close()


def test_connection_close_request_is_answered_with_close_and_socket_closed(
    watchdog_factory: WatchdogFactory,
) -> None:
    watchdog = watchdog_factory(fprocess="cat")
    with connect(watchdog) as sock:
        sock.sendall(post(b"bye", "Connection: close\r\n"))
        reader = ResponseReader(sock)
        response = reader.read_response()
        assert (response.status, response.body) == (200, b"bye")
        assert response.headers.get("connection", "").lower() == "close"
        assert reader.closed_by_server()


def test_http10_request_without_keep_alive_gets_body_ended_by_close(
    watchdog_factory: WatchdogFactory,
) -> None:
    watchdog = watchdog_factory(fprocess="cat")
    with connect(watchdog) as sock:
        sock.sendall(b"POST / HTTP/1.0\r\nContent-Length: 11\r\n\r\nhello 1.0\r\n")
        reader = ResponseReader(sock)
        head = reader.read_head()
        assert head.status == 200
        assert "transfer-encoding" not in head.headers, "HTTP/1.0 has no chunked encoding"
        assert b"".join(reader.body_chunks(head)) == b"hello 1.0\r\n"
        assert reader.closed_by_server()


# 2. Pipelining


def test_pipelined_requests_are_answered_in_order_with_their_own_bodies(
    watchdog_factory: WatchdogFactory,
) -> None:
    watchdog = watchdog_factory(fprocess="cat")
    bodies = [b"one", b"two " * 5000, b"three\r\n\r\nGET / HTTP/1.1\r\n\r\n"]
    with connect(watchdog) as sock:
        sock.sendall(b"".join(post(body, path=f"/{n}") for n, body in enumerate(bodies)))
        reader = ResponseReader(sock)
        for number, body in enumerate(bodies, 1):
            response = reader.read_response(more=number < len(bodies))
            assert (response.status, response.body) == (200, body)
        # the connection is still usable after the pipelined batch
        sock.sendall(post(b"after"))
        assert reader.read_response().body == b"after"


# 3. Chunked bodies both ways


def test_chunked_request_body_is_echoed_exactly(watchdog_factory: WatchdogFactory) -> None:
    watchdog = watchdog_factory(fprocess="cat")
    chunks = [b"hello", b" ", b"chunked\r\n", bytes(range(256)) * 400, b"end;not-an-ext"]
    framed = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for chunk in chunks)
    head = b"POST / HTTP/1.1\r\nHost: fwatchdog\r\nTransfer-Encoding: chunked\r\n\r\n"
    with connect(watchdog) as sock:
        sock.sendall(head + framed + b"3;name=value\r\nabc\r\n0\r\n\r\n")
        reader = ResponseReader(sock)
        response = reader.read_response()
        assert (response.status, response.body) == (200, b"".join(chunks) + b"abc")
        # the terminating chunk was consumed: the next request on the connection parses
        sock.sendall(post(b"next"))
        assert reader.read_response().body == b"next"


def test_response_of_unknown_length_is_sent_chunked(watchdog_factory: WatchdogFactory) -> None:
    # Output still being produced when its first bytes go out has no known length.
    watchdog = watchdog_factory(fprocess=f"{function('slow_writer.sh')} 0.3")
    with connect(watchdog) as sock:
        sock.sendall(post(b""))
        reader = ResponseReader(sock)
        head = reader.read_head()
        assert head.status == 200
        assert head.headers.get("transfer-encoding") == "chunked"
        assert "content-length" not in head.headers
        assert b"".join(reader.body_chunks(head)) == b"first\nsecond\n"
        assert reader.buffer == b"", "bytes after the terminating chunk"


# 4. Expect: 100-continue


def test_expect_100_continue_is_answered_before_the_body_is_sent(
    watchdog_factory: WatchdogFactory,
) -> None:
    watchdog = watchdog_factory(fprocess="cat")
    body = b"the body, sent only when asked"
    with connect(watchdog, timeout=3) as sock:
        sock.sendall(post(b"", "Expect: 100-continue\r\n", content_length=len(body)))
        reader = ResponseReader(sock)
        assert reader.read_interim().status == 100
        sock.sendall(body)
        response = reader.read_response()
        assert (response.status, response.body) == (200, body)


# 5. HEAD


def test_head_response_has_headers_but_no_body_and_connection_stays_usable(
    watchdog_factory: WatchdogFactory,
) -> None:
    watchdog = watchdog_factory(fprocess="echo output")
    with connect(watchdog) as sock:
        reader = ResponseReader(sock)
        sock.sendall(b"HEAD / HTTP/1.1\r\nHost: fwatchdog\r\n\r\n")
        head = reader.read_response(head_request=True)
        assert head.status == 200
        assert head.headers["content-type"] == "application/octet-stream"
        # the GET that follows must begin with its own status line, not a HEAD body
        sock.sendall(b"GET / HTTP/1.1\r\nHost: fwatchdog\r\n\r\n")
        response = reader.read_response()
        assert (response.status, response.body) == (200, b"output\n")
        assert reader.buffer == b""


# 6. Malformed requests


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GARBAGE\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: fwatchdog\r\nthis is not a header\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: fwatchdog\r\nContent-Length: nope\r\n\r\n",
    ],
    ids=["request-line", "header-line", "content-length"],
)
def test_malformed_request_gets_400_and_close_and_server_keeps_serving(
    watchdog_factory: WatchdogFactory, request_bytes: bytes
) -> None:
    watchdog = watchdog_factory(fprocess="cat")
    with connect(watchdog) as sock:
        sock.sendall(request_bytes)
        reader = ResponseReader(sock)
        response = reader.read_response()
        assert response.status == 400
        assert 0 < len(response.body) < 200
        assert reader.closed_by_server()
    assert_still_serving(watchdog)


# 7. Header size limit


@pytest.mark.parametrize(
    "headers",
    [
        "X-Big: " + "a" * (2 * MiB) + "\r\n",
        "".join(f"X-Many-{n}: {'m' * 1000}\r\n" for n in range(1100)),
        "".join(f"X-Many-{n}: {'m' * 1000}\r\n" for n in range(2100)),
    ],
    ids=["one-2MiB-value", "many-totalling-1.1MiB", "many-totalling-2MiB"],
)
def test_headers_over_1mib_get_431_and_server_keeps_serving(
    watchdog_factory: WatchdogFactory, headers: str
) -> None:
    watchdog = watchdog_factory(fprocess="cat")
    response = exchange_large(watchdog, post(b"", headers))
    assert response.status == 431
    assert_still_serving(watchdog)


def test_headers_of_100kib_are_accepted(watchdog_factory: WatchdogFactory) -> None:
    watchdog = watchdog_factory(fprocess="cat")
    headers = "".join(f"X-Many-{n}: {'m' * 1000}\r\n" for n in range(100))
    response = exchange_large(watchdog, post(b"accepted", headers))
    assert (response.status, response.body) == (200, b"accepted")


# 8. read_timeout


def test_body_stalled_past_read_timeout_kills_function_and_gets_408(
    watchdog_factory: WatchdogFactory, tmp_path: Path
) -> None:
    pidfile = tmp_path / "function.pid"
    # sort writes nothing before its input ends, so no response has begun at the timeout
    watchdog = watchdog_factory(
        fprocess=f"{function('http_pidfile.sh')} sort", read_timeout="1s", PIDFILE=str(pidfile)
    )
    with connect(watchdog) as sock:
        sock.sendall(post(b"only ten b", content_length=100))
        pid = wait_for_pid(pidfile, timeout=5.0)
        started = time.monotonic()
        reader = ResponseReader(sock)
        response = reader.read_response()
        elapsed = time.monotonic() - started
        assert response.status == 408
        assert b"read_timeout" in response.body
        assert elapsed < 3.0
        assert reader.closed_by_server()
    assert wait_until(lambda: process_gone(pid), timeout=2.0), "the function outlived its request"
    assert_health_ok(watchdog)


def test_head_stalled_past_read_timeout_gets_408_or_close(
    watchdog_factory: WatchdogFactory,
) -> None:
    watchdog = watchdog_factory(fprocess="cat", read_timeout="1s")
    with connect(watchdog) as sock:
        started = time.monotonic()
        sock.sendall(b"POST / HTTP/1.1\r\nHost: fwatchdog\r\nContent-Le")
        reader = ResponseReader(sock)
        try:
            status: int | None = reader.read_response().status
        except (EOFError, ConnectionResetError):
            status = None  # closed without an answer, as Go's server does
        assert status in (408, None)
        assert reader.closed_by_server()
        assert time.monotonic() - started < 3.0
    assert_still_serving(watchdog)


# 9. write_timeout


def test_function_silent_past_write_timeout_gets_504_naming_write_timeout(
    watchdog_factory: WatchdogFactory, tmp_path: Path
) -> None:
    pidfile = tmp_path / "function.pid"
    watchdog = watchdog_factory(
        fprocess=f"{function('http_pidfile.sh')} {function('http_late_output.sh')} 5",
        write_timeout="1s",
        exec_timeout="0",
        PIDFILE=str(pidfile),
    )
    started = time.monotonic()
    status, _, body = watchdog.request("POST", "/", b"", timeout=5)
    elapsed = time.monotonic() - started
    assert status == 504
    assert b"write_timeout" in body
    assert elapsed < 2.5
    pid = wait_for_pid(pidfile, timeout=5.0)
    assert wait_until(lambda: process_gone(pid), timeout=2.0), "the function outlived its request"
    assert_health_ok(watchdog)


# 10. Client disconnects


def test_client_disconnect_mid_body_kills_function_and_clears_in_flight(
    watchdog_factory: WatchdogFactory, tmp_path: Path
) -> None:
    pidfile = tmp_path / "function.pid"
    watchdog = watchdog_factory(fprocess=function("http_pidfile.sh"), PIDFILE=str(pidfile))
    with connect(watchdog) as sock:
        sock.sendall(post(b"part of the body", content_length=100))
        pid = wait_for_pid(pidfile, timeout=5.0)
        assert in_flight(watchdog) == 1
    assert wait_until(lambda: process_gone(pid), timeout=2.0), "the function outlived its client"
    assert wait_for_in_flight_zero(watchdog, timeout=2.0) == 0
    assert_health_ok(watchdog)


def test_client_disconnect_after_full_body_kills_function_and_clears_in_flight(
    watchdog_factory: WatchdogFactory, tmp_path: Path
) -> None:
    pidfile = tmp_path / "function.pid"
    watchdog = watchdog_factory(fprocess=function("http_pidfile.sh"), PIDFILE=str(pidfile))
    with connect(watchdog) as sock:
        sock.sendall(post(b"the whole body"))
        pid = wait_for_pid(pidfile, timeout=5.0)
        assert in_flight(watchdog) == 1
    assert wait_until(lambda: process_gone(pid), timeout=2.0), "the function outlived its client"
    assert wait_for_in_flight_zero(watchdog, timeout=2.0) == 0
    assert_health_ok(watchdog)


# 11. Back-pressure


def test_slow_reader_keeps_watchdog_memory_bounded_and_gets_exact_echo(
    watchdog_factory: WatchdogFactory,
) -> None:
    watchdog = watchdog_factory(fprocess="cat")
    with connect(watchdog, timeout=20) as sock:
        upload = start_upload(sock, total_mib=64)
        wait_until_stalled(upload)  # nobody reads the echo: everything must stop
        assert watchdog.vmhwm_kib() < MEMORY_BOUND_KIB
        status, size, digest = read_echo(ResponseReader(sock))
        upload.thread.join(20)
    assert upload.error is None
    assert (status, size, digest) == (200, upload.total, upload.digest)
    assert watchdog.vmhwm_kib() < MEMORY_BOUND_KIB


def test_slow_function_keeps_watchdog_memory_bounded_and_echo_exact(
    watchdog_factory: WatchdogFactory,
) -> None:
    watchdog = watchdog_factory(fprocess=f"{function('http_sleepy_cat.sh')} 2")
    with connect(watchdog, timeout=20) as sock:
        upload = start_upload(sock, total_mib=64)
        time.sleep(1.5)  # the function has not read anything yet
        assert watchdog.vmhwm_kib() < MEMORY_BOUND_KIB
        status, size, digest = read_echo(ResponseReader(sock))
        upload.thread.join(20)
    assert upload.error is None
    assert (status, size, digest) == (200, upload.total, upload.digest)
    assert watchdog.vmhwm_kib() < MEMORY_BOUND_KIB


# 12. Full duplex


def test_200mib_streams_through_cat_full_duplex_exactly(
    watchdog_factory: WatchdogFactory,
) -> None:
    watchdog = watchdog_factory(fprocess="cat")
    with connect(watchdog, timeout=20) as sock:
        upload = start_upload(sock, total_mib=200)
        status, size, digest = read_echo(ResponseReader(sock))
        upload.thread.join(20)
    assert upload.error is None
    assert (status, size, digest) == (200, upload.total, upload.digest)
