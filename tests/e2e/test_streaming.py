"""Streaming mode (the default), end to end: the real watchdog forking real function programs."""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from conftest import (
    Watchdog,
    children_of,
    environment_of,
    function,
    process_gone,
    read_until,
    wait_for_pid,
    wait_until,
)

Factory = Callable[..., Watchdog]

GIB = 1024**3
GO_TIME_PREFIX = r"\d{4}/\d{2}/\d{2} \d{2}:\d{2}:\d{2} "


# --- helpers --------------------------------------------------------------------------------------


def post(
    watchdog: Watchdog,
    path: str = "/",
    body: bytes = b"",
    headers: list[tuple[str, str]] | None = None,
) -> tuple[int, http.client.HTTPMessage, bytes]:
    """A POST whose headers may repeat a name: status, headers, body."""
    return watchdog.exchange("POST", path, body, headers)


def send_head(watchdog: Watchdog, head: str, timeout: float = 10.0) -> socket.socket:
    """A raw connection that has sent `head` (request line and headers, no blank line yet)."""
    sock = socket.create_connection(("127.0.0.1", watchdog.port), timeout=timeout)
    sock.sendall(head.encode() + b"\r\n")
    return sock


def log_lines(watchdog: Watchdog) -> list[str]:
    return watchdog.log().splitlines()


class RepeatingPattern:
    """A random block repeated for `total` bytes: sent as a stream, checked as it comes back.

    The block length is not a power of two, so a lost or repeated buffer shows up as a
    mismatch rather than lining up with the pattern again.
    """

    def __init__(self, total: int, block_size: int = 1024 * 1024 + 7) -> None:
        self.total = total
        self.block = os.urandom(block_size)
        self._doubled = self.block + self.block
        self.checked = 0
        self.mismatch_at: int | None = None

    def chunks(self) -> Iterator[bytes]:
        sent = 0
        while sent < self.total:
            piece = self.block[: self.total - sent]
            sent += len(piece)
            yield piece

    def check(self, data: bytes) -> None:
        """Compare the next `len(data)` bytes (at most a block) with what was sent there."""
        start = self.checked % len(self.block)
        expected = self._doubled[start : start + len(data)]
        if self.mismatch_at is None and data != expected:
            self.mismatch_at = self.checked
        self.checked += len(data)


# --- the body through the function ----------------------------------------------------------------


def test_streaming_echoes_body_byte_exact_through_cat(watchdog_factory: Factory) -> None:
    watchdog = watchdog_factory(fprocess="cat")
    body = bytes(range(256)) * 1024 + os.urandom(300_000)
    status, _, output = watchdog.request("POST", "/", body=body)
    assert status == 200
    assert output == body


def test_streaming_echoes_empty_body_as_empty_200(watchdog_factory: Factory) -> None:
    watchdog = watchdog_factory(fprocess="cat")
    assert watchdog.request("POST", "/", body=b"")[::2] == (200, b"")


def test_streaming_feeds_body_to_wc_which_counts_it(watchdog_factory: Factory) -> None:
    watchdog = watchdog_factory(fprocess="wc -c")
    status, _, output = watchdog.request("POST", "/", body=b"x" * 12345)
    assert (status, output.strip()) == (200, b"12345")


def test_streaming_content_type_defaults_to_octet_stream(watchdog_factory: Factory) -> None:
    watchdog = watchdog_factory(fprocess="cat")
    _, headers, _ = watchdog.request("POST", "/", body=b"hi")
    assert headers["Content-Type"] == "application/octet-stream"


def test_streaming_content_type_setting_changes_the_header(watchdog_factory: Factory) -> None:
    watchdog = watchdog_factory(fprocess="cat", content_type="text/plain")
    _, headers, _ = watchdog.request("POST", "/", body=b"hi")
    assert headers["Content-Type"] == "text/plain"


# --- the function's environment -------------------------------------------------------------------


