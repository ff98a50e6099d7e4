"""The state of one client connection, every legal transition in one table.

Two sides, as in h11: what the client is sending (`reading`) and whether a request is being
answered (`answering`). "Is this connection idle between requests?" has one answer,
`idle`, and nothing else decides it. An illegal transition is a bug in the watchdog and
raises, so that tests find it rather than a client.
"""

from __future__ import annotations

# reading: what the client's bytes are at this moment
BETWEEN = "between"  # no request begun since the last one ended
HEAD = "head"  # a request head is arriving
BODY = "body"  # the head is complete, its body is arriving (or being dropped)
UPGRADE = "upgrade"  # an upgrade request: what follows is not HTTP, held for the new protocol
LINGER = "linger"  # answered and half-closed: the rest of the client's bytes are dropped
SWITCHED = "switched"  # handed over to another protocol for good
CLOSED = "closed"

# answering: whether the connection is busy with a request
IDLE = "idle"
BUSY = "busy"

_READING: dict[tuple[str, str], str] = {
    (BETWEEN, "begin"): HEAD,
    (HEAD, "headers"): BODY,
    (BODY, "complete"): BETWEEN,
    (BODY, "upgrade"): UPGRADE,
    (UPGRADE, "switch"): SWITCHED,
    (BETWEEN, "linger"): LINGER,
    (HEAD, "linger"): LINGER,
    (BODY, "linger"): LINGER,
    (UPGRADE, "linger"): LINGER,
}
_ANSWERING: dict[tuple[str, str], str] = {
    (IDLE, "start"): BUSY,
    (BUSY, "done"): IDLE,
}


class StateError(RuntimeError):
    """A transition the table does not allow: a bug in the watchdog."""


class ConnectionState:
    """Where one connection stands; changed only through the methods below."""

    __slots__ = ("answering", "reading")

    def __init__(self) -> None:
        self.reading = BETWEEN
        self.answering = IDLE

    def _read(self, event: str) -> None:
        if self.reading == CLOSED:
            return  # events after the end change nothing
        try:
            self.reading = _READING[(self.reading, event)]
        except KeyError:
            raise StateError(f"reading: {event} while {self.reading}") from None

    def _answer(self, event: str) -> None:
        try:
            self.answering = _ANSWERING[(self.answering, event)]
        except KeyError:
            raise StateError(f"answering: {event} while {self.answering}") from None

    # the client's side
    def begin_request(self) -> None:
        self._read("begin")

    def head_complete(self) -> None:
        self._read("headers")

    def request_complete(self) -> None:
        self._read("complete")

    def upgrade_requested(self) -> None:
        self._read("upgrade")

    def switch_protocols(self) -> None:
        self._read("switch")

    def linger(self) -> None:
        self._read("linger")

    def close(self) -> None:
        self.reading = CLOSED

    # the server's side
    def start_answer(self) -> None:
        self._answer("start")

    def answer_done(self) -> None:
        if self.answering == BUSY:
            self._answer("done")

    # the questions asked of it
    @property
    def idle(self) -> bool:
        """Between requests: nothing of the next one received, nothing being answered."""
        return self.reading == BETWEEN and self.answering == IDLE

    @property
    def closed(self) -> bool:
        return self.reading == CLOSED

    @property
    def parsing(self) -> bool:
        """Whether the client's bytes go to the HTTP parser."""
        return self.reading in (BETWEEN, HEAD, BODY)
