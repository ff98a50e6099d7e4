"""Invariants checked on many generated inputs (Hypothesis), beside the coverage-guided fuzzing
of fuzz/ (`make fuzz`): these run with every `make test`.

(Header policy idempotence is a property in test_headers.py, beside the policy's other tests.)
"""

from __future__ import annotations

import os

from hypothesis import example, given, settings
from hypothesis import strategies as st

from fwatchdog.http.headers import split_target
from fwatchdog.http.request import Request
from fwatchdog.modes.forking.cgi_env import EnvironmentBuilder
from fwatchdog.modes.static.paths import StaticRoot, parse_url_path, raw_path_of
from fwatchdog.settings.durations import format_duration, parse_duration

# Exactly representable as float seconds times 1e9 (about 104 days): past 2**53 nanoseconds a
# float rounds, and at the top of Go's range rounds past it ("out of range").
NANOSECONDS = st.integers(min_value=-(2**53), max_value=2**53)
UNITS = {"ns": 1, "us": 10**3, "\u00b5s": 10**3, "ms": 10**6, "s": 10**9, "m": 60 * 10**9}


@given(NANOSECONDS)
@example(0)
@example(1)
@example(90 * 10**9)
@example(2**53)
def test_formatted_durations_parse_back_to_the_same_value(nanoseconds: int) -> None:
    seconds = nanoseconds / 1e9
    again = parse_duration(format_duration(seconds))
    assert abs(again - seconds) <= max(1e-9, abs(seconds) * 1e-12)


@given(
    st.lists(
        st.tuples(st.integers(0, 10**6), st.sampled_from(sorted(UNITS))), min_size=1, max_size=20
    )
)
def test_go_durations_are_the_sum_of_their_parts(parts: list[tuple[int, str]]) -> None:
    text = "".join(f"{number}{unit}" for number, unit in parts)
    nanoseconds = sum(number * UNITS[unit] for number, unit in parts)
    assert parse_duration(text) == nanoseconds / 10**9


# Path pieces that have got past file servers before: dots, encoded dots and slashes,
# backslashes, NUL, doubled encodings, and ordinary names.
PIECES = st.sampled_from(
    [
        "/",
        "//",
        ".",
        "..",
        "%2e",
        "%2E%2e",
        "%2f",
        "%5c",
        "\\",
        "%00",
        "%252e%252e",
        "%",
        "%zz",
        "a",
        "dir",
        ".hidden",
        "index.html",
        "?",
        "#",
        "http://x",
        ";",
        "%c0%ae",
    ]
)


@settings(max_examples=500)
@given(st.lists(PIECES, max_size=12).map("".join), st.booleans())
def test_static_paths_never_leave_the_root(target: str, dotfiles: bool) -> None:
    root = _STATIC_ROOT
    url = parse_url_path(raw_path_of("/" + target), dotfiles)
    if url is None:
        return
    for segment in url.segments:
        assert segment not in (b"", b".", b"..")
        assert b"/" not in segment and b"\\" not in segment and b"\0" not in segment
    path = os.path.normpath(root.path_of(url.segments))
    assert path == root.real or path.startswith(root.real + b"/")
    assert not url.location(True, "").startswith("//")


@settings(max_examples=500)
@given(st.lists(PIECES, max_size=12).map("".join), st.sampled_from(["/", "http://fn/", ""]))
@example("a%zz", "/")
@example("a?b#c", "/")
def test_a_target_that_is_its_own_decoded_path_is_its_own_raw_path(tail: str, start: str) -> None:
    """Static mode keys its cache on the target itself when split_target's decoded path is
    the same string (mode._raw_path, sparing a second parse): raw_path_of must agree."""
    target = start + tail
    if split_target(target)[0] == target:
        assert raw_path_of(target) == target


def _make_static_root() -> StaticRoot:
    import tempfile

    return StaticRoot(tempfile.mkdtemp(prefix="properties-static-"), dotfiles=False)


_STATIC_ROOT = _make_static_root()

HEADER_NAMES = st.one_of(
    st.sampled_from(["Proxy", "proxy", "PROXY", "pRoXy", "Proxy-Authorization", "X-Proxy"]),
    st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_", min_size=1),
)


@given(st.lists(st.tuples(HEADER_NAMES, st.text("abc :/.", max_size=20)), max_size=8))
def test_cgi_environment_never_carries_a_proxy(headers: list[tuple[str, str]]) -> None:
    """httpoxy: HTTP_PROXY (and Python's case-blind http_proxy) must not come from a header."""
    request = Request(
        method="GET",
        target="/",
        path="/",
        query="",
        headers=headers,
        http_version="1.1",
        keep_alive=True,
        body=None,  # type: ignore[arg-type]  # the environment never reads the body
    )
    for http_variables in (True, False):
        env = EnvironmentBuilder({}, http_variables=http_variables).build(request)
        assert not [name for name in env if name.lower() == "http_proxy"], env