def test_streaming_environment_has_method_path_query_and_headers(
    watchdog_factory: Factory,
) -> None:
    watchdog = watchdog_factory(fprocess="env", FWATCHDOG_TEST_MARKER="from-the-watchdog")
    status, _, output = post(
        watchdog,
        "/some/path?a=1&b=2",
        b"hello",
        [("x-custom-header", "v"), ("X-Custom-Header", "second value")],
    )
    assert status == 200
    env = environment_of(output)
    assert env["Http_Method"] == "POST"
    assert env["Http_Path"] == "/some/path"
    assert env["Http_Query"] == "a=1&b=2"
    assert env["Http_X_Custom_Header"] == "v"
    assert env["Http_Content_Length"] == "5"
    # The watchdog's own environment is inherited.
    assert env["FWATCHDOG_TEST_MARKER"] == "from-the-watchdog"
    assert "Http_Transfer_Encoding" not in env


def test_streaming_environment_path_is_decoded_and_query_raw(watchdog_factory: Factory) -> None:
    watchdog = watchdog_factory(fprocess="env")
    _, _, output = post(watchdog, "/some%20path?q=a%20b&x=%2F")
    env = environment_of(output)
    assert env["Http_Path"] == "/some path"
    assert env["Http_Query"] == "q=a%20b&x=%2F"


def test_streaming_environment_has_no_query_when_request_has_none(
    watchdog_factory: Factory,
) -> None:
    watchdog = watchdog_factory(fprocess="env")
    _, _, output = post(watchdog, "/no-query")
    env = environment_of(output)
    assert env["Http_Path"] == "/no-query"
    assert "Http_Query" not in env


def test_streaming_environment_marks_chunked_request(watchdog_factory: Factory) -> None:
    watchdog = watchdog_factory(fprocess="env")
    conn = watchdog.connection()
    try:
        # An iterable body without a length is sent chunked.
        conn.request("POST", "/", body=iter([b"ab", b"cd"]))
        response = conn.getresponse()
        status, output = response.status, response.read()
    finally:
        conn.close()
    assert status == 200
    env = environment_of(output)
    assert env["Http_Transfer_Encoding"] == "chunked"
    assert "Http_Content_Length" not in env


# --- output reaches the client as it is written ---------------------------------------------------


def test_streaming_small_write_reaches_client_before_function_exits(
    watchdog_factory: Factory,
) -> None:
    watchdog = watchdog_factory(fprocess=f"{function('slow_writer.sh')} 2")
    started = time.monotonic()
    with send_head(watchdog, "POST / HTTP/1.1\r\nHost: test\r\nContent-Length: 0\r\n") as sock:
        received = read_until(sock, b"first\n")
        first_after = time.monotonic() - started
        received = read_until(sock, b"0\r\n\r\n", received)
        whole_after = time.monotonic() - started
    assert first_after < 1.0, f"first line took {first_after:.2f}s"
    assert whole_after >= 1.9
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"transfer-encoding: chunked" in head.lower()
    assert body == b"6\r\nfirst\n\r\n7\r\nsecond\n\r\n0\r\n\r\n"


# --- failures before any output: a status that says so --------------------------------------------


def test_streaming_missing_binary_is_500_naming_it(watchdog_factory: Factory) -> None:
    watchdog = watchdog_factory(fprocess="/nonexistent/fn")
    status, _, body = watchdog.request("POST", "/", body=b"hi")
    assert status == 500
    text = body.decode()
    assert "/nonexistent/fn" in text
    assert text.endswith("\n")
    assert text.count("\n") == 1


def test_streaming_nonzero_exit_before_output_is_500_exit_status(
    watchdog_factory: Factory,
) -> None:
    watchdog = watchdog_factory(fprocess=f"{function('exit_code.sh')} 3")
    status, _, body = watchdog.request("POST", "/", body=b"input")
    assert (status, body.decode().strip()) == (500, "exit status 3")


