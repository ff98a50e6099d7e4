"""Whole messages passed on as bytes: what is accepted, what is edited, what is declined."""

import re

import pytest

from fwatchdog.http.connection import is_whole_message as is_whole_request
from fwatchdog.http.passthrough import ResponsePassthrough

ADDED = b"X-Duration-Seconds: 0.000100\r\n"
DATE_LINE = rb"Date: [A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d GMT\r\n"


def response(*fields: bytes, body: bytes = b"hello", status: bytes = b"200 OK") -> bytes:
    return b"HTTP/1.1 " + status + b"\r\n" + b"".join(f + b"\r\n" for f in fields) + b"\r\n" + body


def test_whole_request_is_exactly_one_message() -> None:
    head = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\n"
    assert is_whole_request(head + b"abc", 3)
    assert not is_whole_request(head + b"ab", 3)  # the body goes on in the next read
    assert not is_whole_request(head + b"abcGET / HTTP/1.1\r\n\r\n", 3)  # pipelined
    assert is_whole_request(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", None)
    assert not is_whole_request(b"GET / HTTP/1.1\r\nHost: x\r\n", None)


def test_simple_response_passes_with_our_field_and_without_connection() -> None:
    data = response(
        b"Server: nginx",
        b"Date: Sat, 28 Nov 2026 03:00:00 GMT",
        b"Content-Length: 5",
        b"Connection: keep-alive",
        b"Set-Cookie: a=1",
        b"Set-Cookie: b=2",
    )
    passed = ResponsePassthrough().pass_on(data)
    assert passed is not None
    assert passed.status == 200
    assert passed.body_length == 5
    assert passed.upstream_keeps_alive
    assert passed.message(ADDED) == (
        b"HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: Sat, 28 Nov 2026 03:00:00 GMT\r\n"
        b"Content-Length: 5\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n" + ADDED + b"\r\nhello"
    )


def test_node_s_answer_passes_without_connection_and_keep_alive() -> None:
    data = response(
        b"X-Powered-By: Express",
        b"Content-Length: 5",
        b"Date: Sat, 28 Nov 2026 03:00:00 GMT",
        b"Connection: keep-alive",
        b"Keep-Alive: timeout=5",
    )
    passed = ResponsePassthrough().pass_on(data)
    assert passed is not None and passed.upstream_keeps_alive
    assert passed.message(ADDED) == (
        b"HTTP/1.1 200 OK\r\nX-Powered-By: Express\r\nContent-Length: 5\r\n"
        b"Date: Sat, 28 Nov 2026 03:00:00 GMT\r\n" + ADDED + b"\r\nhello"
    )


def test_connection_close_passes_but_the_upstream_connection_is_not_kept() -> None:
    data = response(b"Connection: close", b"Content-Length: 5")
    passed = ResponsePassthrough().pass_on(data)
    assert passed is not None
    assert not passed.upstream_keeps_alive
    assert b"onnection" not in passed.message(ADDED)


def test_a_response_without_date_gets_ours() -> None:
    passed = ResponsePassthrough().pass_on(response(b"Content-Length: 5"))
    assert passed is not None
    assert re.fullmatch(
        rb"HTTP/1\.1 200 OK\r\nContent-Length: 5\r\n"
        + re.escape(ADDED)
        + DATE_LINE
        + rb"\r\nhello",
        passed.message(ADDED),
    )


@pytest.mark.parametrize(
    "data",
    [
        response(b"Transfer-Encoding: chunked", body=b"5\r\nhello\r\n0\r\n\r\n"),
        response(b"Content-Length: 5", b"Content-Length: 5"),
        response(b"Content-Length: 6"),  # the body goes on in the next read
        response(b"Content-Length: 4"),  # more than one message
        response(b"Content-Length: +5"),
        response(b"Content-Type: text/plain"),  # delimited by the end of the connection
        response(b"Connection: X-Secret", b"X-Secret: 1", b"Content-Length: 5"),
        response(b"Connection: close", b"Connection: keep-alive", b"Content-Length: 5"),
        response(b"Keep-Alive: timeout=5", b"Keep-Alive: max=3", b"Content-Length: 5"),
        response(b"Proxy-Authenticate: Basic", b"Content-Length: 5"),
        response(b"Upgrade: h2c", b"Content-Length: 5"),
        response(b"X-Duration-Seconds: 1", b"Content-Length: 5"),
        response(b"Content-Length: 5", status=b"204 No Content"),
        response(b"Content-Length: 5", status=b"304 Not Modified"),
        response(b"Bad Name: 1", b"Content-Length: 5"),  # llhttp refuses it
        response(b"Content-Length: 5", b" folded", body=b"hello"),
        b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n",
    ],
)
def test_anything_unusual_is_declined(data: bytes) -> None:
    assert ResponsePassthrough().pass_on(data) is None


def test_a_declined_malformed_response_does_not_spoil_the_next() -> None:
    passthrough = ResponsePassthrough()
    assert passthrough.pass_on(response(b"Bad Name: 1", b"Content-Length: 5")) is None
    assert passthrough.pass_on(response(b"Content-Length: 5")) is not None
    assert passthrough.pass_on(response(b"Content-Length: 5")) is not None


def test_the_same_response_again_is_edited_the_same_way_with_its_own_fields() -> None:
    passthrough = ResponsePassthrough()
    data = response(b"Content-Length: 5", b"Connection: keep-alive")
    first = passthrough.pass_on(data)
    again = passthrough.pass_on(data)
    assert first is not None and again is first  # remembered, not parsed again
    first_message = first.message(b"X-Duration-Seconds: 0.000100\r\n")
    again_message = again.message(b"X-Duration-Seconds: 0.000200\r\n")
    assert again_message == first_message.replace(b"0.000100", b"0.000200")
    assert (again.status, again.body_length, again.upstream_keeps_alive) == (200, 5, True)
    assert re.search(DATE_LINE, again_message)  # a fresh Date, since the upstream sent none
