"""Serializing mode, end to end: the whole body in, the whole output out, one process each.

Also the classic watchdog's settings (cgi_headers, marshal_request, combine_output, write_debug,
read_debug) as serializing mode applies them.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import socket
import time
from collections.abc import Callable
from pathlib import Path

from conftest import (
    Watchdog,
    children_of,
    environment_of,
    function,
    process_gone,
    wait_for_pid,
    wait_until,
)

Factory = Callable[..., Watchdog]

SERIALIZING = {"mode": "serializing"}


def exchange(
    watchdog: Watchdog,
    method: str = "POST",
    path: str = "/",
    body: bytes = b"",
    headers: list[tuple[str, str]] | None = None,
    timeout: float = 30.0,
) -> tuple[int, http.client.HTTPMessage, bytes]:
    """One request whose headers may repeat a name: status, headers (all values), body."""
    conn = watchdog.connection(timeout)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for name, value in headers or []:
            conn.putheader(name, value)
        if method not in ("GET", "HEAD") or body:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        response = conn.getresponse()
        return response.status, response.headers, response.read()
    finally:
        conn.close()


def raw_response(watchdog: Watchdog, data: bytes, timeout: float = 10.0) -> bytes:
    """Send raw bytes; the response's bytes up to its end (Content-Length) or the close."""
    with socket.create_connection(("127.0.0.1", watchdog.port), timeout=timeout) as sock:
        sock.sendall(data)
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = sock.recv(65536)
            if not chunk:
                return received
            received += chunk
        head, _, body = received.partition(b"\r\n\r\n")
        match = re.search(rb"(?im)^content-length: *(\d+)", head)
        if match is None:
            return received
        while len(body) < int(match.group(1)):
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
        return head + b"\r\n\r\n" + body


