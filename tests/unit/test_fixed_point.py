"""Durations with fixed decimals: the same text as formatting the float, and bounded."""

import random

from fwatchdog.telemetry.fixed_point import FixedPoint


def test_texts_match_go_style_float_formatting() -> None:
    four = FixedPoint(4, str)
    six = FixedPoint(6, lambda text: text.encode())
    rng = random.Random(7)
    samples = [rng.uniform(0, 0.01) for _ in range(2000)] + [
        rng.uniform(0, 120) for _ in range(200)
    ]
    for seconds in [*samples, 0.0, 1.0, 59.99994, 0.00004]:
        assert four.write(four.units(seconds)) == f"{seconds:.4f}"
        assert six.write(six.units(seconds)) == b"%f" % seconds


def test_a_text_is_kept_and_found_by_a_plain_lookup() -> None:
    texts = FixedPoint(6, lambda text: b"X-Duration-Seconds: %b\r\n" % text.encode())
    units = texts.units(0.0002345)
    assert units not in texts
    assert texts.write(units) == b"X-Duration-Seconds: 0.000235\r\n"  # half up
    assert texts[units] == b"X-Duration-Seconds: 0.000235\r\n"


def test_no_more_than_limit_texts_are_kept() -> None:
    texts = FixedPoint(4, str, limit=10)
    for units in range(100):
        assert texts.write(units) == f"0.{units:04d}"
    assert len(texts) == 10
