"""A dict of the most recent few entries, for what the fast lanes remember byte for byte.

The lanes remember request and response bytes they have already parsed and checked, so the
same bytes again skip that work. Lookups must cost a plain dict lookup (this is a dict);
only `remember` knows the bounds: keys longer than `max_key` are not kept, and past `limit`
entries the oldest goes first.
"""

from __future__ import annotations

from collections import deque
from typing import TypeVar

V = TypeVar("V")


class Recent(dict[bytes, V]):
    """At most `limit` entries whose keys are at most `max_key` bytes, oldest dropped first."""

    __slots__ = ("_order", "limit", "max_key")

    def __init__(self, limit: int, max_key: int) -> None:
        super().__init__()
        self.limit = limit
        self.max_key = max_key
        # Keys oldest first. A dict's own first key is no good for that: after many deletions
        # at its front, finding it means stepping over every deleted slot (requests that
        # differ every time made that about a twentieth of their CPU).
        self._order: deque[bytes] = deque()

    def remember(self, key: bytes, value: V) -> None:
        if len(key) > self.max_key:
            return
        if key not in self:
            if len(self) >= self.limit:
                del self[self._order.popleft()]
            self._order.append(key)
        self[key] = value
