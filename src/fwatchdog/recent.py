"""A dict of the most recent few entries, for what the fast lanes remember byte for byte.

The lanes remember request and response bytes they have already parsed and checked, so the
same bytes again skip that work. Lookups must cost a plain dict lookup (this is a dict);
only `remember` knows the bounds: keys longer than `max_key` are not kept, and past `limit`
entries the oldest goes first.
"""

from __future__ import annotations

from typing import TypeVar

V = TypeVar("V")


class Recent(dict[bytes, V]):
    """At most `limit` entries whose keys are at most `max_key` bytes, oldest dropped first."""

    __slots__ = ("limit", "max_key")

    def __init__(self, limit: int, max_key: int) -> None:
        super().__init__()
        self.limit = limit
        self.max_key = max_key

    def remember(self, key: bytes, value: V) -> None:
        if len(key) > self.max_key:
            return
        if key not in self and len(self) >= self.limit:
            del self[next(iter(self))]  # the oldest
        self[key] = value
