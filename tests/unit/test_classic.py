"""marshal_request's JSON: what the classic watchdog's functions parse from stdin."""

from __future__ import annotations

import base64
import json
import os

from fwatchdog.http.request import Request, RequestBody
from fwatchdog.modes.forking.classic import MarshalledRequest


class _NoControl:
    def update_reading(self) -> None: ...

    def send_continue(self) -> None: ...


def make_request(headers: list[tuple[str, str]]) -> Request:
    body = RequestBody(_NoControl())  # type: ignore[arg-type]
    return Request("POST", "/", "/", "", headers, "1.1", True, body)


HEADERS = [
    ("host", "example.com"),
    ("x-call-id", "abc"),
    ("Accept", "text/plain"),
    ("accept", "application/json"),
    ("Transfer-Encoding", "chunked"),
    ("X-Html", "<b>&</b>"),
]


def test_document_has_go_canonical_headers_with_all_values_and_base64_body() -> None:
    document = MarshalledRequest.encode(make_request(HEADERS), b"hello")
    parsed = json.loads(document)
    assert parsed == {
        "header": {
            "Accept": ["text/plain", "application/json"],
            "X-Call-Id": ["abc"],
            "X-Html": ["<b>&</b>"],
        },
        "body": {"raw": base64.b64encode(b"hello").decode()},
    }


def test_document_is_written_as_go_encodes_it() -> None:
    document = MarshalledRequest.encode(make_request([("X-Html", "<b>&</b>")]), b"")
    assert document == b'{"header":{"X-Html":["\\u003cb\\u003e\\u0026\\u003c/b\\u003e"]},' + (
        b'"body":{"raw":""}}'
    )


def test_chunk_by_chunk_encoding_equals_the_whole() -> None:
    request = make_request(HEADERS)
    body = os.urandom(10_007)
    encoder = MarshalledRequest(request)
    pieces = [encoder.start()]
    for size in (1, 2, 3, 4, 5, 1000, 7, 8994):
        chunk, body_rest = body[:size], body[size:]
        pieces.append(encoder.feed(chunk))
        body = body_rest
    assert not body
    pieces.append(encoder.end())
    streamed = b"".join(pieces)
    whole_body = base64.b64decode(json.loads(streamed)["body"]["raw"])
    assert len(whole_body) == 10_007
    assert streamed == MarshalledRequest.encode(request, whole_body)


def test_encoded_length_predicts_the_document_length() -> None:
    request = make_request(HEADERS)
    for size in (0, 1, 2, 3, 4, 100, 65536):
        document = MarshalledRequest.encode(request, b"x" * size)
        assert MarshalledRequest(request).encoded_length(size) == len(document)