def test_streaming_exec_timeout_is_504_naming_the_setting(watchdog_factory: Factory) -> None:
    watchdog = watchdog_factory(fprocess="sleep 5", exec_timeout="1s")
    started = time.monotonic()
    status, _, body = watchdog.request("POST", "/", body=b"")
    elapsed = time.monotonic() - started
    assert status == 504
    assert "exec_timeout" in body.decode()
    assert elapsed < 2.5, f"504 after {elapsed:.2f}s"


def test_streaming_reaps_every_function_process_whatever_its_end(
    watchdog_factory: Factory,
) -> None:
    """Exit statuses are collected at the end of output (or by a pidfd if the process is
    still running then): no zombie is left behind after an exit, a failure or a kill."""
    ends = {
        "cat": 200,  # exits once its output has ended
        f"{function('exit_code.sh')} 3": 500,  # fails without output
        f"{function('fn_bulk_then.sh')} 16 exit 3": 200,  # fails after output
        f"{function('fn_bulk_then.sh')} 16 sleep 30": 200,  # killed by exec_timeout
    }
    for fprocess, expected in ends.items():
        watchdog = watchdog_factory(fprocess=fprocess, exec_timeout="1s")
        for _ in range(3):
            assert post(watchdog, body=b"x")[0] == expected, fprocess
        pid = watchdog.process.pid
        assert wait_until(lambda pid=pid: not children_of(pid), timeout=5.0), (
            f"{fprocess}: children left: {children_of(pid)}"
        )


def test_streaming_exec_timeout_kills_the_whole_process_group(
    watchdog_factory: Factory, tmp_path: Path
) -> None:
    pid_file = tmp_path / "child.pid"
    watchdog = watchdog_factory(
        fprocess=f"{function('fn_background_child.sh')} {pid_file}", exec_timeout="1s"
    )
    status, _, _ = watchdog.request("POST", "/", body=b"")
    assert status == 504
    child = int(pid_file.read_text())
    assert wait_until(lambda: process_gone(child), 2), (
        f"background child {child} survived exec_timeout"
    )


# --- failure after output began: the bytes arrive and the response ends cleanly -------------------


def test_streaming_failure_after_output_keeps_200_and_the_connection(
    watchdog_factory: Factory,
) -> None:
    watchdog = watchdog_factory(fprocess=function("fn_output_then_fail.sh"))
    conn = watchdog.connection()
    try:
        conn.request("POST", "/", body=b"input")
        response = conn.getresponse()
        # http.client raises IncompleteRead unless the chunked framing is complete.
        first = (response.status, response.read())
        assert not response.will_close
        sock = conn.sock
        conn.request("POST", "/", body=b"again")
        response = conn.getresponse()
        second = (response.status, response.read())
        assert conn.sock is sock, "the second request needed a new connection"
    finally:
        conn.close()
    assert first == (200, b"partial output\n")
    assert second == (200, b"partial output\n")
    log = watchdog.wait_for_log("exit status 1")
    assert re.search(GO_TIME_PREFIX + r".*exit status 1", log)


# --- bulk output ---------------------------------------------------------------------------------

MIB = 1024 * 1024


def test_streaming_bulk_output_to_an_http10_client_ends_with_the_connection(
    watchdog_factory: Factory,
) -> None:
    watchdog = watchdog_factory(fprocess="cat")
    body = os.urandom(4 * MIB + 3)
    head = f"POST / HTTP/1.0\r\nContent-Length: {len(body)}\r\n\r\n".encode()
    received = watchdog.raw(head + body, timeout=20)
    status_line, _, rest = received.partition(b"\r\n")
    headers, _, echoed = rest.partition(b"\r\n\r\n")
    assert status_line == b"HTTP/1.1 200 OK"
    assert b"transfer-encoding" not in headers.lower()
    assert echoed == body


