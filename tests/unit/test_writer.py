"""Writer: writes held to the end of the loop's turn, in order, and never behind a later
write of the same connection (real sockets, uvloop, HttpConnection)."""

import asyncio
import contextlib
import socket

import uvloop

from fwatchdog.http.connection import HttpConnection, Limits, ServerState
from fwatchdog.http.request import Request
from fwatchdog.http.response import Response


class _UnusedHandler:
    passes_raw_requests = False

    def serve(self, request: Request, response: Response) -> None:
        raise AssertionError("no request is sent in these tests")


async def _connection() -> tuple[HttpConnection, socket.socket]:
    ours, theirs = socket.socketpair()
    theirs.setblocking(False)
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_connection(
        lambda: HttpConnection(_UnusedHandler(), Limits(), ServerState(), print), sock=ours
    )
    assert isinstance(protocol, HttpConnection)
    return protocol, theirs


def _received(sock: socket.socket) -> bytes:
    try:
        return sock.recv(65536)
    except BlockingIOError:
        return b""


def test_held_writes_go_out_at_the_end_of_the_turn_in_order() -> None:
    async def scenario() -> None:
        first, first_peer = await _connection()
        second, second_peer = await _connection()
        first.write_soon(b"a1 ")
        second.write_soon(b"b1 ")
        first.write_soon(b"a2")
        assert _received(first_peer) == b"" and _received(second_peer) == b""
        await asyncio.sleep(0.01)
        assert _received(first_peer) == b"a1 a2"
        assert _received(second_peer) == b"b1 "

    uvloop.run(scenario())


def test_a_later_write_or_close_goes_after_what_is_held() -> None:
    async def scenario() -> None:
        conn, peer = await _connection()
        conn.write_soon(b"held ")
        conn.write(b"now ")
        conn.writelines([b"and ", b"then"])
        await asyncio.sleep(0.01)
        assert _received(peer) == b"held now and then"
        conn.write_soon(b"last words")
        conn._close()  # the close a finished answer makes (close_if_idle spares a new one)
        await asyncio.sleep(0.01)
        peer.setblocking(True)
        assert peer.recv(65536) == b"last words"
        assert peer.recv(65536) == b""  # then closed

    uvloop.run(scenario())


def test_an_aborted_connection_drops_what_it_held() -> None:
    async def scenario() -> None:
        conn, peer = await _connection()
        conn.write_soon(b"never")
        conn.abort()
        await asyncio.sleep(0.01)
        peer.setblocking(True)
        with contextlib.suppress(ConnectionResetError):  # an abort may reset
            assert peer.recv(65536) == b""

    uvloop.run(scenario())
