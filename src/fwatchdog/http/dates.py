"""The Date header value, formatted once per second rather than once per response."""

import time

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

_cached_second = 0
_cached_value = ""
_cached_line = b""


def format_http_date(seconds: float) -> str:
    """IMF-fixdate, e.g. `Fri, 27 Nov 2026 22:11:18 GMT` (without email.utils' import cost)."""
    t = time.gmtime(seconds)
    return (
        f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year} "
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT"
    )


def http_date() -> str:
    """IMF-fixdate for now."""
    global _cached_second, _cached_value, _cached_line
    now = int(time.time())
    if now != _cached_second:
        _cached_second = now
        _cached_value = format_http_date(now)
        _cached_line = f"Date: {_cached_value}\r\n\r\n".encode("ascii")
    return _cached_value


def date_line_ending_head() -> bytes:
    """`Date: <now>\r\n\r\n`, encoded: the last line of a response head, and its end."""
    if int(time.time()) != _cached_second:
        http_date()
    return _cached_line
