"""The tests' own HTTP client (tests/raw_http.py) on a socket pair: every e2e test that reads
raw answers trusts it, so it must reject what a careful client would."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from raw_http import ProtocolError, ResponseReader, read_response, request_bytes


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    server, client = socket.socketpair()
    client.settimeout(2)
    with server, client:
        yield server, client


def test_content_length_body_and_fields_in_order(pair: tuple[socket.socket, socket.socket]):
    server, client = pair
    server.sendall(b"HTTP/1.1 200 OK\r\nB: 1\r\nA: 2\r\nB: 3\r\nContent-Length: 5\r\n\r\nhello")
    response = read_response(client)
    assert (response.status, response.reason, response.body) == (200, "OK", b"hello")
    assert response.fields == [("B", "1"), ("A", "2"), ("B", "3"), ("Content-Length", "5")]
    assert response.values("b") == ["1", "3"]
    assert response.headers["b"] == "3"


def test_chunked_body_with_extensions_and_trailers(pair: tuple[socket.socket, socket.socket]):
    server, client = pair
    server.sendall(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nX-Trailer: t\r\n\r\n"
    )
    response = read_response(client)
    assert (response.body, response.trailers) == (b"abcde", [("X-Trailer", "t")])


def test_body_until_close_head_and_no_body_statuses(pair: tuple[socket.socket, socket.socket]):
    server, client = pair
    server.sendall(
        b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n"  # HEAD: no body
        b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n"
        b"HTTP/1.1 200 OK\r\n\r\nto the end"
    )
    server.shutdown(socket.SHUT_WR)
    reader = ResponseReader(client)
    assert reader.read_response(head_request=True, more=True).body == b""
    assert reader.read_response(more=True).status == 304
    assert reader.read_response().body == b"to the end"
    assert reader.closed_by_server()


def test_interim_answers_are_kept_apart(pair: tuple[socket.socket, socket.socket]):
    server, client = pair
    server.sendall(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
        b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"
    )
    response = read_response(client)
    assert response.status == 201
    assert [(i.status, i.fields) for i in response.interim] == [
        (100, []),
        (103, [("Link", "</a>")]),
    ]


def test_bytes_after_an_answer_are_refused_unless_more_are_expected(
    pair: tuple[socket.socket, socket.socket],
):
    server, client = pair
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx"
    server.sendall(answer + answer)
    with pytest.raises(ProtocolError, match="bytes after the response"):
        read_response(client)


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\nContent-Length: 0\n\n",  # bare LF
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nx",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nxy\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n",
    ],
)
def test_malformed_answers_fail(pair: tuple[socket.socket, socket.socket], answer: bytes):
    server, client = pair
    server.sendall(answer)
    server.shutdown(socket.SHUT_WR)
    with pytest.raises((ProtocolError, EOFError)):
        read_response(client)


def test_request_bytes_frames_bodies():
    assert request_bytes("POST", "/a%20b", [("Host", "h")], b"abcd") == (
        b"POST /a%20b HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\nabcd"
    )
    assert request_bytes("POST", "/", [], b"abcd", chunked=True) == (
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n2\r\ncd\r\n0\r\n\r\n"
    )
