"""Fuzz the HTTP request path: any bytes, in any pieces, into a real HttpConnection whose
handler is the real Router over a mode that answers from the request it is given.

Nothing may raise out of the connection (a bug there would be logged as "error serving" and
the connection dropped); every request the router saw must have come out of the parser with
a path that starts with "/" and a state that allows it; the connection's state must stay one
of the table's, and once closed nothing more is written.
"""

import asyncio
import sys

import atheris
from transport import Transport

with atheris.instrument_imports():
    from fwatchdog.http import state as st
    from fwatchdog.http.connection import HttpConnection, Limits, ServerState
    from fwatchdog.http.request import Request
    from fwatchdog.http.response import Response
    from fwatchdog.router import Health, Router
    from fwatchdog.settings.config import Config
    from fwatchdog.telemetry.logs import Log
    from fwatchdog.telemetry.metrics import Metrics

STATES = {st.BETWEEN, st.HEAD, st.BODY, st.UPGRADE, st.LINGER, st.SWITCHED, st.CLOSED}


class EchoMode:
    """Answers with what it was given: at once, or after reading the body in a task."""

    def __init__(self) -> None:
        self.seen: list[Request] = []

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def answer_now(self, request: Request, response: Response) -> bool:
        self.seen.append(request)
        if request.body.complete and request.method != "PUT":
            response.send(200, request.path.encode())
            return True
        return False

    async def handle(self, request: Request, response: Response) -> None:
        body = await request.body.read_all(1 << 20)
        response.send(200, body)


LOOP = asyncio.new_event_loop()
ERRORS: list[str] = []


async def serve(pieces: list[bytes], eof: bool) -> None:
    with open("/dev/null", "w") as sink:
        log = Log(stream=sink)
        config = Config(function_process="cat", suppress_lock=True, max_inflight=3)
        mode = EchoMode()
        health = Health(config.lock_path, suppress_lock=True, started=True)
        router = Router(config, mode, health, log, Metrics())  # type: ignore[arg-type]
        conn = HttpConnection(router, Limits(max_header_bytes=4096), ServerState(), ERRORS.append)
        transport = Transport()
        conn.connection_made(transport)
        for piece in pieces:
            if transport.closing:
                break
            conn.data_received(piece)
            await asyncio.sleep(0)
            assert conn._state.reading in STATES
        if eof and not transport.closing:
            conn.eof_received()
        for _ in range(3):
            await asyncio.sleep(0)
        conn.connection_lost(None)
        await asyncio.sleep(0)
        for request in mode.seen:
            assert request.path.startswith("/") or request.path == "*", request.target
        assert not ERRORS, ERRORS
        assert not transport.written_after_close


def test_one_input(data: bytes) -> None:
    if len(data) < 3:
        return
    provider = atheris.FuzzedDataProvider(data)
    cuts = sorted(
        provider.ConsumeIntInRange(0, 4096) for _ in range(provider.ConsumeIntInRange(0, 3))
    )
    eof = provider.ConsumeBool()
    body = provider.ConsumeBytes(provider.remaining_bytes())
    pieces, last = [], 0
    for cut in cuts:
        pieces.append(body[last:cut])
        last = cut
    pieces.append(body[last:])
    LOOP.run_until_complete(serve([piece for piece in pieces if piece], eof))


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
