"""HTTP dates in conditional requests (static mode): the three formats RFC 9110 names, anything
else refused, the same answer for a date seen before (they are remembered) as for a new one."""

from __future__ import annotations

import pytest

from fwatchdog.modes.static.headers import parse_http_date

NOV_6_1994 = 784111777  # Sun, 06 Nov 1994 08:49:37 GMT


@pytest.mark.parametrize(
    "text",
    [
        "Sun, 06 Nov 1994 08:49:37 GMT",  # IMF-fixdate
        "Sunday, 06-Nov-94 08:49:37 GMT",  # RFC 850
        "Sun Nov  6 08:49:37 1994",  # asctime
    ],
)
def test_the_three_formats_give_the_same_second(text: str) -> None:
    assert parse_http_date(text) == NOV_6_1994
    assert parse_http_date(text) == NOV_6_1994  # remembered, the same


@pytest.mark.parametrize(
    "text",
    [
        "",
        "yesterday",
        "Sun, 06 Nov 1994 08:49:37",  # no zone
        "Sun, 06 Nov 1994 08:49:37 GMT" + " " * 100,  # too long to remember: still read
    ],
)
def test_other_text_is_not_a_date_or_is_read_without_being_kept(text: str) -> None:
    expected = NOV_6_1994 if text.startswith("Sun, 06 Nov 1994 08:49:37 GMT") else None
    assert parse_http_date(text) == expected
    assert parse_http_date(text) == expected
