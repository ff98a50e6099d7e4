"""Durations written with a fixed number of decimals, remembered once written.

Every request's duration goes into its log line (4 decimals) and, in http mode, its
X-Duration-Seconds field (6 decimals, like Go's `%f`). Formatting a float is slow in Python,
and this runs for every request. A server's requests
take the same few thousand values of whole units over and over, so the text of each is kept,
keyed by the duration in units of the last decimal, rounded half up:

    units = int(seconds * texts.scale + 0.5)  # on hot paths; else texts.units(seconds)
    text = texts.get(units) or texts.write(units)

A lookup is a plain dict lookup (this is a dict); only `write` formats, and it stops keeping
texts at `limit` entries.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T", str, bytes)


class FixedPoint(dict[int, T], Generic[T]):
    """Texts of durations with `places` decimals, made by `render` from the number's text."""

    __slots__ = ("limit", "places", "render", "scale")

    def __init__(self, places: int, render: Callable[[str], T], limit: int = 4096) -> None:
        super().__init__()
        self.places = places
        self.scale = 10**places
        self.render: Callable[[str], T] = render
        self.limit = limit

    def units(self, seconds: float) -> int:
        """`seconds` in units of the last decimal, rounded half up: the key of its text."""
        return int(seconds * self.scale + 0.5)

    def write(self, units: int) -> T:
        """The text of `units` (see `units`), kept for next time while there is room."""
        whole, fraction = divmod(units, self.scale)
        text: T = self.render(f"{whole}.{fraction:0{self.places}d}")
        if len(self) < self.limit:
            self[units] = text
        return text
