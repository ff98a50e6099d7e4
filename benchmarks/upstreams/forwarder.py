"""The least a Python proxy can do: bytes forwarded, nothing parsed (a benchmark ceiling).

Listens on 127.0.0.1:$PROXY_PORT and pairs each client connection with one connection of its
own to 127.0.0.1:$UPSTREAM_PORT, then copies bytes both ways, on uvloop as the watchdog runs.
It reads no HTTP: no framing, no routing, no log line, no pooling. Any proxy written in Python
on this event loop spends at least this much per request, so its figure under the same load
bounds what the watchdog's http mode can reach on the same machine.
"""

from __future__ import annotations

import asyncio
import os

import uvloop


class _Upstream(asyncio.Protocol):
    def __init__(self, client: asyncio.Transport) -> None:
        self._client = client

    def data_received(self, data: bytes) -> None:
        self._client.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._client.close()


class _Client(asyncio.Protocol):
    def __init__(self, upstream_port: int) -> None:
        self._upstream_port = upstream_port
        self._upstream: asyncio.Transport | None = None
        self._early: list[bytes] = []  # what arrived before the upstream connection was made

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport: asyncio.Transport = transport  # type: ignore[assignment]  # uvloop's
        asyncio.get_running_loop().create_task(self._connect())

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        upstream, _ = await loop.create_connection(
            lambda: _Upstream(self._transport),
            "127.0.0.1",
            self._upstream_port,
        )
        self._upstream = upstream
        for data in self._early:
            upstream.write(data)
        self._early = []

    def data_received(self, data: bytes) -> None:
        if self._upstream is None:
            self._early.append(data)
        else:
            self._upstream.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._upstream is not None:
            self._upstream.close()


async def _serve(port: int, upstream_port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Client(upstream_port), "127.0.0.1", port)
    await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(_serve(int(os.environ["PROXY_PORT"]), int(os.environ["UPSTREAM_PORT"])))