def test_streaming_bulk_output_then_failure_keeps_chunked_framing_and_the_connection(
    watchdog_factory: Factory,
) -> None:
    watchdog = watchdog_factory(fprocess=f"{function('fn_bulk_then.sh')} {2 * MIB} exit 1")
    conn = watchdog.connection()
    try:
        answers = []
        for _ in range(2):
            conn.request("POST", "/", body=b"")
            response = conn.getresponse()
            # http.client raises IncompleteRead unless the chunked framing is complete.
            answers.append((response.status, response.read()))
            assert not response.will_close
    finally:
        conn.close()
    assert answers == [(200, bytes(2 * MIB))] * 2
    watchdog.wait_for_log("exit status 1")


def test_streaming_exec_timeout_during_bulk_output_ends_it_at_once_with_what_was_written(
    watchdog_factory: Factory,
) -> None:
    """As for any failure after output began: logged, and the response ends cleanly."""
    watchdog = watchdog_factory(
        fprocess=f"{function('fn_bulk_then.sh')} {2 * MIB} sleep 60", exec_timeout="1s"
    )
    started = time.monotonic()
    status, _, body = post(watchdog)
    assert time.monotonic() - started < 10
    assert (status, body) == (200, bytes(2 * MIB))
    watchdog.wait_for_log("exec_timeout (1s) exceeded")


def test_streaming_client_leaving_during_bulk_output_stops_the_function(
    watchdog_factory: Factory, tmp_path: Path
) -> None:
    pidfile = tmp_path / "function.pid"
    watchdog = watchdog_factory(
        fprocess=f"{function('http_pidfile.sh')} cat /dev/zero", PIDFILE=str(pidfile)
    )
    with socket.create_connection(("127.0.0.1", watchdog.port), timeout=10) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: test\r\nContent-Length: 0\r\n\r\n")
        received = 0
        while received < 8 * MIB:
            chunk = sock.recv(MIB)
            assert chunk, "the watchdog closed the connection"
            received += len(chunk)
        pid = wait_for_pid(pidfile)
    assert wait_until(lambda: process_gone(pid), timeout=5.0), "the function outlived its client"
    watchdog.wait_for_log("POST / - 200")
    assert watchdog.request("GET", "/_/health")[0] == 200


# --- large bodies in bounded memory ---------------------------------------------------------------

# 2 GiB on a busy 2-core machine can take longer than the default 30s limits; these tests are
# about exact bytes and bounded memory, not speed.
LONG_TIMEOUTS = {"read_timeout": "180s", "write_timeout": "180s", "exec_timeout": "180s"}


def test_streaming_echoes_2gib_through_cat_in_bounded_memory(watchdog_factory: Factory) -> None:
    watchdog = watchdog_factory(fprocess="cat", **LONG_TIMEOUTS)
    pattern = RepeatingPattern(2 * GIB)
    conn = watchdog.connection(timeout=60)
    send_errors: list[BaseException] = []

    def send_body() -> None:
        try:
            for chunk in pattern.chunks():
                conn.send(chunk)
        except BaseException as error:  # reported by the main thread
            send_errors.append(error)

    try:
        conn.putrequest("POST", "/", skip_accept_encoding=True)
        conn.putheader("Content-Length", str(pattern.total))
        conn.endheaders()
        # cat answers while it still reads: the body must go out while the answer comes in.
        sender = threading.Thread(target=send_body, daemon=True)
        sender.start()
        response = conn.getresponse()
        assert response.status == 200
        buffer = bytearray(1024 * 1024)
        while count := response.readinto(buffer):
            pattern.check(bytes(buffer[:count]))
        sender.join(60)
        assert not sender.is_alive()
    finally:
        conn.close()
    assert not send_errors
    assert pattern.checked == pattern.total
    assert pattern.mismatch_at is None, f"output differs from input at byte {pattern.mismatch_at}"
    vmhwm_mib = watchdog.vmhwm_kib() / 1024
    assert vmhwm_mib < 40, f"watchdog peak RSS {vmhwm_mib:.1f} MiB"


