"""The Date header value, formatted once per second rather than once per response."""

import time
from email.utils import formatdate

_cached_second = 0
_cached_value = ""


def http_date() -> str:
    """IMF-fixdate for now, e.g. `Fri, 27 Nov 2026 22:11:18 GMT`."""
    global _cached_second, _cached_value
    now = int(time.time())
    if now != _cached_second:
        _cached_second = now
        _cached_value = formatdate(now, usegmt=True)
    return _cached_value
