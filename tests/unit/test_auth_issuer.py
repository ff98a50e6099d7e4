"""The issuer client: discovery and JSON GETs over loopback, framed every way a server may
frame them, and refusing what it cannot use with a line naming the URL."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from issuer import Issuer, issuer_fixture  # noqa: F401  (the `issuer` fixture)

from fwatchdog.auth.issuer import MAX_DOCUMENT, IssuerError, discover, fetch_json


def test_discovery_gives_issuer_and_jwks_uri(issuer: Issuer) -> None:
    found = asyncio.run(discover(issuer.url))
    assert (found.issuer, found.jwks_uri) == (issuer.issuer, issuer.url + "/.well-known/jwks.json")
    assert asyncio.run(fetch_json(found.jwks_uri))["keys"][0]["kid"] == "rsa-1"


def with_server(answer: bytes, check: Callable[[str], Coroutine[Any, Any, None]]) -> None:
    """Run `check(url)` against a server that answers every request with `answer`, then closes."""

    async def main() -> None:
        async def reply(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(answer)
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(reply, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            await check(f"http://127.0.0.1:{port}/doc")

    asyncio.run(main())


DOCUMENT = json.dumps({"keys": []}).encode()


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%b" % (len(DOCUMENT), DOCUMENT),
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n%b\r\n%x\r\n%b\r\n0\r\n\r\n"
        % (DOCUMENT[:5], len(DOCUMENT) - 5, DOCUMENT[5:]),
        b"HTTP/1.0 200 OK\r\n\r\n%b" % DOCUMENT,  # ends when the connection closes
    ],
)
def test_a_document_is_read_however_it_is_framed(answer: bytes) -> None:
    async def check(url: str) -> None:
        assert await fetch_json(url) == {"keys": []}

    with_server(answer, check)


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        (b"HTTP/1.1 404 Not Found\r\nContent-Length: 4\r\n\r\nnope", "status 404: 'nope'"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nnot j", "not JSON"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n{}", "closed before the whole answer"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (MAX_DOCUMENT + 10), "larger"),
        (b"SSH-2.0-OpenSSH\r\n\r\n", ""),
    ],
)
def test_an_unusable_answer_is_an_issuer_error_naming_the_url(answer: bytes, problem: str) -> None:
    if problem == "larger":
        answer += b" " * (MAX_DOCUMENT + 10)

    async def check(url: str) -> None:
        with pytest.raises(IssuerError) as caught:
            await fetch_json(url)
        assert str(caught.value).startswith(url + ": ")
        assert problem in str(caught.value)

    with_server(answer, check)


def test_a_silent_server_times_out() -> None:
    async def main() -> None:
        async def never(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await asyncio.sleep(10)

        server = await asyncio.start_server(never, "127.0.0.1", 0)
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/doc"
        async with server:
            with pytest.raises(IssuerError, match=r"no answer within 0\.2s"):
                await fetch_json(url, timeout=0.2)

    asyncio.run(main())


def test_nothing_listening_is_an_issuer_error(issuer: Issuer) -> None:
    issuer.stop()
    with pytest.raises(IssuerError, match=re.escape(issuer.url)):
        asyncio.run(discover(issuer.url))


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_is_followed_as_go_s_client_follows_it(issuer: Issuer, status: int) -> None:
    # A relative Location resolves against the URL asked for, as in Go.
    moved = b"HTTP/1.1 %d Moved\r\nLocation: %s\r\nContent-Length: 0\r\n\r\n" % (
        status,
        f"{issuer.url}/.well-known/openid-configuration".encode(),
    )

    async def check(url: str) -> None:
        assert (await fetch_json(url))["jwks_uri"] == issuer.url + "/.well-known/jwks.json"

    with_server(moved, check)


def test_a_relative_redirect_and_a_redirect_loop() -> None:
    async def check(url: str) -> None:
        with pytest.raises(IssuerError, match=r"/doc: stopped after 10 redirects"):
            await fetch_json(url)

    # Every answer sends the client back to /doc on the same server: a loop.
    with_server(b"HTTP/1.1 302 Found\r\nLocation: /doc\r\nContent-Length: 0\r\n\r\n", check)
