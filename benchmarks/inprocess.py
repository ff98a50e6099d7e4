"""`python -m benchmarks.inprocess`: the Python cost of one request on the fast lanes.

wrk against a real watchdog measures Python and the kernel together, and on a shared 2-core
machine it moves by 10-20% from run to run. This runs the real HttpConnection, Router and
mode objects in one process, with transports that only count bytes, and prints microseconds
of Python per request (the best of several repeats, which is steady to a few percent) beside
the floor: httptools parsing the same request and a canned answer being written. Use it before
and after a change to the request path; the socket costs it leaves out stay the same.

Lanes: a cached 1 KiB file in static mode (GET), and http mode (a 100-byte POST written to a
pooled upstream connection, then nginx's answer parsed and relayed back).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httptools
import uvloop

from fwatchdog.http.connection import HttpConnection, Limits, ServerState
from fwatchdog.router import Health, Router
from fwatchdog.settings.config import Config
from fwatchdog.telemetry.logs import Log
from fwatchdog.telemetry.metrics import Metrics

if TYPE_CHECKING:
    from fwatchdog.upstream.client import UpstreamConnection

GET = b"GET /one.bin HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"  # as wrk sends it
POST = (
    b"POST / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nContent-Length: 100\r\n"
    b"Content-Type: application/octet-stream\r\n\r\n" + b"x" * 100
)
NGINX_ANSWER = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sat, 28 Nov 2026 03:00:00 GMT\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 17\r\nConnection: keep-alive\r\n\r\n"
    b"hello from nginx\n"
)
CANNED = b"HTTP/1.1 200 OK\r\nContent-Length: 17\r\n\r\nhello from nginx\n"


class CountingTransport(asyncio.Transport):
    """Takes writes and counts their bytes; closing it means the lane broke."""

    def __init__(self) -> None:
        super().__init__()
        self.written = 0

    def write(self, data: Any) -> None:
        self.written += len(data)

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.written += len(data)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        return None

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None:
        return None

    def resume_reading(self) -> None:
        return None

    def close(self) -> None:
        raise RuntimeError("the connection was closed: the lane under test broke")

    def abort(self) -> None:
        self.close()


class _Floor:
    """httptools and a canned answer: what any Python server on this parser pays."""

    def __init__(self, transport: CountingTransport) -> None:
        self._transport = transport
        self._parser = httptools.HttpRequestParser(self)

    def feed(self, data: bytes) -> None:
        self._parser.feed_data(data)

    def on_url(self, url: bytes) -> None:
        return None

    def on_header(self, name: bytes, value: bytes) -> None:
        return None

    def on_message_complete(self) -> None:
        self._transport.write(CANNED)


def _connection(config: Config, mode: Any, log: Log) -> tuple[HttpConnection, CountingTransport]:
    health = Health(config.lock_path, suppress_lock=True, started=True)
    router = Router(config, mode, health, log, Metrics())
    conn = HttpConnection(router, Limits(), ServerState(), log.error)
    transport = CountingTransport()
    conn.connection_made(transport)
    return conn, transport


async def _static_lane(log: Log, root: Path, request: bytes = GET) -> Callable[[], None]:
    """A cached 1 KiB file, asked for by `request` again and again."""
    from fwatchdog.modes.static.mode import StaticMode

    (root / "one.bin").write_bytes(bytes(range(256)) * 4)
    config = Config(mode="static", static_path=str(root), suppress_lock=True)
    mode = StaticMode(config, log)
    await mode.start()
    conn, _ = _connection(config, mode, log)
    conn.data_received(GET)  # the first one reads the file and fills the cache
    await asyncio.sleep(0.05)
    return lambda: conn.data_received(request)


def pooled_http(log: Log) -> tuple[HttpConnection, UpstreamConnection]:
    """http mode's client connection and the one pooled upstream connection it sends to
    (no child: the test answers as the upstream)."""
    from fwatchdog.modes.proxy.mode import HttpMode
    from fwatchdog.upstream.client import UpstreamConnection

    config = Config(
        mode="http",
        function_process="unused",
        upstream_url="http://127.0.0.1:9",
        suppress_lock=True,
    )
    mode = HttpMode(config, log)
    mode._ready.set_result(None)
    upstream = UpstreamConnection(mode._pool)
    upstream.connection_made(CountingTransport())
    mode._pool.release(upstream)
    conn, _ = _connection(config, mode, log)
    return conn, upstream


async def _http_lane(log: Log) -> Callable[[], None]:
    conn, upstream = pooled_http(log)

    def one() -> None:
        conn.data_received(POST)
        upstream.data_received(NGINX_ANSWER)

    return one


def _floor_lane(data: bytes) -> Callable[[], None]:
    floor = _Floor(CountingTransport())
    return lambda: floor.feed(data)


def _timed(one: Callable[[], None], requests: int) -> float:
    started = time.perf_counter()
    for _ in range(requests):
        one()
    return (time.perf_counter() - started) / requests * 1e6


def _best_pair(
    lane: Callable[[], None], floor: Callable[[], None], requests: int, repeats: int
) -> tuple[float, float]:
    """Best microseconds per request of the lane and of the floor, timed alternately so that
    a busy moment of the machine hurts both."""
    for one in (lane, floor):
        for _ in range(requests // 10):
            one()  # warm up
    gc.collect()
    best_lane = best_floor = float("inf")
    for _ in range(repeats):
        best_lane = min(best_lane, _timed(lane, requests))
        best_floor = min(best_floor, _timed(floor, requests))
    return best_lane, best_floor


async def _measure(requests: int, repeats: int) -> list[tuple[str, float, float]]:
    with open("/dev/null", "w") as sink, tempfile.TemporaryDirectory() as tmp:
        log = Log(stream=sink)
        log.attach(asyncio.get_running_loop())
        rows = []
        # Each lane is made just before it is measured: the loop does not turn while a lane
        # runs, and an idle pooled connection made earlier would be swept meanwhile.
        for name, make_lane, floor_request in (
            ("static 1 KiB, cached (GET)", lambda: _static_lane(log, Path(tmp)), GET),
            ("http mode, pooled (100 B POST)", lambda: _http_lane(log), POST),
        ):
            lane = await make_lane()
            ours, floor = _best_pair(lane, _floor_lane(floor_request), requests, repeats)
            rows.append((name, ours, floor))
            await asyncio.sleep(0)  # let the log flush
        return rows


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.inprocess", description=__doc__)
    parser.add_argument("--requests", type=int, default=10_000, help="per repeat (10000)")
    parser.add_argument("--repeats", type=int, default=9, help="best of this many (9)")
    args = parser.parse_args()
    rows = uvloop.run(_measure(args.requests, args.repeats))
    print(f"{'lane':32s} {'us/request':>10s} {'floor':>7s} {'ratio':>7s}")
    for name, ours, floor in rows:
        print(f"{name:32s} {ours:10.2f} {floor:7.2f} {ours / floor:6.1f}x")
    print("floor: httptools parsing the same request and writing a canned answer")


if __name__ == "__main__":
    main()
