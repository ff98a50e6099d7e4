"""Durations as the Go of-watchdog reads and prints them.

Users move their `exec_timeout=1m30s` settings over from the Go watchdog, so we accept exactly
what Go's `time.ParseDuration` accepts (plus a bare integer meaning seconds, as the Go watchdog
does) and print durations the way Go's `Duration.String()` does in log lines.
"""

import re

_NANOSECOND = 1
_MICROSECOND = 1_000
_MILLISECOND = 1_000_000
_SECOND = 1_000_000_000
_MINUTE = 60 * _SECOND
_HOUR = 60 * _MINUTE

_UNITS: dict[str, int] = {
    "ns": _NANOSECOND,
    "us": _MICROSECOND,
    "\u00b5s": _MICROSECOND,  # MICRO SIGN
    "\u03bcs": _MICROSECOND,  # GREEK SMALL LETTER MU
    "ms": _MILLISECOND,
    "s": _SECOND,
    "m": _MINUTE,
    "h": _HOUR,
}

# Go keeps durations in an int64 of nanoseconds; anything larger is an error there too.
_MAX_NANOSECONDS = (1 << 63) - 1

# Go's of-watchdog tries strconv.Atoi first, which takes an optional sign and ASCII digits.
_BARE_INTEGER = re.compile(r"[+-]?[0-9]+")


def parse_duration(text: str) -> float:
    """Return `text` as seconds: a bare non-negative integer, or a Go duration ("1m30s").

    Negative durations ("-5s") are returned as they are; deciding whether a negative value makes
    sense is the caller's job. Raises ValueError with a short reason otherwise.
    """
    if _BARE_INTEGER.fullmatch(text) and int(text) >= 0:
        seconds = int(text)
        if seconds * _SECOND > _MAX_NANOSECONDS:
            raise ValueError("out of range")
        return float(seconds)
    return _parse_go_duration(text) / _SECOND


def _parse_go_duration(text: str) -> int:
    """Nanoseconds for a Go duration, following time.ParseDuration step by step."""
    rest = text
    negative = False
    if rest[:1] in ("-", "+"):
        negative = rest[0] == "-"
        rest = rest[1:]
    if rest == "0":
        return 0
    if rest == "":
        raise ValueError("empty")
    total = 0
    while rest:
        whole, rest = _leading_digits(rest)
        fraction = ""
        if rest.startswith("."):
            fraction, rest = _leading_digits(rest[1:])
        if not whole and not fraction:
            raise ValueError("expected a number")
        unit_length = 0
        while unit_length < len(rest) and not _starts_number(rest[unit_length]):
            unit_length += 1
        if unit_length == 0:
            raise ValueError("missing unit")
        unit_name, rest = rest[:unit_length], rest[unit_length:]
        unit = _UNITS.get(unit_name)
        if unit is None:
            raise ValueError(f"unknown unit {unit_name!r}")
        total += int(whole or "0") * unit
        if fraction:
            total += int(fraction) * unit // 10 ** len(fraction)
        if total > _MAX_NANOSECONDS:
            raise ValueError("out of range")
    return -total if negative else total


def _leading_digits(text: str) -> tuple[str, str]:
    """Split off the leading ASCII digits (Go takes only 0-9, not other Unicode digits)."""
    end = 0
    while end < len(text) and "0" <= text[end] <= "9":
        end += 1
    return text[:end], text[end:]


def _starts_number(char: str) -> bool:
    return char == "." or "0" <= char <= "9"


def format_duration(seconds: float) -> str:
    """Go's Duration.String(): 30 -> "30s", 90 -> "1m30s", 0.5 -> "500ms", 0 -> "0s"."""
    nanoseconds = round(seconds * _SECOND)
    sign = "-" if nanoseconds < 0 else ""
    nanoseconds = abs(nanoseconds)
    if nanoseconds == 0:
        return "0s"
    if nanoseconds < _MICROSECOND:
        return f"{sign}{nanoseconds}ns"
    if nanoseconds < _MILLISECOND:
        return f"{sign}{_with_fraction(nanoseconds, 3)}\u00b5s"
    if nanoseconds < _SECOND:
        return f"{sign}{_with_fraction(nanoseconds, 6)}ms"
    whole_seconds, fraction = divmod(nanoseconds, _SECOND)
    text = _with_fraction(whole_seconds % 60 * _SECOND + fraction, 9) + "s"
    minutes = whole_seconds // 60
    if minutes:
        text = f"{minutes % 60}m{text}"
        hours = minutes // 60
        if hours:
            text = f"{hours}h{text}"
    return sign + text


def _with_fraction(value: int, digits: int) -> str:
    """`value / 10**digits` with trailing zeros (and a bare point) left out, as Go's fmtFrac."""
    whole, fraction = divmod(value, 10**digits)
    if fraction == 0:
        return str(whole)
    return f"{whole}.{fraction:0{digits}d}".rstrip("0")