def test_streaming_counts_2gib_with_wc_in_bounded_memory(watchdog_factory: Factory) -> None:
    watchdog = watchdog_factory(fprocess="wc -c", **LONG_TIMEOUTS)
    pattern = RepeatingPattern(2 * GIB)
    conn = watchdog.connection(timeout=60)
    try:
        conn.request(
            "POST", "/", body=pattern.chunks(), headers={"Content-Length": str(pattern.total)}
        )
        response = conn.getresponse()
        status, output = response.status, response.read()
    finally:
        conn.close()
    assert (status, output.strip()) == (200, str(2 * GIB).encode())
    vmhwm_mib = watchdog.vmhwm_kib() / 1024
    assert vmhwm_mib < 40, f"watchdog peak RSS {vmhwm_mib:.1f} MiB"


# --- the function's stderr in the log -------------------------------------------------------------


def test_streaming_function_stderr_is_logged_with_go_time_prefix(
    watchdog_factory: Factory,
) -> None:
    watchdog = watchdog_factory(fprocess=function("stderr_lines.sh"))
    status, _, body = watchdog.request("POST", "/", body=b"to stdout")
    assert (status, body) == (200, b"to stdout")
    log = watchdog.wait_for_log("to the log 2")
    assert re.search(f"^{GO_TIME_PREFIX}stderr: to the log 1$", log, re.MULTILINE), log
    assert re.search(f"^{GO_TIME_PREFIX}stderr: to the log 2$", log, re.MULTILINE), log
    assert "to stdout" not in log


def test_streaming_function_stderr_bare_when_prefix_logs_false(
    watchdog_factory: Factory,
) -> None:
    watchdog = watchdog_factory(fprocess=function("stderr_lines.sh"), prefix_logs="false")
    watchdog.request("POST", "/", body=b"")
    watchdog.wait_for_log("to the log 2")
    lines = log_lines(watchdog)
    assert "to the log 1" in lines
    assert "to the log 2" in lines


def test_streaming_long_stderr_line_is_cut_and_next_line_still_logged(
    watchdog_factory: Factory,
) -> None:
    watchdog = watchdog_factory(fprocess=function("fn_long_stderr_line.sh"), log_buffer_size="16")
    status, _, _ = watchdog.request("POST", "/", body=b"")
    assert status == 200
    log = watchdog.wait_for_log("stderr: short line")
    cut = [line for line in log.splitlines() if "stderr: aaaa" in line]
    assert len(cut) == 1, log
    assert re.search(f"^{GO_TIME_PREFIX}stderr: a{{16}} .*truncated", cut[0]), cut[0]
    assert "a" * 17 not in log


def test_streaming_function_stderr_is_json_with_stream_when_log_format_json(
    watchdog_factory: Factory,
) -> None:
    watchdog = watchdog_factory(fprocess=function("stderr_lines.sh"), log_format="json")
    watchdog.request("POST", "/", body=b"")
    watchdog.wait_for_log("to the log 2")
    records = [json.loads(line) for line in log_lines(watchdog)]
    function_lines = [record for record in records if record.get("stream") == "stderr"]
    assert [record["msg"] for record in function_lines] == ["to the log 1", "to the log 2"]


# --- the request log line -------------------------------------------------------------------------


def test_streaming_request_log_line_has_go_format(watchdog_factory: Factory) -> None:
    watchdog = watchdog_factory(fprocess="cat")
    watchdog.request("POST", "/", body=b"hello")
    log = watchdog.wait_for_log("POST / - ")
    pattern = f"^{GO_TIME_PREFIX}" + r"POST / - 200 - ContentLength: 5B \(\d+\.\d{4}s\)$"
    assert re.search(pattern, log, re.MULTILINE), log


