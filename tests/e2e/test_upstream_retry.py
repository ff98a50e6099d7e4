"""http mode sends a request again only when that cannot do harm (issue 15, item 2).

The upstream (tests/functions/echo_upstream.py, BEHAVIOUR=drop-second) reads the second
request on each connection whole and closes without answering, as a function that crashed
after charging a card would. The first request on the watchdog's connection warms its pool,
so the second goes on a pooled connection, the only case in which a retry is considered.
Go's rule (net/http isReplayable): again only for GET, HEAD, OPTIONS, TRACE or a request with
an Idempotency-Key or X-Idempotency-Key; anything else -> 502.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import Watchdog, free_port, function, health, wait_until
from raw_http import ResponseReader, connect, request_bytes

Factory = Callable[..., Watchdog]


def start_dropping_upstream(factory: Factory, tmp_path: Path) -> tuple[Watchdog, Path]:
    """A watchdog in front of an upstream that drops the second request of each connection;
    and the file in which the upstream notes every request it read."""
    port, seen = free_port(), tmp_path / "seen.jsonl"
    watchdog = factory(
        mode="http",
        fprocess=f"{sys.executable} {function('echo_upstream.py')}",
        upstream_url=f"http://127.0.0.1:{port}",
        UPSTREAM_PORT=str(port),
        BEHAVIOUR="drop-second",
        SEEN_LOG=str(seen),
    )
    assert wait_until(lambda: health(watchdog) == 200, timeout=10)
    return watchdog, seen


def seen_by_upstream(seen: Path, target: str) -> list[dict[str, object]]:
    """The requests for `target` the upstream read, in order."""
    lines = seen.read_text().splitlines() if seen.exists() else []
    return [entry for line in lines if (entry := json.loads(line))["target"] == target]


def warm_then(
    watchdog: Watchdog, method: str, target: str, headers: list[tuple[str, str]], body: bytes | None
) -> tuple[int, bytes]:
    """One request to warm the pool, then this one, on one client connection."""
    with connect(watchdog.port) as sock:
        reader = ResponseReader(sock)
        sock.sendall(request_bytes("GET", "/warm", [("Host", "fwatchdog")]))
        assert reader.read_response().status == 200
        sock.sendall(request_bytes(method, target, [("Host", "fwatchdog"), *headers], body))
        response = reader.read_response(head_request=method == "HEAD")
    return response.status, response.body


@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS"])
def test_an_idempotent_request_the_upstream_read_and_dropped_is_sent_again_and_answered(
    watchdog_factory: Factory, tmp_path: Path, method: str
) -> None:
    watchdog, seen = start_dropping_upstream(watchdog_factory, tmp_path)
    status, body = warm_then(watchdog, method, "/again", [], None)
    assert status == 200
    if method != "HEAD":
        assert json.loads(body)["target"] == "/again"
    assert len(seen_by_upstream(seen, "/again")) == 2


@pytest.mark.parametrize("key", ["Idempotency-Key", "X-Idempotency-Key"])
def test_a_post_with_an_idempotency_key_is_sent_again_and_answered(
    watchdog_factory: Factory, tmp_path: Path, key: str
) -> None:
    watchdog, seen = start_dropping_upstream(watchdog_factory, tmp_path)
    status, body = warm_then(watchdog, "POST", "/keyed", [(key, "k-1")], b"once")
    assert status == 200
    assert json.loads(body)["body"] == "once"
    assert [entry["body"] for entry in seen_by_upstream(seen, "/keyed")] == ["once", "once"]


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH"])
def test_a_request_that_is_not_idempotent_the_upstream_read_and_dropped_is_not_sent_again(
    watchdog_factory: Factory, tmp_path: Path, method: str
) -> None:
    watchdog, seen = start_dropping_upstream(watchdog_factory, tmp_path)
    status, _ = warm_then(watchdog, method, "/charge", [], b"card=4242")
    assert status == 502
    assert len(seen_by_upstream(seen, "/charge")) == 1, f"the {method} was sent more than once"
