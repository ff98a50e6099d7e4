"""What a check answers: accepted, or refused with the status, body and headers Go sends.

Stdlib only, so that the router can name these types without loading the JOSE library.
"""

from __future__ import annotations

from dataclasses import dataclass

REALM = "IAM function invoke"
# faas-middleware marks its own answers, as of-watchdog marks its 502/504s, so that callers
# can tell a refusal by the watchdog from the function's own 401/403.
_MARK = ("X-OpenFaaS-Internal", "faas-middleware")
# What Go's http.Error sends with every error body.
_PLAIN = (("Content-Type", "text/plain; charset=utf-8"), ("X-Content-Type-Options", "nosniff"))


@dataclass(frozen=True, slots=True)
class Denial:
    """A refused request: `status` 401 (no valid token) or 403 (valid, but not for this
    function), a one-line `reason` (the body, and the log line's detail), the `headers`."""

    status: int
    reason: str
    headers: tuple[tuple[str, str], ...]

    @property
    def body(self) -> bytes:
        """The response body, as Go's http.Error writes it: the reason and a newline."""
        return self.reason.encode() + b"\n"


def unauthorized(reason: str) -> Denial:
    """401: the token is missing or cannot be trusted."""
    return Denial(401, reason, (("WWW-Authenticate", f"Bearer realm={REALM}"), _MARK, *_PLAIN))


FORBIDDEN = Denial(403, "insufficient permissions", (_MARK, *_PLAIN))
NO_BEARER = unauthorized("Bearer must be present in Authorization header")


class AuthResult:
    """One check's outcome: `denial` (None: accepted), how long the check took (`seconds`,
    for X-Auth-Seconds), and `unknown_key`: refused because the token names a key the set
    does not have yet, while a refresh of the set is under way (`check_waiting` waits for it).
    """

    __slots__ = ("denial", "seconds", "unknown_key")

    def __init__(self, denial: Denial | None, seconds: float, unknown_key: bool = False) -> None:
        self.denial = denial
        self.seconds = seconds
        self.unknown_key = unknown_key

    @property
    def accepted(self) -> bool:
        return self.denial is None

    @property
    def x_auth_seconds(self) -> str:
        """The X-Auth-Seconds header's value, as Go formats it (`%f`)."""
        return f"{self.seconds:.6f}"

    def __repr__(self) -> str:
        state = "accepted" if self.denial is None else f"{self.denial.status} {self.denial.reason}"
        return f"AuthResult({state}, {self.seconds:.6f}s)"
