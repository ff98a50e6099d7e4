"""The same requests, answered the same whichever way they arrive (issue 15, item 1).

Each request is sent (a) on a fresh connection, (b) one after another on a warm keep-alive
connection, (c) pipelined in one write on a warm connection, in every mode. The status, the
answer's fields and body, and so what the function or upstream saw (each echoes it), must be
the same all three ways: a watchdog with more than one request path must not route or rewrite
by the path a request happens to take. Fields that vary by themselves (Date, durations, call
ids) are left out of the comparison.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import Watchdog, free_port, function, health, wait_until
from raw_http import Response, ResponseReader, connect, request_bytes

Factory = Callable[..., Watchdog]

# Fields that differ from one answer to the next whatever the path; and the framing, which a
# streamed answer may pick by timing (chunked when output comes before the function ends).
VARYING = {"date", "x-duration-seconds", "x-call-id", "x-start-time", "connection", "keep-alive"}
FRAMING = {"content-length", "transfer-encoding"}
# The request that makes a connection warm before the ones compared.
WARM_UP = request_bytes("GET", "/warm-up", [("Host", "fwatchdog")])


def _request(
    number: int,
    method: str,
    target: str,
    extra: list[tuple[str, str]] | None = None,
    body: bytes | None = None,
    chunked: bool = False,
) -> bytes:
    headers = [("Host", "fwatchdog"), ("X-Test", str(number)), *(extra or [])]
    return request_bytes(method, target, headers, body, chunked)


KEEP_ALIVE = [("Connection", "keep-alive"), ("Keep-Alive", "timeout=5, max=100")]
# (name, request bytes, is HEAD)
REQUESTS: list[tuple[str, bytes, bool]] = [
    ("health probe", _request(1, "GET", "/_/health"), False),
    ("ready probe", _request(2, "GET", "/_/ready"), False),
    ("function path with a query", _request(3, "GET", "/fn/path?x=1&y=two"), False),
    ("percent-encoded probe", _request(4, "GET", "/_%2Fhealth"), False),
    ("percent-encoded probe, Keep-Alive", _request(5, "GET", "/_%2Fhealth", KEEP_ALIVE), False),
    ("percent-encoded space", _request(6, "GET", "/a%20b?x=1"), False),
    ("absolute-form", _request(7, "GET", "http://fn.example/x?q=1"), False),
    ("absolute-form probe", _request(8, "GET", "http://fn.example/_/health"), False),
    ("absolute-form, Keep-Alive", _request(9, "GET", "http://fn.example/x", KEEP_ALIVE), False),
    ("POST, Content-Length", _request(10, "POST", "/fn/post", body=b"a body\n"), False),
    (
        "POST, chunked",
        _request(11, "POST", "/fn/chunked", body=b"chunked body", chunked=True),
        False,
    ),
    ("POST, Keep-Alive", _request(12, "POST", "/fn/ka", KEEP_ALIVE, body=b"kept"), False),
    (
        "POST, Expect: 100-continue",
        _request(13, "POST", "/fn/expect", [("Expect", "100-continue")], body=b"expected"),
        False,
    ),
    ("HEAD", _request(14, "HEAD", "/fn/path"), True),
    ("GET with a body", _request(15, "GET", "/x", body=b"get body"), False),
    ("empty POST", _request(16, "POST", "/fn/empty", body=b""), False),
]

Seen = tuple[int, list[tuple[str, str]], object]


def _normalized(response: Response) -> Seen:
    """Status, the answer's fields less those that vary, and its body (JSON parsed, less the
    fields that vary, when an upstream or afterburn function echoed it)."""
    fields = sorted(
        (name.lower(), value)
        for name, value in response.fields
        if name.lower() not in VARYING | FRAMING
    )
    body: object = response.body.decode("latin-1")
    if response.headers.get("content-type", "").startswith("application/json"):
        with contextlib.suppress(ValueError):  # a watchdog's own answer may not be JSON
            body = json.loads(response.body)
    if isinstance(body, dict) and isinstance(body.get("fields"), list):
        body["fields"] = [f for f in body["fields"] if f[0].lower() not in VARYING]
    return response.status, fields, body


def _fresh(watchdog: Watchdog) -> dict[str, Seen]:
    """(a) Each request on a connection of its own."""
    seen = {}
    for name, data, head in REQUESTS:
        with connect(watchdog.port) as sock:
            sock.sendall(data)
            seen[name] = _normalized(ResponseReader(sock).read_response(head))
    return seen


def _warm_connection(watchdog: Watchdog) -> ResponseReader:
    """A connection that has carried one request and its answer."""
    sock = connect(watchdog.port)
    sock.sendall(WARM_UP)
    reader = ResponseReader(sock)
    reader.read_response()
    return reader


def _warm(watchdog: Watchdog) -> dict[str, Seen]:
    """(b) One after another on a warm keep-alive connection (a new one, warmed again, after
    an answer that closes)."""
    seen = {}
    reader = _warm_connection(watchdog)
    try:
        for name, data, head in REQUESTS:
            reader.sock.sendall(data)
            response = reader.read_response(head)
            seen[name] = _normalized(response)
            if response.headers.get("connection", "").lower() == "close":
                reader.sock.close()
                reader = _warm_connection(watchdog)
    finally:
        reader.sock.close()
    return seen


def _pipelined(watchdog: Watchdog) -> dict[str, Seen]:
    """(c) All in one write on a warm connection; those after an answer that closes are sent
    again, pipelined, on a new warm connection."""
    seen: dict[str, Seen] = {}
    remaining = list(REQUESTS)
    while remaining:
        reader = _warm_connection(watchdog)
        with reader.sock:
            reader.sock.sendall(b"".join(data for _, data, _ in remaining))
            while remaining:
                name, _, head = remaining.pop(0)
                response = reader.read_response(head, more=bool(remaining))
                seen[name] = _normalized(response)
                if response.headers.get("connection", "").lower() == "close":
                    break
    return seen


def _static_site(root: Path) -> Path:
    for path, text in {
        "index.html": "<p>index</p>",
        "x": "the file x\n",
        "a b": "a file with a space\n",
        "fn/path": "the file fn/path\n",
        "warm-up": "warm\n",
    }.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
    return root


def _start(mode: str, factory: Factory, tmp_path: Path) -> Watchdog:
    report = function("request_report.sh")
    if mode == "streaming":
        return factory(fprocess=report)
    if mode == "serializing":
        return factory(mode="serializing", fprocess=report)
    if mode == "afterburn":
        afterburn = f"{sys.executable} {function('request_report_afterburn.py')}"
        return factory(mode="afterburn", fprocess=afterburn)
    if mode == "http":
        port = free_port()
        return factory(
            mode="http",
            fprocess=f"{sys.executable} {function('echo_upstream.py')}",
            upstream_url=f"http://127.0.0.1:{port}",
            UPSTREAM_PORT=str(port),
        )
    return factory(mode="static", static_path=str(_static_site(tmp_path / "site")))


@pytest.mark.parametrize("mode", ["streaming", "serializing", "afterburn", "http", "static"])
def test_the_same_requests_get_the_same_answers_fresh_warm_and_pipelined(
    watchdog_factory: Factory, tmp_path: Path, mode: str
) -> None:
    watchdog = _start(mode, watchdog_factory, tmp_path)
    assert wait_until(lambda: health(watchdog) == 200, timeout=10)
    fresh, warm, pipelined = _fresh(watchdog), _warm(watchdog), _pipelined(watchdog)
    differ = [
        f"{name}:\n  fresh     {fresh[name]}\n  warm      {warm[name]}\n"
        f"  pipelined {pipelined[name]}"
        for name, _, _ in REQUESTS
        if not fresh[name] == warm[name] == pipelined[name]
    ]
    assert not differ, f"{mode}: answered differently by the way they came:\n" + "\n".join(differ)
