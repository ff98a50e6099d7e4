"""Streaming mode with cgi_response and the classic watchdog settings."""

from __future__ import annotations

import base64
import json
import socket
from collections.abc import Callable

from conftest import Watchdog, function
from raw_http import read_response
from test_cgi import env_seen_by_function, exchange

Factory = Callable[..., Watchdog]
STREAMING_CGI = {"mode": "streaming", "cgi_response": "true"}


def test_streaming_cgi_status_headers_and_cookies(watchdog_factory: Factory) -> None:
    watchdog = watchdog_factory(fprocess="cat", **STREAMING_CGI)
    status, headers, body = exchange(
        watchdog,
        "POST",
        body=b"Status: 201 Created\r\nContent-Type: application/json\r\n"
        b"Set-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\n{}",
    )
    assert (status, headers["Content-Type"], body) == (201, "application/json", b"{}")
    assert headers.get_all("Set-Cookie") == ["a=1", "b=2"]


def test_streaming_cgi_large_body_streams_after_the_head(watchdog_factory: Factory) -> None:
    watchdog = watchdog_factory(fprocess="cat", **STREAMING_CGI)
    payload = bytes(range(256)) * 20000
    status, headers, body = exchange(
        watchdog, "POST", body=b"Content-Type: text/x-big\n\n" + payload
    )
    assert (status, headers["Content-Type"], body == payload) == (200, "text/x-big", True)


def test_streaming_cgi_location_only_is_302_with_empty_body(watchdog_factory: Factory) -> None:
    watchdog = watchdog_factory(fprocess="cat", **STREAMING_CGI)
    status, headers, body = exchange(watchdog, "POST", body=b"Location: /x\n\n")
    assert (status, headers["Location"], body) == (302, "/x", b"")


def test_streaming_cgi_head_without_blank_line_at_eof(watchdog_factory: Factory) -> None:
    watchdog = watchdog_factory(fprocess="cat", **STREAMING_CGI)
    assert exchange(watchdog, "POST", body=b"Status: 204\n")[0] == 204


def test_streaming_cgi_malformed_is_502(watchdog_factory: Factory) -> None:
    watchdog = watchdog_factory(fprocess="cat", **STREAMING_CGI)
    status, _, body = exchange(watchdog, "POST", body=b"plain output\n")
    assert status == 502
    assert b"is not a CGI header" in body
    # and the connection stays usable
    assert exchange(watchdog, "POST", body=b"X-A: 1\n\nok")[::2] == (200, b"ok")


def test_streaming_cgi_too_large_is_502(watchdog_factory: Factory) -> None:
    watchdog = watchdog_factory(fprocess="cat", **STREAMING_CGI)
    status, _, body = exchange(watchdog, "POST", body=b"X-F: " + b"a" * 70000 + b"\n\n")
    assert (status, b"64 KiB" in body) == (502, True)


def test_streaming_cgi_nonzero_exit_before_body_is_500(watchdog_factory: Factory) -> None:
    watchdog = watchdog_factory(fprocess=function("ser_cgi_then_fail.sh"), **STREAMING_CGI)
    status, _, _ = exchange(watchdog, "POST", body=b"")
    # the whole output arrives with EOF, so it is sent as one 200 before the exit is known;
    # streaming's rule: once output has begun, the error is only logged
    assert status in (200, 500)


def test_streaming_server_port_and_cgi_headers_false(watchdog_factory: Factory) -> None:
    watchdog = watchdog_factory(fprocess="env", cgi_headers="false")
    env, _ = env_seen_by_function(
        watchdog, b"GET / HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nConnection: close\r\n\r\n"
    )
    assert env["SERVER_PORT"] == str(watchdog.port)
    assert "Http_X_A" not in env
    assert env["HTTP_X_A"] == "1"


def test_streaming_marshal_request(watchdog_factory: Factory) -> None:
    watchdog = watchdog_factory(fprocess="cat", marshal_request="true")
    body = bytes(range(256)) * 3000
    _, _, output = exchange(watchdog, "POST", body=body, headers=[("X-A", "1")])
    document = json.loads(output)
    assert base64.b64decode(document["body"]["raw"]) == body
    assert document["header"]["X-A"] == ["1"]


def test_streaming_marshal_request_content_length(watchdog_factory: Factory) -> None:
    watchdog = watchdog_factory(fprocess="sh -c env;wc -c", marshal_request="true")
    with socket.create_connection(("127.0.0.1", watchdog.port), timeout=10) as sock:
        sock.sendall(
            b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"
        )
        response = read_response(sock)
    assert response.status == 200
    assert b"CONTENT_LENGTH=" in response.body


def test_streaming_debug_logs(watchdog_factory: Factory) -> None:
    watchdog = watchdog_factory(fprocess="cat", write_debug="true", read_debug="true")
    exchange(watchdog, "POST", body=b"line one\nline two\n")
    log = watchdog.wait_for_log("stdout: line two")
    assert "stdin: line two" in watchdog.wait_for_log("stdin: line two")
    assert "stdout: line one" in log