def test_streaming_empty_output_is_logged_and_counted_as_200(watchdog_factory: Factory) -> None:
    watchdog = watchdog_factory(fprocess="cat")
    status, _, body = watchdog.request("POST", "/empty", body=b"")
    assert (status, body) == (200, b"")
    watchdog.wait_for_log("POST /empty - ")
    assert "POST /empty - 200 - ContentLength: 0B (" in watchdog.log()
    assert 'http_requests_total{code="200",method="post"} 1.0' in watchdog.metrics().splitlines()


def test_streaming_request_log_line_shows_raw_uri(watchdog_factory: Factory) -> None:
    watchdog = watchdog_factory(fprocess="cat")
    watchdog.request("POST", "/a%20b?x=1", body=b"hi")
    log = watchdog.wait_for_log("POST /a%20b?x=1 - 200 - ContentLength: 2B (")
    assert "/a b" not in log


def test_streaming_request_log_line_has_call_id_when_log_callid(
    watchdog_factory: Factory,
) -> None:
    watchdog = watchdog_factory(fprocess="cat", log_callid="true")
    watchdog.request("POST", "/with-id", body=b"hello", headers={"X-Call-Id": "abc"})
    watchdog.request("POST", "/without-id", body=b"hello")
    log = watchdog.wait_for_log("POST /without-id - ")
    assert re.search(r"POST /with-id - 200 - ContentLength: 5B \(\S+s\) \[abc\]$", log, re.M), log
    assert re.search(r"POST /without-id - 200 - .*\) \[none\]$", log, re.M), log


def test_streaming_request_log_line_has_no_call_id_by_default(watchdog_factory: Factory) -> None:
    watchdog = watchdog_factory(fprocess="cat")
    watchdog.request("POST", "/", body=b"hello", headers={"X-Call-Id": "abc"})
    log = watchdog.wait_for_log("POST / - ")
    assert "[abc]" not in log
    assert "[none]" not in log


def test_streaming_kube_probe_requests_are_not_logged(watchdog_factory: Factory) -> None:
    watchdog = watchdog_factory(fprocess="cat")
    status, _, _ = watchdog.request(
        "POST", "/from-probe", body=b"hi", headers={"User-Agent": "kube-probe/1.27"}
    )
    assert status == 200
    watchdog.request("POST", "/after-probe", body=b"hi")
    log = watchdog.wait_for_log("POST /after-probe - 200")
    assert "/from-probe" not in log


def test_streaming_json_log_every_line_is_an_object_with_request_fields(
    watchdog_factory: Factory,
) -> None:
    watchdog = watchdog_factory(fprocess="cat", log_format="json")
    watchdog.request("POST", "/json?x=1", body=b"hello")
    watchdog.wait_for_log('"path": "/json?x=1"')
    assert watchdog.terminate() == 0
    records = [json.loads(line) for line in log_lines(watchdog)]
    assert records
    for record in records:
        assert isinstance(record, dict)
        assert {"time", "level", "msg"} <= record.keys(), record
    (request_line,) = [record for record in records if "method" in record]
    assert request_line["method"] == "POST"
    assert request_line["path"] == "/json?x=1"
    assert request_line["status"] == 200
    assert request_line["bytes"] == 5
    assert isinstance(request_line["seconds"], float)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", request_line["time"])


def test_streaming_with_spawn_threads_starts_functions_on_worker_threads(
    watchdog_factory: Factory,
) -> None:
    watchdog = watchdog_factory(fprocess="cat", spawn_threads="2")
    for index in range(20):
        body = f"request {index}".encode()
        assert watchdog.request("POST", "/", body=body)[::2] == (200, body)
    missing = watchdog_factory(fprocess="/nonexistent/fn", spawn_threads="2")
    status, _, answer = missing.request("POST", "/", body=b"x")
    assert status == 500
    assert b"/nonexistent/fn" in answer