def header_lines(raw: bytes) -> list[str]:
    return raw.partition(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")[1:]


# --- the body in, the output out ------------------------------------------------------------------


def test_serializing_echoes_body_through_cat_with_content_length(
    watchdog_factory: Factory,
) -> None:
    watchdog = watchdog_factory(fprocess="cat", **SERIALIZING)
    body = os.urandom(3_000_000)
    status, headers, output = exchange(watchdog, body=body)
    assert status == 200
    assert output == body
    assert headers["Content-Length"] == str(len(body))
    assert headers["Transfer-Encoding"] is None
    assert headers["Content-Type"] == "application/octet-stream"


def test_serializing_reads_a_chunked_body_whole_and_answers_with_content_length(
    watchdog_factory: Factory,
) -> None:
    watchdog = watchdog_factory(fprocess="cat", **SERIALIZING)
    raw = raw_response(
        watchdog,
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"6\r\nchunky\r\n7\r\n body!\n\r\n0\r\n\r\n",
    )
    assert raw.startswith(b"HTTP/1.1 200 ")
    lines = header_lines(raw)
    assert "Content-Length: 13" in lines
    assert not any(line.lower().startswith("transfer-encoding") for line in lines)
    assert raw.endswith(b"\r\n\r\nchunky body!\n")


def test_serializing_sets_x_duration_seconds_in_go_format(watchdog_factory: Factory) -> None:
    watchdog = watchdog_factory(fprocess="cat", **SERIALIZING)
    _, headers, _ = exchange(watchdog, body=b"hi")
    assert re.fullmatch(r"\d+\.\d{6}", headers["X-Duration-Seconds"])
    assert float(headers["X-Duration-Seconds"]) < 10


def test_serializing_content_type_setting_sets_the_response_type(
    watchdog_factory: Factory,
) -> None:
    watchdog = watchdog_factory(fprocess="cat", content_type="application/json", **SERIALIZING)
    _, headers, output = exchange(watchdog, body=b'{"a": 1}')
    assert headers["Content-Type"] == "application/json"
    assert output == b'{"a": 1}'


def test_serializing_empty_output_is_an_empty_200_with_content_length_0(
    watchdog_factory: Factory,
) -> None:
    watchdog = watchdog_factory(fprocess="true", **SERIALIZING)
    status, headers, output = exchange(watchdog, "GET")
    assert (status, output, headers["Content-Length"]) == (200, b"", "0")


def test_serializing_function_that_never_reads_stdin_still_answers(
    watchdog_factory: Factory,
) -> None:
    watchdog = watchdog_factory(fprocess=function("ser_ignore_stdin.sh"), **SERIALIZING)
    status, _, output = exchange(watchdog, body=b"x" * 4_000_000)
    assert (status, output) == (200, b"did not read it\n")


def test_serializing_function_that_writes_before_reading_does_not_deadlock(
    watchdog_factory: Factory,
) -> None:
    # 3 MB out before any input is read, 3 MB in: both pipes fill unless stdout is read while
    # stdin is being written.
    watchdog = watchdog_factory(
        fprocess=function("ser_write_before_read.sh"), exec_timeout="20s", **SERIALIZING
    )
    status, _, output = exchange(watchdog, body=b"y" * 3_000_000, timeout=20)
    assert status == 200
    assert output[:3_000_000] == bytes(3_000_000)
    assert output[3_000_000:].strip() == b"3000000"


def test_serializing_stderr_goes_to_the_log_never_the_response(watchdog_factory: Factory) -> None:
    watchdog = watchdog_factory(fprocess=function("ser_interleaved.sh"), **SERIALIZING)
    status, _, output = exchange(watchdog, body=b"")
    assert (status, output) == (200, b"out 1\nout 2\n")
    log = watchdog.wait_for_log("stderr: err 2")
    assert "stderr: err 1" in log


def test_serializing_head_request_runs_the_function_and_sends_no_body(
    watchdog_factory: Factory,
) -> None:
    watchdog = watchdog_factory(fprocess="echo hello", **SERIALIZING)
    status, headers, output = exchange(watchdog, "HEAD")
    assert (status, output) == (200, b"")
    assert headers["Content-Length"] == "6"


def test_serializing_keeps_the_connection_alive_between_requests(
    watchdog_factory: Factory,
) -> None:
    watchdog = watchdog_factory(fprocess="cat", **SERIALIZING)
    conn = watchdog.connection()
    try:
        for index in range(3):
            body = f"request {index}".encode()
            conn.request("POST", "/", body=body)
            response = conn.getresponse()
            assert (response.status, response.read()) == (200, body)
    finally:
        conn.close()


# --- failures: Go's bodies ------------------------------------------------------------------------


def test_serializing_nonzero_exit_is_500_exit_status_without_the_output(
    watchdog_factory: Factory,
) -> None:
    watchdog = watchdog_factory(fprocess=f"{function('ser_fail.sh')} 5", **SERIALIZING)
    status, headers, output = exchange(watchdog, body=b"input")
    assert (status, output) == (500, b"exit status 5")
    assert headers["Content-Length"] == "13"
    assert "X-Duration-Seconds" in headers
    log = watchdog.wait_for_log("stderr: something went wrong")
    assert "POST /: exit status 5" in log
    assert re.search(r"POST / - 500 - ContentLength: 13B", watchdog.wait_for_log(" - 500 - "))


def test_serializing_exec_timeout_kills_the_whole_group_and_answers_signal_killed(
    watchdog_factory: Factory,
) -> None:
    watchdog = watchdog_factory(
        fprocess=function("ser_sleep.sh"), exec_timeout="500ms", **SERIALIZING
    )
    started = time.monotonic()
    status, headers, output = exchange(watchdog, body=b"", timeout=20)
    elapsed = time.monotonic() - started
    assert (status, output) == (500, b"signal: killed")
    # Go waits for the orphaned `sleep` to close stdout (30 s here); the group kill does not.
    assert elapsed < 10
    assert float(headers["X-Duration-Seconds"]) >= 0.5
    assert "exec_timeout (500ms) exceeded: signal: killed" in watchdog.wait_for_log("exceeded")


def test_serializing_client_gone_kills_the_function(
    watchdog_factory: Factory, tmp_path: Path
) -> None:
    pidfile = tmp_path / "function.pid"
    watchdog = watchdog_factory(
        fprocess=function("ser_pidfile.sh"), PIDFILE=str(pidfile), **SERIALIZING
    )
    with socket.create_connection(("127.0.0.1", watchdog.port), timeout=10) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
        pid = wait_for_pid(pidfile)
    assert wait_until(lambda: process_gone(pid), timeout=5.0), "the function outlived its client"
    watchdog.wait_for_log(" - 499 - ")


def test_serializing_missing_binary_is_500_naming_it(watchdog_factory: Factory) -> None:
    watchdog = watchdog_factory(fprocess="no-such-function-binary", **SERIALIZING)
    status, _, output = exchange(watchdog, body=b"x")
    assert status == 500
    assert output == b'exec: "no-such-function-binary": executable file not found in $PATH'


def test_serializing_error_answers_use_the_content_type_setting(
    watchdog_factory: Factory,
) -> None:
    watchdog = watchdog_factory(
        fprocess=function("ser_fail.sh"), content_type="text/plain", **SERIALIZING
    )
    status, headers, _ = exchange(watchdog, body=b"")
    assert status == 500
    assert headers["Content-Type"] == "text/plain"


def test_serializing_body_stalled_past_read_timeout_is_500_saying_so(
    watchdog_factory: Factory,
) -> None:
    watchdog = watchdog_factory(fprocess="cat", read_timeout="500ms", **SERIALIZING)
    with socket.create_connection(("127.0.0.1", watchdog.port), timeout=10) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly part")
        received = b""
        while b"read_timeout" not in received:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
    assert received.startswith(b"HTTP/1.1 500 ")
    assert b"read_timeout exceeded" in received


# --- the classic watchdog's settings --------------------------------------------------------------


def test_cgi_headers_false_drops_http_variables_but_keeps_rfc_3875_ones(
    watchdog_factory: Factory,
) -> None:
    watchdog = watchdog_factory(fprocess="env", cgi_headers="false", **SERIALIZING)
    _, _, output = exchange(watchdog, "GET", "/p?q=1", headers=[("X-Call-Id", "abc")])
    env = environment_of(output)
    assert not [name for name in env if name.startswith("Http_")]
    assert env["REQUEST_METHOD"] == "GET"
    assert env["HTTP_X_CALL_ID"] == "abc"


def test_cgi_headers_default_passes_http_variables(watchdog_factory: Factory) -> None:
    watchdog = watchdog_factory(fprocess="env", **SERIALIZING)
    _, _, output = exchange(watchdog, "GET", "/p?q=1", headers=[("X-Call-Id", "abc")])
    env = environment_of(output)
    assert env["Http_X_Call_Id"] == "abc"
    assert (env["Http_Method"], env["Http_Path"], env["Http_Query"]) == ("GET", "/p", "q=1")


def test_marshal_request_writes_the_classic_json_to_stdin(watchdog_factory: Factory) -> None:
    watchdog = watchdog_factory(fprocess="cat", marshal_request="true", **SERIALIZING)
    body = bytes(range(256)) + b"<tag> & more"
    _, _, output = exchange(
        watchdog,
        body=body,
        headers=[("x-custom", "one"), ("X-Custom", "two"), ("Content-Type", "text/x-test")],
    )
    document = json.loads(output)
    assert list(document) == ["header", "body"]
    assert base64.b64decode(document["body"]["raw"]) == body
    header = document["header"]
    assert header["X-Custom"] == ["one", "two"]
    assert header["Content-Type"] == ["text/x-test"]
    assert header["Content-Length"] == [str(len(body))]
    assert "Host" not in header
    assert list(header) == sorted(header)  # Go's encoder sorts map keys


def test_marshal_request_of_an_empty_body_has_an_empty_raw_string(
    watchdog_factory: Factory,
) -> None:
    watchdog = watchdog_factory(fprocess="cat", marshal_request="true", **SERIALIZING)
    _, _, output = exchange(watchdog, "GET")
    assert output.endswith(b',"body":{"raw":""}}')


def test_combine_output_returns_stdout_and_stderr_together_in_order(
    watchdog_factory: Factory,
) -> None:
    watchdog = watchdog_factory(
        fprocess=function("ser_interleaved.sh"), combine_output="true", **SERIALIZING
    )
    status, _, output = exchange(watchdog, body=b"")
    assert (status, output) == (200, b"out 1\nerr 1\nout 2\nerr 2\n")


def test_combine_output_failure_puts_the_output_after_exit_status(
    watchdog_factory: Factory,
) -> None:
    watchdog = watchdog_factory(
        fprocess=f"{function('ser_interleaved.sh')} 4", combine_output="true", **SERIALIZING
    )
    status, _, output = exchange(watchdog, body=b"")
    assert (status, output) == (500, b"exit status 4\nout 1\nerr 1\nout 2\nerr 2\n")


def test_combine_output_still_names_a_missing_binary(watchdog_factory: Factory) -> None:
    watchdog = watchdog_factory(
        fprocess="no-such-function-binary", combine_output="true", **SERIALIZING
    )
    status, _, output = exchange(watchdog, body=b"")
    assert status == 500
    assert output == b'exec: "no-such-function-binary": executable file not found in $PATH'


def test_write_debug_logs_the_function_output(watchdog_factory: Factory) -> None:
    watchdog = watchdog_factory(fprocess="cat", write_debug="true", **SERIALIZING)
    exchange(watchdog, body=b"first line\nsecond line\n")
    log = watchdog.wait_for_log("stdout: second line")
    assert "stdout: first line" in log


def test_read_debug_logs_the_request_body(watchdog_factory: Factory) -> None:
    watchdog = watchdog_factory(fprocess="true", read_debug="true", **SERIALIZING)
    exchange(watchdog, body=b"the request body")
    watchdog.wait_for_log("stdin: the request body")


def test_without_debug_settings_neither_body_nor_output_is_logged(
    watchdog_factory: Factory,
) -> None:
    watchdog = watchdog_factory(fprocess="cat", **SERIALIZING)
    exchange(watchdog, body=b"private payload")
    log = watchdog.wait_for_log(" - 200 - ")
    assert "private payload" not in log


def test_serializing_reaps_every_function_process_whatever_its_end(
    watchdog_factory: Factory,
) -> None:
    """Exit statuses are collected once output has ended (or by a pidfd if the process is
    still running then): no zombie is left after an exit, a failure or a kill."""
    ends = {
        "cat": 200,
        f"{function('ser_fail.sh')} 3": 500,
        function("ser_sleep.sh"): 500,  # killed by exec_timeout
    }
    for fprocess, expected in ends.items():
        watchdog = watchdog_factory(fprocess=fprocess, exec_timeout="1s", **SERIALIZING)
        for _ in range(3):
            assert exchange(watchdog, body=b"x")[0] == expected, fprocess
        pid = watchdog.process.pid
        assert wait_until(lambda pid=pid: not children_of(pid), timeout=5.0), (
            f"{fprocess}: children left: {children_of(pid)}"
        )
