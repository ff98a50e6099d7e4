"""Changing a request's fields keeps its raw bytes (what http mode may pass on as they came)
true to them: parsed again, the bytes give the fields the request now has."""

from __future__ import annotations

import httptools

from fwatchdog.http.request import FieldNames, Request, RequestBody

FIELDS = [(b"Host", b"fn:8080"), (b"X-Call-Id", b"c-1"), (b"Content-Length", b"5")]
RAW = b"POST /x HTTP/1.1\r\n" + b"".join(k + b": " + v + b"\r\n" for k, v in FIELDS) + b"\r\nhello"


class Parsed:
    def __init__(self, raw: bytes) -> None:
        self.fields: list[tuple[str, str]] = []
        self.body = b""
        httptools.HttpRequestParser(self).feed_data(raw)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.fields.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_body(self, body: bytes) -> None:
        self.body += body


def request(decoded: bool = False) -> Request:
    made = Request(
        "POST",
        "/x",
        "/x",
        "",
        None,
        "1.1",
        True,
        RequestBody.__new__(RequestBody),
        raw=RAW,
        raw_headers=list(FIELDS),
    )
    if decoded:
        made.headers  # noqa: B018  # as a mode that read them leaves it
    return made


def test_an_added_field_is_in_the_fields_and_in_the_bytes() -> None:
    for decoded in (False, True):
        changed = request(decoded)
        changed.add_headers([("traceparent", "00-ab-cd-01"), ("X-Two", "2")])
        assert changed.raw is not None
        parsed = Parsed(changed.raw)
        assert parsed.fields == changed.headers
        assert changed.headers[-2:] == [("traceparent", "00-ab-cd-01"), ("X-Two", "2")]
        assert parsed.body == b"hello"


def test_a_replaced_field_gives_up_the_bytes_only_when_one_was_taken_out() -> None:
    changed = request()
    changed.replace_headers([("X-Auth-Seconds", "12"), ("tracestate", None)])
    assert changed.raw is not None and Parsed(changed.raw).fields == changed.headers
    assert changed.header("x-auth-seconds") == "12"

    for decoded in (False, True):
        changed = request(decoded)
        changed.replace_headers([("x-call-id", "mine")])
        assert changed.raw is None  # the caller's X-Call-Id is still in those bytes
        assert [value for name, value in changed.headers if name.lower() == "x-call-id"] == ["mine"]


def test_headers_named_finds_the_first_of_each_in_any_case() -> None:
    wanted = FieldNames("X-Call-Id", "traceparent", "host")
    for decoded in (False, True):
        made = request(decoded)
        made.add_headers([("x-call-id", "second"), ("HOST", "other")])
        assert made.headers_named(wanted) == ["c-1", None, "fn:8080"]
