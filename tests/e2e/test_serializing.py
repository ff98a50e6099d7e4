"""Serializing mode, end to end: the whole body in, the whole output out, one process each.

Also the classic watchdog's settings (cgi_headers, marshal_request, combine_output, write_debug,
read_debug) as serializing mode applies them.
"""

from __future__ import annotations

import base64
import http.client
import json
import socket
from collections.abc import Callable

from conftest import (
    Watchdog,
    children_of,
    environment_of,
    function,
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
