"""The state of one client connection, every legal transition in one table.

Two sides, as in h11: what the client is sending (`reading`) and whether a request is being
answered (`answering`). "Is this connection idle between requests?" has one answer,
`idle`, and nothing else decides it. An illegal transition is a bug in the watchdog and
raises, so that tests find it rather than a client.
"""

from __future__ import annotations

from collections.abc import Callable

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

# The transition table: for each event, the state it leads to from each state it may happen
# in; an event in any other state is illegal.
_READING: dict[str, dict[str, str]] = {
    "begin": {BETWEEN: HEAD},
    "headers": {HEAD: BODY},
    "complete": {BODY: BETWEEN},
    "upgrade": {BODY: UPGRADE},
    "switch": {UPGRADE: SWITCHED},
    "linger": {BETWEEN: LINGER, HEAD: LINGER, BODY: LINGER, UPGRADE: LINGER},
}
_ANSWERING: dict[str, dict[str, str]] = {
    "start": {IDLE: BUSY},
    "done": {BUSY: IDLE},
}
_START, _DONE = _ANSWERING["start"], _ANSWERING["done"]


class StateError(RuntimeError):
    """A transition the table does not allow: a bug in the watchdog."""


def _reading_event(event: str) -> Callable[[ConnectionState], None]:
    """The method for one event of the client's side, its row of the table bound in."""
    moves = _READING[event]

    def move(state: ConnectionState) -> None:
        reading = state.reading
        if reading in moves:
            state.reading = moves[reading]
        elif reading != CLOSED:  # events after the end change nothing
            raise StateError(f"reading: {event} while {reading}")

    move.__name__ = move.__qualname__ = event
    return move


class ConnectionState:
    """Where one connection stands; changed only through the methods below."""

    __slots__ = ("answering", "reading")

    def __init__(self) -> None:
        self.reading = BETWEEN
        self.answering = IDLE

    # the client's side
    begin_request = _reading_event("begin")
    head_complete = _reading_event("headers")
    request_complete = _reading_event("complete")
    upgrade_requested = _reading_event("upgrade")
    switch_protocols = _reading_event("switch")
    linger = _reading_event("linger")

    def close(self) -> None:
        self.reading = CLOSED

    # the server's side
    def start_answer(self) -> None:
        answering = self.answering
        if answering not in _START:
            raise StateError(f"answering: start while {answering}")
        self.answering = _START[answering]

    def answer_done(self) -> None:
        answering = self.answering
        if answering in _DONE:
            self.answering = _DONE[answering]

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
