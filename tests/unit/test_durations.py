"""parse_duration accepts what Go's of-watchdog accepts; format_duration prints like Go."""

import pytest

from fwatchdog.settings.durations import format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30", 30.0),
        ("00", 0.0),
        ("0", 0.0),
        ("030", 30.0),
        ("+30", 30.0),
        ("1m30s", 90.0),
        ("500ms", 0.5),
        ("1.5h", 5400.0),
        ("2h45m", 9900.0),
        ("0s", 0.0),
        ("-0", 0.0),
        ("+0", 0.0),
        ("1.s", 1.0),
        (".5s", 0.5),
        ("10ns", 10e-9),
        ("3us", 3e-6),
        ("3\u00b5s", 3e-6),
        ("3\u03bcs", 3e-6),
        ("1h1m1s1ms1us1ns", 3661.001001001),
        ("1s500ms", 1.5),
        ("-5s", -5.0),
        ("-1m30s", -90.0),
    ],
)
def test_parse_duration_accepts_go_durations_and_bare_seconds(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds, abs=1e-12)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("-", "empty"),
        ("5x", "unknown unit 'x'"),
        ("1m30", "missing unit"),
        ("1h-5m", "unknown unit 'h-'"),
        ("-5", "missing unit"),
        ("s", "expected a number"),
        (".s", "expected a number"),
        ("1m 30s", "unknown unit 'm '"),
        (" 30s", "expected a number"),
        ("1.5.5s", "missing unit"),
        ("\u0663s", "expected a number"),  # ARABIC-INDIC DIGIT THREE is not a Go digit
        ("3000000h", "out of range"),
        ("99999999999999999999", "out of range"),
        ("1S", "unknown unit 'S'"),
    ],
)
def test_parse_duration_rejects_with_a_reason(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=f"^{reason}$"):
        parse_duration(text)


def test_parse_duration_accepts_the_largest_go_duration() -> None:
    assert parse_duration("2562047h47m16.854775807s") == pytest.approx(9223372036.854775807)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (30, "30s"),
        (90, "1m30s"),
        (0.5, "500ms"),
        (1.5, "1.5s"),
        (3600, "1h0m0s"),
        (3600.25, "1h0m0.25s"),
        (9900, "2h45m0s"),
        (0.0015, "1.5ms"),
        (0.000002, "2\u00b5s"),
        (12e-9, "12ns"),
        (-90, "-1m30s"),
    ],
)
def test_format_duration_matches_go_string(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize("text", ["1m30s", "500ms", "2h45m0s", "1.5s", "30s"])
def test_format_duration_round_trips_through_parse(text: str) -> None:
    assert parse_duration(format_duration(parse_duration(text))) == parse_duration(text)
