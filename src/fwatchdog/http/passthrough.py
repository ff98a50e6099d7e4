"""Whole HTTP/1.1 messages passed on as the bytes they arrived as, for the proxy's fast lane.

Taking a message apart into headers and writing it again costs every header twice, in Python,
and that was most of what http mode spent on a small request. Most requests and responses a
function server sees are small, arrive whole in one read, and carry nothing a proxy must
change but a hop-by-hop `Connection: keep-alive` (and, from Node's server, `Keep-Alive:
timeout=5`). These helpers recognise such a message (llhttp
parses and validates a response, and its callbacks note the few fields that matter) and make
the few edits on the bytes. Anything unusual is declined (None or False) and goes the long
way, through the parser's callbacks, so the checks here can afford to be strict.
"""

from __future__ import annotations

import httptools

from fwatchdog.http.dates import date_line_ending_head
from fwatchdog.http.headers import HOP_BY_HOP

HEAD_END = b"\r\n\r\n"

# Response fields that send a response the long way: hop-by-hop ones other than Connection
# and Keep-Alive (RFC 9110 7.6.1), chunked framing, and the header the watchdog adds itself.
_UNUSUAL_RESPONSE_FIELDS = frozenset(
    {name.encode() for name in HOP_BY_HOP - {"connection", "keep-alive"}} | {b"x-duration-seconds"}
)
_ONLY_OPTIONS = (b"keep-alive", b"close")
# Distinct responses remembered (all forgotten when full), and the largest.
KNOWN_RESPONSES = 64
KNOWN_RESPONSE_MAX = 4096


class PassedResponse:
    """A simple whole response from the upstream, checked and ready to pass on: the same
    bytes again give the same object back (`ResponsePassthrough.pass_on`)."""

    __slots__ = ("body", "body_length", "fields", "has_date", "status", "upstream_keeps_alive")

    def __init__(
        self, status: int, fields: bytes, has_date: bool, body: bytes, keeps_alive: bool
    ) -> None:
        self.status = status
        self.fields = fields  # the status line and fields, without Connection
        self.has_date = has_date
        self.body = body
        self.body_length = len(body)
        self.upstream_keeps_alive = keeps_alive

    def message(self, added_fields: bytes) -> bytes:
        """The response for the client, with `added_fields` (encoded lines), and a Date if
        it has none."""
        end = b"\r\n" if self.has_date else date_line_ending_head()
        return b"".join((self.fields, added_fields, end, self.body))


class ResponsePassthrough:
    """Checks and edits whole responses (one at a time, from any upstream connection).

    Its own llhttp parser validates each response before it is passed on; it is at a message
    boundary whenever a response was accepted, and replaced after one that was not.
    """

    __slots__ = (
        "_body_size",
        "_complete",
        "_connection_name",
        "_has_date",
        "_has_length",
        "_keep_alive_name",
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
        self._known: dict[bytes, PassedResponse] = {}
        self._messages = 0
        self._body_size = 0
        self._complete = False
        self._keeps_alive = False
        self._unusual = False
        self._has_date = False
        self._has_length = False
        self._connection_name: bytes | None = None
        self._keep_alive_name: bytes | None = None

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
        elif lowered == b"keep-alive":
            self._unusual |= self._keep_alive_name is not None
            self._keep_alive_name = name

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)

    def on_message_complete(self) -> None:
        self._complete = True
        self._keeps_alive = self._parser.should_keep_alive()  # forgotten once it returns

    def pass_on(self, data: bytes) -> PassedResponse | None:
        """`data` ready to pass on without its `Connection` and `Keep-Alive` lines, when it
        is exactly one whole, valid, simple response with a Content-Length body; None
        otherwise."""
        known = self._known.get(data)
        if known is not None:
            return known
        if not data.startswith(b"HTTP/1.1 "):
            return None
        self._messages = self._body_size = 0
        self._complete = self._unusual = self._has_date = self._has_length = False
        self._connection_name = self._keep_alive_name = None
        parser = self._parser
        try:
            parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade):
            self._parser = httptools.HttpResponseParser(self)
            return None
        if not self._complete or self._messages != 1:
            self._parser = httptools.HttpResponseParser(self)  # mid-message: start afresh
            return None
        status = parser.get_status_code()
        if self._unusual or not self._has_length or status < 200 or status in (204, 304):
            return None  # without a length: delimited by the end of the connection
        head_end = data.find(HEAD_END)
        if len(data) - head_end - 4 != self._body_size:
            return None  # bytes after the body (llhttp skips stray line ends): not ours to pass
        fields = data[: head_end + 2]
        for name in (self._connection_name, self._keep_alive_name):
            if name is not None:
                cut = fields.find(b"\r\n" + name + b":")
                fields = fields[:cut] + fields[fields.find(b"\r\n", cut + 2) :]
        passed = PassedResponse(
            status, fields, self._has_date, data[head_end + 4 :], self._keeps_alive
        )
        remembered = self._known
        if len(data) <= KNOWN_RESPONSE_MAX:
            if len(remembered) >= KNOWN_RESPONSES:
                remembered.clear()  # bounded; a server's answers change once a second (Date)
            remembered[data] = passed
        return passed
