"""Verdicts on genuine tokens, kept until the token expires, so that a client reusing its
token pays the signature check (tens of microseconds) once, not on every request.

Keyed by the whole Authorization value, as it came: a hit costs one dict lookup. Bounded:
past `capacity` the oldest entry goes (each holds a token of about a kilobyte).
"""

from __future__ import annotations

from collections.abc import Container

from fwatchdog.auth.outcome import Denial


class RememberedTokens:
    """Authorization value -> (expires_at, kid, denial or None for accepted)."""

    def __init__(self, capacity: int = 1024) -> None:
        self.capacity = capacity
        self._entries: dict[str, tuple[float, str, Denial | None]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, authorization: str) -> tuple[float, str, Denial | None] | None:
        return self._entries.get(authorization)

    def remember(
        self, authorization: str, expires_at: float, kid: str, denial: Denial | None
    ) -> None:
        if authorization not in self._entries and len(self._entries) >= self.capacity:
            del self._entries[next(iter(self._entries))]
        self._entries[authorization] = (expires_at, kid, denial)

    def forget(self, authorization: str) -> None:
        self._entries.pop(authorization, None)

    def keep_keys(self, kids: Container[str]) -> None:
        """Forget the verdicts of tokens signed by keys the set no longer has (or changed)."""
        for authorization in [a for a, (_, kid, _) in self._entries.items() if kid not in kids]:
            del self._entries[authorization]

    def clear(self) -> None:
        self._entries.clear()
