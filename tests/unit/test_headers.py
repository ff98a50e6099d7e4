"""http/headers.py: the one header policy for every mode that passes a message on."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fwatchdog.http.headers import (
    connection_listed,
    end_to_end,
    end_to_end_raw,
    is_hop_by_hop,
    origin_form,
    split_target,
)


def test_hop_by_hop_listed_and_proxy_fields_stop_here() -> None:
    headers = [
        ("Host", "fn"),
        ("Connection", "keep-alive, X-Secret"),
        ("Keep-Alive", "timeout=5"),
        ("X-Secret", "1"),
        ("Proxy-Authorization", "Basic abc"),
        ("Proxy-Connection", "keep-alive"),
        ("TE", "trailers"),
        ("X-Call-Id", "abc"),
    ]
    assert end_to_end(headers) == [("Host", "fn"), ("X-Call-Id", "abc")]


def test_raw_fields_get_the_same_policy_and_come_out_decoded() -> None:
    raw = [
        (b"Content-Type", b"text/plain"),
        (b"connection", b"close, x-drop"),
        (b"X-Drop", b"1"),
        (b"Proxy-Foo", b"bar"),
        (b"Date", b"today"),
    ]
    assert end_to_end_raw(raw, frozenset((b"date",))) == [("Content-Type", "text/plain")]


def test_connection_options_are_not_field_names() -> None:
    assert connection_listed([("Connection", "close, Upgrade, keep-alive, X-A")]) == {"x-a"}
    assert is_hop_by_hop("upgrade") and not is_hop_by_hop("x-a")


@pytest.mark.parametrize(
    ("target", "origin", "path", "query"),
    [
        ("/a?b=c", "/a?b=c", "/a", "b=c"),
        ("http://host/x?q=1", "/x?q=1", "/x", "q=1"),
        ("http://host", "/", "/", ""),
        ("http://host?q=1", "/?q=1", "/", "q=1"),
        ("/_%2Fhealth", "/_%2Fhealth", "/_/health", ""),
        ("/a%20b#frag", "/a%20b#frag", "/a b", ""),
        ("*", "*", "*", ""),
    ],
)
def test_targets_in_origin_and_absolute_form(
    target: str, origin: str, path: str, query: str
) -> None:
    assert origin_form(target) == origin
    assert split_target(target) == (path, query)


NAMES = st.sampled_from(
    [
        "Host",
        "Connection",
        "Keep-Alive",
        "Upgrade",
        "TE",
        "Trailer",
        "Transfer-Encoding",
        "Proxy-Authorization",
        "X-A",
        "x-b",
        "Content-Type",
        "Proxy-Connection",
    ]
)
VALUES = st.one_of(
    st.sampled_from(["close", "keep-alive", "x-a", "X-B, close", "upgrade", "1"]),
    st.text(alphabet="abcxyz-, ", max_size=12),
)


@given(st.lists(st.tuples(NAMES, VALUES), max_size=12))
def test_the_policy_is_idempotent_and_only_removes(headers: list[tuple[str, str]]) -> None:
    once = end_to_end(headers)
    assert end_to_end(once) == once
    assert all(field in headers for field in once)
    assert not any(is_hop_by_hop(name.lower()) for name, _ in once)
    raw = [(name.encode(), value.encode()) for name, value in headers]
    assert end_to_end_raw(raw) == once
