"""Changing a request's fields keeps its raw bytes (what http mode may pass on as they came)
true to them: parsed again, the bytes give the fields the request now has."""

from __future__ import annotations

import httptools
from hypothesis import given, settings
from hypothesis import strategies as st

from fwatchdog.http.headers import end_to_end
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


def request(decoded: bool = False, fields: list[tuple[bytes, bytes]] = FIELDS) -> Request:
    """A request of `fields` with a 5-byte body, as the parser leaves it (or, `decoded`, as
    a mode that read its fields as text does)."""
    raw = b"POST /x HTTP/1.1\r\n" + b"".join(k + b": " + v + b"\r\n" for k, v in fields)
    made = Request(
        "POST",
        "/x",
        "/x",
        "",
        None,
        "1.1",
        True,
        RequestBody.__new__(RequestBody),
        raw=raw + b"\r\nhello",
        raw_headers=list(fields),
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


def test_a_replaced_field_is_taken_out_of_the_bytes_too() -> None:
    changed = request()
    changed.replace_headers([("X-Auth-Seconds", "12"), ("tracestate", None)])
    assert changed.raw is not None and Parsed(changed.raw).fields == changed.headers
    assert changed.header("x-auth-seconds") == "12"

    for decoded in (False, True):
        changed = request(decoded)
        changed.replace_headers([("x-call-id", "mine")])
        assert changed.raw is not None  # the caller's line is cut out of the bytes
        assert Parsed(changed.raw).fields == changed.headers
        assert [value for name, value in changed.headers if name.lower() == "x-call-id"] == ["mine"]
        assert Parsed(changed.raw).body == b"hello"


def test_every_line_of_a_replaced_field_goes_whatever_its_case() -> None:
    fields = [
        (b"TraceParent", b"00-caller-1"),
        (b"Host", b"fn"),
        (b"traceparent", b"00-caller-2"),
        (b"x-traceparent-note", b"kept"),
        (b"Content-Length", b"5"),
    ]
    made = request(fields=fields)
    made.replace_headers([("traceparent", "00-ours-01"), ("tracestate", None)])
    assert made.raw is not None
    parsed = Parsed(made.raw)
    assert (
        parsed.fields
        == made.headers
        == [
            ("Host", "fn"),
            ("x-traceparent-note", "kept"),
            ("Content-Length", "5"),
            ("traceparent", "00-ours-01"),
        ]
    )
    assert parsed.body == b"hello"


def test_bytes_that_do_not_show_the_fields_as_lines_are_given_up() -> None:
    # The fields say there is an X-Call-Id the bytes do not have as a line of its own.
    made = request()
    made.raw = RAW.replace(b"\r\nX-Call-Id: c-1", b"")
    made.replace_headers([("x-call-id", "mine")])
    assert made.raw is None  # written from the fields instead


def test_headers_named_finds_the_first_of_each_in_any_case() -> None:
    wanted = FieldNames("X-Call-Id", "traceparent", "host")
    for decoded in (False, True):
        made = request(decoded)
        made.add_headers([("x-call-id", "second"), ("HOST", "other")])
        assert made.headers_named(wanted) == ["c-1", None, "fn:8080"]


# Names that collide in every case, names that contain one another, and field values with the
# characters a value may hold (colons, spaces inside, tabs).
NAMES = st.sampled_from(
    ["traceparent", "TraceParent", "tracestate", "X-Trace", "x-traceparent", "Host", "A"]
)
VALUES = st.text(st.sampled_from("ab: 0-9\t,;="), max_size=12).map(str.strip)


@settings(max_examples=400)
@given(
    st.lists(st.tuples(NAMES, VALUES), max_size=8),
    st.lists(st.tuples(NAMES, st.none() | VALUES.filter(bool)), min_size=1, max_size=3),
    st.booleans(),
)
def test_changed_fields_and_their_bytes_always_agree(
    sent: list[tuple[str, str]], changes: list[tuple[str, str | None]], decoded: bool
) -> None:
    fields = [(name.encode(), value.encode()) for name, value in sent]
    fields.append((b"Content-Length", b"5"))
    made = request(decoded, fields)
    made.replace_headers(changes)
    expected = [(n, v) for n, v in sent if n.lower() not in {c.lower() for c, _ in changes}]
    expected.append(("Content-Length", "5"))
    expected += [(name, value) for name, value in changes if value is not None]
    assert made.headers == expected
    assert made.raw is not None  # plain CRLF lines: the bytes are kept
    parsed = Parsed(made.raw)
    assert parsed.fields == expected and parsed.body == b"hello"


HOP_NAMES = st.sampled_from(
    [
        "Connection",
        "Keep-Alive",
        "TE",
        "Trailer",
        "Proxy-Authorization",
        "Expect",
        "X-Listed",
        "X-Kept",
        "Host",
        "Upgrade",
    ]
)
HOP_VALUES = st.sampled_from(["keep-alive", "close, X-Listed", "x-listed, te", "5", "", "a b"])


@settings(max_examples=400)
@given(st.lists(st.tuples(HOP_NAMES, HOP_VALUES), max_size=8), st.booleans())
def test_the_bytes_a_proxy_passes_on_are_the_end_to_end_fields(
    sent: list[tuple[str, str]], decoded: bool
) -> None:
    fields = [(name.encode(), value.encode()) for name, value in sent]
    fields.append((b"Content-Length", b"5"))
    made = request(decoded, fields)
    passed = made.raw_end_to_end(frozenset((b"expect",)))
    assert passed is not None  # plain CRLF lines: they can be cut
    parsed = Parsed(passed)
    assert parsed.fields == end_to_end(made.headers, frozenset(("expect",)))
    assert parsed.body == b"hello"
