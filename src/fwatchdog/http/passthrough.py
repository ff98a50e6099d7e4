"""Whole HTTP/1.1 messages passed on as the bytes they arrived as, for the proxy's fast lane.

Taking a message apart into headers and writing it again costs every header twice, in Python,
and that was most of what http mode spent on a small request. Most requests and responses a
function server sees are small, arrive whole in one read, and carry nothing a proxy must
change but a hop-by-hop `Connection: keep-alive`. These helpers recognise such a message (llhttp
parses and validates a response, and its callbacks note the few fields that matter) and make
the few edits on the bytes. Anything unusual is declined (None or False) and goes the long
way, through the parser's callbacks, so the checks here can afford to be strict.
"""

from __future__ import annotations

from typing import NamedTuple

import httptools

from fwatchdog.http.dates import date_line_ending_head
from fwatchdog.recent import Recent

HEAD_END = b"\r\n\r\n"

# Response fields that send a response the long way: hop-by-hop ones other than Connection
# (RFC 9110 7.6.1), chunked framing, and the header the watchdog adds itself.
_UNUSUAL_RESPONSE_FIELDS = frozenset(
    (b"transfer-encoding", b"keep-alive", b"te", b"trailer", b"upgrade", b"x-duration-seconds")
)
_ONLY_OPTIONS = (b"keep-alive", b"close")
# Distinct responses remembered (the oldest forgotten first), and the largest.
KNOWN_RESPONSES = 64
KNOWN_RESPONSE_MAX = 4096


def is_whole_request(raw: bytes, content_length: int | None) -> bool:
    """Whether `raw`, one read from the client, is exactly one request with a
    Content-Length body (or none): nothing before it, nothing after it."""
    head_end = raw.find(HEAD_END)
    return head_end >= 0 and head_end + 4 + (content_length or 0) == len(raw)


class PassedResponse(NamedTuple):
    """A response ready for the client: `message` is its head and body."""

    status: int
    message: bytes
    body_length: int
    upstream_keeps_alive: bool


class ResponsePassthrough:
    """Checks and edits whole responses (one at a time, from any upstream connection).

    Its own llhttp parser validates each response before it is passed on; it is at a message
    boundary whenever a response was accepted, and replaced after one that was not.
    """

    __slots__ = (
        "_complete",
        "_connection_name",
        "_has_date",
        "_has_length",
        "_keeps_alive",
        "_known",
        "_messages",
        "_parser",
        "_unusual",
    )

    def __init__(self) -> None:
        self._parser = httptools.HttpResponseParser(self)
        # Responses accepted before, byte for byte -> what passing them on needs: a server
        # answers the same bytes all through a second (its Date changes once a second).
        self._known: Recent[tuple[int, bytes, bool, bytes, bool]] = Recent(
            KNOWN_RESPONSES, KNOWN_RESPONSE_MAX
        )
        self._messages = 0
        self._complete = False
        self._keeps_alive = False
        self._unusual = False
        self._has_date = False
        self._has_length = False
        self._connection_name: bytes | None = None

    # llhttp callbacks
    def on_message_begin(self) -> None:
        self._messages += 1

    def on_header(self, name: bytes, value: bytes) -> None:
        lowered = name.lower()
        if lowered in _UNUSUAL_RESPONSE_FIELDS or lowered.startswith(b"proxy-"):
            self._unusual = True
        elif lowered == b"date":
            self._has_date = True
        elif lowered == b"content-length":
            self._unusual |= self._has_length  # two: llhttp may take them, we do not
            self._has_length = True
        elif lowered == b"connection":
            if self._connection_name is not None or value.strip().lower() not in _ONLY_OPTIONS:
                self._unusual = True  # it names fields to drop, or says two things
            self._connection_name = name

    def on_message_complete(self) -> None:
        self._complete = True
        self._keeps_alive = self._parser.should_keep_alive()  # forgotten once it returns

    def pass_on(self, data: bytes, added_fields: bytes) -> PassedResponse | None:
        """`data` with `added_fields` (encoded lines) and a Date when it has none, and
        without its `Connection` line, when it is exactly one whole, valid, simple response
        with a Content-Length body; None otherwise."""
        known = self._known.get(data)
        if known is not None:
            status, fields, has_date, body, keeps_alive = known
            end = b"\r\n" if has_date else date_line_ending_head()
            message = b"".join((fields, added_fields, end, body))
            return PassedResponse(status, message, len(body), keeps_alive)
        if not data.startswith(b"HTTP/1.1 "):
            return None
        self._messages = 0
        self._complete = self._unusual = self._has_date = self._has_length = False
        self._connection_name = None
        parser = self._parser
        try:
            parser.feed_data(data)
        except httptools.HttpParserError:
            self._parser = httptools.HttpResponseParser(self)
            return None
        if not self._complete or self._messages != 1:
            self._parser = httptools.HttpResponseParser(self)  # mid-message: start afresh
            return None
        status = parser.get_status_code()
        if self._unusual or not self._has_length or status < 200 or status in (204, 304):
            return None  # without a length: delimited by the end of the connection
        head_end = data.find(HEAD_END)
        body_length = len(data) - head_end - 4
        fields = data[: head_end + 2]
        connection_name = self._connection_name
        if connection_name is not None:
            cut = fields.find(b"\r\n" + connection_name + b":")
            fields = fields[:cut] + fields[fields.find(b"\r\n", cut + 2) :]
        body = data[head_end + 4 :]
        end = b"\r\n" if self._has_date else date_line_ending_head()
        message = b"".join((fields, added_fields, end, body))
        self._known.remember(data, (status, fields, self._has_date, body, self._keeps_alive))
        return PassedResponse(status, message, body_length, self._keeps_alive)
