"""`python -m benchmarks.instructions`: instructions per request, counted by callgrind.

On a shared, noisy machine wall-clock figures move by 10-20% from run to run; the number of
instructions a request costs does not. This runs the real HttpConnection, Router and modes in
one process (as `benchmarks.inprocess` does, with transports that only count bytes) under
`valgrind --tool=callgrind`, once with no measured requests and once with `--requests`, and
prints the difference per request: the Python (and C) cost of the request path, without the
kernel's. Use it before and after a change to that path; it needs valgrind.

Lanes:
- `http-gateway`: a 100-byte POST to a pooled upstream connection, every request with a fresh
  X-Call-Id and X-Start-Time as the OpenFaaS gateway sends them, nginx's answer relayed back;
- `http-gateway-traced`: the same with tracing on at 100% (the serving thread only: the
  export thread is kept idle), and `span-encoding`: encoding one span of a 512-span batch;
- `http-gateway-traced-caller`: traced, each call carrying the caller's `traceparent` (a
  traced gateway's), which the watchdog replaces with its own;
- `http-node-answer`: `http-gateway` answered as Node's http server answers (Express:
  `Connection: keep-alive` and `Keep-Alive: timeout=5`);
- `http-browser-request`: a browser-shaped POST (its fields, `Connection: keep-alive`) instead
  of the gateway's;
- `static-1k`: a cached 1 KiB file; `static-1k-revalidated`: the same asked for by a browser
  revalidating its copy (If-Modified-Since), answered 304.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path

WARM_UP = 500
LANES = (
    "http-gateway",
    "http-gateway-traced",
    "http-gateway-traced-caller",
    "http-node-answer",
    "http-browser-request",
    "span-encoding",
    "static-1k",
    "static-1k-revalidated",
)
REVALIDATION = (
    b"GET /one.bin HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: Mozilla/5.0 (X11; Linux)\r\n"
    b"Accept: */*\r\nAccept-Language: en-GB,en;q=0.9\r\nAccept-Encoding: gzip, deflate, br\r\n"
    b"If-Modified-Since: Sat, 01 Jan 2050 00:00:00 GMT\r\n\r\n"
)
NODE_ANSWER = (
    b"HTTP/1.1 200 OK\r\nX-Powered-By: Express\r\nContent-Type: text/html; charset=utf-8\r\n"
    b'Content-Length: 17\r\nETag: W/"11-abc"\r\nDate: Sat, 28 Nov 2026 03:00:00 GMT\r\n'
    b"Connection: keep-alive\r\nKeep-Alive: timeout=5\r\n\r\nhello from node!\n"
)
# Tracing on, every request sampled, nothing exported while the requests are counted.
TRACED = {
    "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9",
    "OTEL_TRACES_SAMPLER": "always_on",
    "OTEL_BSP_MAX_QUEUE_SIZE": "1000000",
    "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "1000000",
    "OTEL_BSP_SCHEDULE_DELAY": "600000",
}
SUMMARY = re.compile(rb"^summary:\s*(\d+)", re.MULTILINE)


def gateway_request(number: int, traced_caller: bool = False) -> bytes:
    """A call as the OpenFaaS gateway forwards it: fresh X-Call-Id and X-Start-Time (and,
    `traced_caller`, the gateway's own span as the traceparent)."""
    traceparent = b""
    if traced_caller:
        traceparent = b"traceparent: 00-%032x-%016x-01\r\n" % (uuid.uuid4().int, number + 1)
    return (
        b"POST / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: Go-http-client/1.1\r\n"
        b"Content-Length: 100\r\nContent-Type: application/octet-stream\r\n"
        b"X-Call-Id: %s\r\nX-Forwarded-For: 10.62.0.7\r\n%s"
        b"X-Forwarded-Host: gateway.openfaas:8080\r\nX-Start-Time: %d\r\n"
        b"Accept-Encoding: gzip\r\n\r\n"
        % (str(uuid.uuid4()).encode(), traceparent, 1_765_000_000_000_000_000 + number)
    ) + b"x" * 100


def browser_request(number: int) -> bytes:
    """A POST as a browser sends it, straight to the function (an ingress, no gateway)."""
    return (
        b"POST / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: Mozilla/5.0\r\n"
        b"Content-Length: 100\r\nContent-Type: application/octet-stream\r\n"
        b"Connection: keep-alive\r\nX-Request-Id: %s\r\nAccept: */*\r\n"
        b"Accept-Language: en-GB,en;q=0.9\r\nAccept-Encoding: gzip, deflate, br\r\n\r\n"
        % str(uuid.uuid4()).encode()
    ) + b"x" * 100


async def _http_gateway(requests: int, made: int, lane: str) -> None:
    from benchmarks import inprocess
    from fwatchdog.telemetry.logs import Log

    answer = NODE_ANSWER if lane == "http-node-answer" else inprocess.NGINX_ANSWER
    # As many calls made in both runs, so that making them is not counted.
    if lane == "http-browser-request":
        calls = [browser_request(number) for number in range(WARM_UP + made)]
    else:
        traced_caller = lane == "http-gateway-traced-caller"
        calls = [gateway_request(number, traced_caller) for number in range(WARM_UP + made)]
    with open(os.devnull, "w") as sink:
        log = Log(stream=sink)
        log.attach(asyncio.get_running_loop())
        connection, upstream = inprocess.pooled_http(log)
        for call in calls[: WARM_UP + requests]:
            connection.data_received(call)
            upstream.data_received(answer)
        await asyncio.sleep(0.01)  # the batched writes and the log lines


async def _span_encoding(requests: int, made: int) -> None:
    from fwatchdog.telemetry.otlp import SpanEncoder, SpanRecord

    encoder = SpanEncoder(
        {"service.name": "fn", "faas.name": "fn", "fwatchdog.mode": "http", "process.pid": 7},
        "fwatchdog",
        {"faas.trigger": "http", "server.port": 8080, "url.scheme": "http"},
    )
    records = []
    for number in range(512):
        record = SpanRecord(
            number + 1, number + 1, 0, None, True, "POST", "/", str(uuid.uuid4()), False, 1
        )
        record.end_ns, record.status = 2, 200
        records.append(record)
    for _ in range(requests // 512):
        encoder.encode(records)


async def _static_1k(requests: int, made: int, request: bytes | None = None) -> None:
    from benchmarks import inprocess
    from fwatchdog.telemetry.logs import Log

    with open(os.devnull, "w") as sink, tempfile.TemporaryDirectory() as root:
        log = Log(stream=sink)
        log.attach(asyncio.get_running_loop())
        one: Callable[[], None] = await inprocess._static_lane(
            log, Path(root), request or inprocess.GET
        )
        for _ in range(WARM_UP + requests):
            one()
        await asyncio.sleep(0.01)


def _child(lane: str, requests: int, made: int) -> None:
    import uvloop

    if lane.startswith("http-"):
        uvloop.run(_http_gateway(requests, made, lane))
        return
    if lane == "static-1k-revalidated":
        uvloop.run(_static_1k(requests, made, REVALIDATION))
        return
    run = {"static-1k": _static_1k, "span-encoding": _span_encoding}[lane]
    uvloop.run(run(requests, made))


def _count(lane: str, requests: int, made: int) -> int:
    """Instructions of one child run of `lane` with `requests` counted requests (of `made`)."""
    environ = {**os.environ, "PYTHONHASHSEED": "0", "PYTHONMALLOC": "malloc"}
    if lane.startswith("http-gateway-traced"):
        environ.update(TRACED)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={out}",
                sys.executable,
                "-m",
                "benchmarks.instructions",
                "--child",
                lane,
                str(requests),
                str(made),
            ],
            check=True,
            env=environ,
            capture_output=True,
        )
        found = SUMMARY.search(out.read_bytes())
    if found is None:
        raise RuntimeError(f"{lane}: callgrind wrote no summary")
    return int(found.group(1))


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.instructions", description=__doc__)
    parser.add_argument("--requests", type=int, default=2048, help="counted requests (2048)")
    parser.add_argument("lanes", nargs="*", default=list(LANES), help=f"of {', '.join(LANES)}")
    parser.add_argument("--child", nargs=3, metavar=("LANE", "N", "MADE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child[0], int(args.child[1]), int(args.child[2]))
        return 0
    if shutil.which("valgrind") is None:
        print("valgrind is needed (apt-get install valgrind)", file=sys.stderr)
        return 2
    print(f"{'lane':24s} {'instructions/request':>21s}")
    for lane in args.lanes:
        counted = _count(lane, args.requests, args.requests) - _count(lane, 0, args.requests)
        per_request = counted // args.requests
        print(f"{lane:24s} {per_request:>21,}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
