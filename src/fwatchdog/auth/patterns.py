"""The `*` patterns of a function token's `permissions` and `audience` lists.

`*` matches any run of characters (none included) and everything else matches itself, over the
whole of the function's ref `<namespace>:<name>`: `ns1:*` matches `ns1:fn` but not `ns10:fn`.
(faas-middleware once left its patterns unanchored, so `ns1` matched `ns10:fn`; it anchors them
now, as we do.)
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache


@lru_cache(maxsize=256)
def _compiled(pattern: str) -> re.Pattern[str]:
    # Tokens repeat the same few patterns; compiling is the costly part.
    return re.compile(".*".join(re.escape(literal) for literal in pattern.split("*")), re.DOTALL)


def matches(pattern: str, ref: str) -> bool:
    """Whether `pattern` covers the whole of `ref`."""
    if "*" not in pattern:
        return pattern == ref
    return _compiled(pattern).fullmatch(ref) is not None


def matches_any(patterns: Iterable[str], ref: str) -> bool:
    """Whether one of `patterns` covers `ref` (none: False)."""
    return any(matches(pattern, ref) for pattern in patterns)


def may_invoke(permissions: list[str], audience: list[str], ref: str) -> bool:
    """The function claim's rule: `ref` must be in `permissions` and, when `audience` lists
    anything, in `audience` too (an empty audience means any function)."""
    return matches_any(permissions, ref) and (not audience or matches_any(audience, ref))
