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
_BEGIN, _HEADERS, _COMPLETE = _READING["begin"], _READING["headers"], _READING["complete"]
_START, _DONE = _ANSWERING["start"], _ANSWERING["done"]


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
            self.reading = _READING[event][self.reading]
        except KeyError:
            raise StateError(f"reading: {event} while {self.reading}") from None

    # The three events of every request look their table up directly (they run per request).
    def begin_request(self) -> None:
        reading = self.reading
        if reading in _BEGIN:
            self.reading = _BEGIN[reading]
        elif reading != CLOSED:
            raise StateError(f"reading: begin while {reading}")

    def head_complete(self) -> None:
        reading = self.reading
        if reading in _HEADERS:
            self.reading = _HEADERS[reading]
        elif reading != CLOSED:
            raise StateError(f"reading: headers while {reading}")

    def request_complete(self) -> None:
        reading = self.reading
        if reading in _COMPLETE:
            self.reading = _COMPLETE[reading]
        elif reading != CLOSED:
            raise StateError(f"reading: complete while {reading}")

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
