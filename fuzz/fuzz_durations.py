"""Fuzz Go durations: parse_duration takes any text or raises ValueError, and what it returns
formats back to a text that parses to the same value."""

import math
import sys

import atheris

with atheris.instrument_imports():
    from fwatchdog.settings.durations import format_duration, parse_duration


def test_one_input(data: bytes) -> None:
    text = atheris.FuzzedDataProvider(data).ConsumeUnicodeNoSurrogates(64)
    try:
        seconds = parse_duration(text)
    except ValueError:
        return
    assert math.isfinite(seconds), text
    if abs(seconds) * 1e9 > 2**53:
        return  # float seconds no longer hold every nanosecond: the text cannot come back exact
    again = parse_duration(format_duration(seconds))
    assert abs(again - seconds) <= max(1e-9, abs(seconds) * 1e-12), (text, seconds, again)


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
