"""Fuzz what the upstream sends back: the response parser of an upstream connection, fed any
bytes in any pieces, and the passthrough check of whole responses.

Through their public entry points (the HTTP core is being rewritten; expect churn): an
`UpstreamConnection` carrying one request gets the bytes through `data_received` and the end
through `eof_received`; its sink must see a head before any body and exactly one end or error,
and nothing may raise. `ResponsePassthrough.pass_on` must accept only what a fresh parser reads
as exactly one response with the same status and body, without a Connection field.
"""

import asyncio
import sys

import atheris
from transport import Transport

with atheris.instrument_imports():
    import httptools

    from fwatchdog.http.passthrough import ResponsePassthrough
    from fwatchdog.upstream.client import UpstreamConnection, UpstreamPool


class Sink:
    def __init__(self) -> None:
        self.events: list[str] = []
        self.body = 0

    def on_head(self, status: int, headers: object) -> None:
        assert not self.events, self.events
        self.events.append("head")

    def on_body(self, data: bytes) -> None:
        assert self.events == ["head"], self.events
        self.body += len(data)

    def on_end(self) -> None:
        self.events.append("end")

    def on_error(self, error: Exception) -> None:
        self.events.append("error")

    def on_upgrade(self) -> None:
        self.events.append("upgrade")


class Parsed:
    """A fresh parser's reading of a passed-on response."""

    def __init__(self) -> None:
        self.messages = 0
        self.body = b""
        self.connection = False

    def on_message_begin(self) -> None:
        self.messages += 1

    def on_header(self, name: bytes, value: bytes) -> None:
        self.connection |= name.lower() == b"connection"

    def on_body(self, body: bytes) -> None:
        self.body += body


LOOP = asyncio.new_event_loop()
PASSTHROUGH: list[ResponsePassthrough] = []


async def exchange(data: bytes, cut: int, head_request: bool) -> None:
    if not PASSTHROUGH:
        PASSTHROUGH.append(ResponsePassthrough())
    pool = UpstreamPool("127.0.0.1", 9)
    conn = UpstreamConnection(pool)
    conn.connection_made(Transport())
    sink = Sink()
    conn.begin(sink, head_request)  # type: ignore[arg-type]
    for piece in (data[:cut], data[cut:]):
        if piece and not conn.closed:
            conn.data_received(piece)
    if not conn.closed:
        conn.eof_received()
        conn.connection_lost(None)
    terminal = [event for event in sink.events if event != "head"]
    assert len(terminal) == 1, sink.events
    pool.close()

    passed = PASSTHROUGH[0].pass_on(data)
    if passed is not None:
        message = passed.message(b"")
        parsed = Parsed()
        parser = httptools.HttpResponseParser(parsed)
        parser.feed_data(message)
        assert parsed.messages == 1 and not parsed.connection
        assert parser.get_status_code() == passed.status
        assert parsed.body == passed.body


def test_one_input(data: bytes) -> None:
    if len(data) < 2:
        return
    cut = data[0] % len(data)
    LOOP.run_until_complete(exchange(data[2:], cut, head_request=bool(data[1] & 1)))


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
